"""What a district report says, computed once: headline figures and sections (tables with notes) for one place, from
the situational analysis and the queries. Rendering (HTML, Markdown, figures) is ``citylake.reports``' job.

A batch of reports shares what is the same for all of them: ``ReportBatch`` computes each zone category's stays and
flows once, and each place's footfall (per hour, and per cell and day for its map) in one pass over its pings.
Everything about people in a report is k-anonymous.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
import shapely

from citylake.analytics.detect import HOTSPOT_RES, Analysis
from citylake.analytics.scoring import FAULT
from citylake.h3_index import cells_to_latlng, cells_to_strings
from citylake.lake import Lake, registry
from citylake.queries import DEFAULT_K, BadFilter, Filters, QueryResult, conditions, dwell, footfalls, od, stays

NEARBY_M = 300  # sensors this close to a place's outline are its own
UTC_MIN, UTC_MAX = dt.datetime.min.replace(tzinfo=dt.timezone.utc), dt.datetime.max.replace(tzinfo=dt.timezone.utc)


@dataclass
class Report:
    place_id: str
    name: str
    start: dt.datetime | None
    end: dt.datetime | None
    k: int
    headline: dict
    sections: list[tuple[str, pl.DataFrame | None, str]] = field(default_factory=list)  # title, table, note
    hourly: pl.DataFrame | None = None  # the place's k-anonymous footfall per hour (bucket, pings, devices)
    cells: QueryResult | None = None  # k-anonymous footfall per H3 cell (HOTSPOT_RES) and day around the place, for its map
    timezone: str = "UTC"  # the city's: every time a reader sees is in it

    def summary(self) -> dict:
        return {"place_id": self.place_id, "name": self.name, "from": _iso(self.start), "to": _iso(self.end), "k": self.k,
                "timezone": self.timezone, **self.headline}


@dataclass
class Zones:
    """One zone category's stays and the k-anonymous flows between its zones, over the report window."""
    stays: pl.DataFrame
    flows: pl.DataFrame


class ReportBatch:
    """Reports over one analysis and window. Polars by default, as the analysis: a report runs several queries over
    the window's pings and the engines give the same answers (a district of the demo city: 2.5 s against 6.6 s)."""

    def __init__(self, lake: Lake, analysis: Analysis, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None,
                 k: int = DEFAULT_K, engine_name: str = "polars", zones: dict[str, Zones] | None = None) -> None:
        self.lake, self.analysis, self.start, self.end, self.k, self.engine_name = lake, analysis, start, end, k, engine_name
        self._zones: dict[str, Zones] = dict(zones or {})  # a category's, when computed elsewhere (a cluster's task)

    def build(self, place_id: str, /) -> Report:
        """The report for one place (a district, park, business district, expo or pilot boundary)."""
        place = registry.places(self.lake, place_ids=(place_id,))
        if place.is_empty():
            raise no_such_place(place_id)
        shape, name, category = registry.shapes(place)[0], place["name"][0] or place_id, place["category"][0]
        window = Filters(start=self.start, end=self.end, place_ids=(place_id,), tz=self.analysis.timezone)  # busy hours: city clock
        # one pass over the pings around the place: its hourly footfall, and its surroundings per cell and day for the map
        hourly, cells = footfalls(self.lake, views=[("place", None, "1h"), ("cell", HOTSPOT_RES, "1d")], k=self.k,
                                  filters=Filters(start=self.start, end=self.end, place_ids=(place_id,), bbox=shape.bounds),
                                  engine_name=self.engine_name)
        people = pl.from_arrow(hourly.table)
        zones = self.zones(category) if category else self._zones_of(Filters(start=self.start, end=self.end, place_ids=(place_id,)))
        dwell_table = pl.from_arrow(dwell(zones.stays.filter(pl.col("place_id") == place_id), k=self.k).table)
        flows = zones.flows.filter((pl.col("origin") == place_id) | (pl.col("destination") == place_id))
        nearby = conditions(self.lake, radius_m=NEARBY_M, filters=window, k=self.k, engine_name=self.engine_name, hourly=hourly)
        inside = [place_id, *_places_inside(self.lake, shape, place_id)]
        detections = self._detections(inside)
        hot = _hot_cells_inside(self.analysis, shape, self.k)
        busiest = people.sort("devices", descending=True).head(1)
        tz = self.analysis.timezone
        thin = self.analysis.history_needed(inside, self.start, self.end)
        events = int((detections["kind"] != FAULT).sum())
        headline = {
            "pings": int(people["pings"].sum()) if people.height else 0,
            "busiest_hour": _local(busiest["bucket"][0], tz) if busiest.height else None,
            "busiest_hour_devices": int(busiest["devices"][0]) if busiest.height else None,
            "median_stay_min": float(dwell_table["median_min"][0]) if dwell_table.height else None,
            # none found where nothing could be judged is not "no events": say what the history lacks instead
            "events": None if thin and not self._judged(inside) else events,
            "sensor_faults": int((detections["kind"] == FAULT).sum()),
            "hot_cells": int(hot.height),
            "history": thin or "enough to judge every hour",
        }
        report = Report(place_id, name, self.start, self.end, self.k, headline, hourly=people, cells=cells, timezone=tz)
        unusual_note = (f"Crowd surges: devices in an hour at least {self.k}, twice the usual for that hour of that kind of day "
                        f"({tz}) and far beyond its count noise; traffic drops and unusual readings: sensors far from their "
                        "hour-of-day baseline; sensor faults: flat lines, impossible values, silence. High: act on it.")
        report.sections = [
            ("What is unusual", _in_local_time(detections.select("kind", "severity", "place_id", "start", "end", "peak_z", "evidence"),
                                               tz, "start", "end"),
             unusual_note + (f" Not every hour could be judged: {thin}." if thin else "")),
            ("Hotspots", hot, f"Getis-Ord Gi* of pings per H3 cell (resolution {HOTSPOT_RES}) over the window; z ≥ 2.58 is p < 0.01."),
            (f"Footfall by hour ({tz})", _in_local_time(people.select("bucket", "pings", "devices").sort("bucket"), tz, "bucket"),
             f"k-anonymous: hours with fewer than {self.k} devices are not shown (how many is not said: a count of them would "
             "tell that someone was there)."),
            ("How long people stay", dwell_table, "Stays: consecutive pings inside the place, at most 30 min apart, at least 5 min long."),
            (f"Sensors nearby (within {NEARBY_M} m) during busy hours ({self.analysis.timezone})", nearby, ""),
            (f"Flows in and out (between {category or 'these'} zones)", flows, "Trips between consecutive stays; k-anonymous."),
        ]
        return report

    def zones(self, category: str, /) -> Zones:
        """Stays in the places of ``category`` and the flows between them, computed once per batch."""
        if category not in self._zones:
            self._zones[category] = zones_of(self.lake, category, start=self.start, end=self.end, k=self.k, engine_name=self.engine_name)
        return self._zones[category]

    def _zones_of(self, filters: Filters) -> Zones:
        return zones_from(stays(self.lake, filters=filters, engine_name=self.engine_name), k=self.k)

    def _detections(self, place_ids: list[str]) -> pl.DataFrame:
        """Detections at the place and at the places inside it, overlapping the window."""
        detections = self.analysis.detections.filter(pl.col("place_id").is_in(place_ids))
        if self.start or self.end:
            detections = detections.filter((pl.col("end") > (self.start or UTC_MIN)) & (pl.col("start") < (self.end or UTC_MAX)))
        return detections

    def _judged(self, place_ids: list[str]) -> bool:
        """Whether any hour of these places in the window had a usual to be judged against."""
        scores = self.analysis.place_scores.filter(pl.col("place_id").is_in(place_ids) & pl.col("usual").is_not_null())
        if self.start or self.end:
            scores = scores.filter(pl.col("bucket").is_between(self.start or UTC_MIN, self.end or UTC_MAX, closed="left"))
        return not scores.is_empty()


def build(lake: Lake, analysis: Analysis, place_id: str, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None,
          k: int = DEFAULT_K, engine_name: str = "polars") -> Report:
    """The report for one place; for several, use one ``ReportBatch`` so they share what they can."""
    return ReportBatch(lake, analysis, start=start, end=end, k=k, engine_name=engine_name).build(place_id)


def zones_of(lake: Lake, category: str, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None, k: int = DEFAULT_K,
             engine_name: str = "polars") -> Zones:
    """Stays in the places of ``category`` over [start, end) and the k-anonymous flows between them."""
    return zones_from(stays(lake, filters=Filters(start=start, end=end, categories=(category,)), engine_name=engine_name), k=k)


def zones_from(found: pl.DataFrame, /, *, k: int) -> Zones:
    """Zones from their stays: the k-anonymous daily flows between them."""
    return Zones(found, pl.from_arrow(od(found, freq="1d", k=k).table))


def categories_of(lake: Lake, place_ids: Sequence[str], /) -> dict[str, str | None]:
    """Each place's category; refuses a place the lake does not hold (before any work on it)."""
    places = registry.places(lake, place_ids=tuple(place_ids), columns=("place_id", "category"))
    known = dict(zip(places["place_id"], places["category"]))
    missing = next((p for p in place_ids if p not in known), None)
    if missing is not None:
        raise no_such_place(missing)
    return known


def no_such_place(place_id: str, /) -> BadFilter:
    return BadFilter("district", place_id, 'no such place; see `citylake sql "SELECT place_id, name FROM places"`')


def _places_inside(lake: Lake, shape, place_id: str) -> list[str]:
    places = registry.places(lake, columns=("place_id", "geometry"))
    inside = shapely.contains(shape, shapely.point_on_surface(registry.shapes(places)))
    return [p for p, i in zip(places["place_id"], inside) if i and p != place_id]


def _hot_cells_inside(analysis: Analysis, shape, k: int) -> pl.DataFrame:
    """Hot cells inside the place; only cells that held at least k devices in some hour (k-anonymous)."""
    hot = analysis.hotspots.filter((pl.col("class") == "hot") & (pl.col("most_devices_in_an_hour") >= k))
    if hot.is_empty():
        return hot.select("h3_cell", "pings", "z", "p")
    lat, lon = cells_to_latlng(hot["h3_cell"].to_numpy())
    inside = hot.filter(pl.Series(shapely.contains_xy(shape, lon, lat)))
    trends = analysis.trends.select("h3_cell", "pattern")
    return (inside.join(trends, on="h3_cell", how="left")
            .with_columns(pl.Series("cell", cells_to_strings(inside["h3_cell"].to_numpy()), pl.String), pl.col("z").round(2))
            .select("cell", "pings", "z", "p", "pattern").head(10))


def _local(at: dt.datetime, tz: str) -> str:
    """A time as people read it: in the city's time zone, with its offset."""
    return at.astimezone(zoneinfo.ZoneInfo(tz)).isoformat(sep=" ")


def _in_local_time(table: pl.DataFrame, tz: str, *columns: str) -> pl.DataFrame:
    return table.with_columns(pl.col(c).dt.convert_time_zone(tz) for c in columns)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None

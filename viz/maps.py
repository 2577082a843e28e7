"""The map views planners open: footfall hexagons, sensor readings, OD arcs, places.

Each builds on ``queries`` (so people layers are k-anonymous like every other people output)
and returns a ``MapView`` for ``viz.kepler.write_html`` or ``to_keplergl`` in a notebook.
"""

from __future__ import annotations

import polars as pl
import shapely

from citylake.h3_index import cell_resolutions, cells_to_latlng, cells_to_strings
from citylake.h3_index.polygons import is_polygonal
from citylake.lake import Lake, registry
from citylake.queries import DEFAULT_K, Filters, engine, footfall, od, stays
from citylake.queries.base import QueryResult
from citylake.queries.filters import check_freq
from citylake.viz.kepler import Layer, MapView

NO_FILTERS = Filters()
CATEGORY_COLOURS = {"park": (80, 180, 90), "district": (120, 120, 200), "business_district": (230, 160, 40), "expo": (220, 60, 140)}


def _city_clock(lake: Lake) -> pl.Expr:
    """A bucket (UTC) as the city's wall-clock time, which is what kepler.gl's time filter shows."""
    return pl.col("bucket").dt.convert_time_zone(lake.timezone).dt.replace_time_zone(None)


def footfall_map(lake: Lake, /, *, res: int = 9, freq: str = "1h", filters: Filters = NO_FILTERS, k: int = DEFAULT_K,
                 engine_name: str = "duckdb") -> MapView:
    """Distinct devices per H3 cell per bucket as extruded hexagons (colour: devices, height: pings), with
    a time filter to play the buckets back, over the outlines of the places."""
    return footfall_view(lake, footfall(lake, by="cell", res=res, freq=freq, filters=filters, k=k, engine_name=engine_name), freq=freq)


def footfall_view(lake: Lake, result, /, *, freq: str) -> MapView:
    """``footfall_map``'s view of a footfall per H3 cell the caller already has: a steward's ``QueryResult`` (pings and
    devices) or a release (devices)."""
    cells = pl.from_arrow(result.table)
    counts = [c for c in ("devices", "pings") if c in cells.columns]
    hexes = cells.select(pl.Series("hex", cells_to_strings(cells["h3_cell"].to_numpy()), pl.String),
                         _city_clock(lake), *counts)
    res = int(cell_resolutions(cells["h3_cell"].head(1).to_numpy())[0]) if cells.height else "—"
    view = MapView(f"Footfall per H3 cell (res {res}) per {freq}, {lake.timezone} time", note=_privacy_note(result))
    view.add("footfall", hexes, "Footfall", Layer("hexagonId", "footfall", "Devices per cell", {"hex_id": "hex"},
                                                  color_by="devices", size_by=counts[-1]),
             tooltip=["hex", "bucket", *counts])
    view.time = ("footfall", "bucket")
    _with_places(view, lake)
    view.centre = _centre_of_cells(cells)
    return view


def readings_map(lake: Lake, /, *, metric: str | None = None, freq: str = "1h", filters: Filters = NO_FILTERS) -> MapView:
    """Mean reading per sensor per bucket as points coloured by value, with playback over the buckets."""
    sensors = registry.sensors(lake, columns=("sensor_id", "kind", "lat", "lon"))
    per = engine("polars", lake).readings(sensor_ids=sensors["sensor_id"].to_list(), freq=check_freq(freq), filters=filters)
    if metric:
        per = per.filter(pl.col("metric") == metric)
    per = per.with_columns(pl.col("mean").round(2))
    points = (per.join(sensors, on="sensor_id").with_columns(_city_clock(lake))
              .select("sensor_id", "kind", "metric", "bucket", "mean", "readings", "lat", "lon").sort("bucket", "sensor_id"))
    view = MapView(f"Sensor readings{f' ({metric})' if metric else ''} per {freq}, {lake.timezone} time")
    view.add("readings", points, "Readings", Layer("point", "readings", "Mean reading", {"lat": "lat", "lng": "lon"}, color_by="mean"),
             tooltip=["sensor_id", "metric", "bucket", "mean", "readings"])
    view.time = ("readings", "bucket")
    _with_places(view, lake)
    return view


def od_map(lake: Lake, /, *, category: str = "district", freq: str = "1d", filters: Filters = NO_FILTERS, k: int = DEFAULT_K,
           engine_name: str = "duckdb") -> MapView:
    """Trips between places of one category (consecutive stays) as arcs from origin to destination centre."""
    zone_filters = Filters(start=filters.start, end=filters.end, categories=(category,))
    result = od(stays(lake, filters=zone_filters, engine_name=engine_name), freq=freq, k=k, engine_name=engine_name)
    return od_view(lake, result, category=category, freq=freq)


def od_view(lake: Lake, result, /, *, category: str, freq: str) -> MapView:
    """``od_map``'s view of flows the caller already has: a steward's ``QueryResult`` (trips and devices) or a release
    (devices)."""
    flows = pl.from_arrow(result.table)
    counts = [c for c in ("trips", "devices") if c in flows.columns]
    centres = _place_centres(lake, category)
    arcs = (flows.join(centres.rename({"place_id": "origin", "lat": "lat0", "lon": "lon0", "name": "from"}), on="origin")
            .join(centres.rename({"place_id": "destination", "lat": "lat1", "lon": "lon1", "name": "to"}), on="destination")
            .with_columns(_city_clock(lake))
            .select("from", "to", "bucket", *counts, "lat0", "lon0", "lat1", "lon1"))
    view = MapView(f"Flows between {category} zones per {freq}, {lake.timezone} time", note=_privacy_note(result))
    ends = {"lat0": "lat0", "lng0": "lon0", "lat1": "lat1", "lng1": "lon1"}
    view.add("od", arcs, "Flows", Layer("arc", "od", counts[0].capitalize(), ends, color_by=counts[0], size_by=counts[0]),
             tooltip=["from", "to", "bucket", *counts])
    view.time = ("od", "bucket")
    _with_places(view, lake, categories=(category,))
    return view


def hotspots_map(lake: Lake, hotspots: pl.DataFrame, /, *, patterns: pl.DataFrame | None = None, k: int = DEFAULT_K) -> MapView:
    """Gi* hot and cold cells as hexagons coloured by z, with their p-value and space-time pattern in the tooltip.
    ``hotspots``: h3_cell, z, p, class and most_devices_in_an_hour (cells with fewer than k devices are left out)."""
    shown = hotspots.filter((pl.col("class") != "not significant") & (pl.col("most_devices_in_an_hour") >= k))
    if patterns is not None:
        shown = shown.join(patterns.select("h3_cell", "pattern"), on="h3_cell", how="left")
    cells = shown.select(pl.Series("hex", cells_to_strings(shown["h3_cell"].to_numpy()), pl.String), pl.col("z").round(2),
                         pl.col("p"), "class", *(["pattern"] if patterns is not None else []))
    view = MapView("Hotspots: Getis-Ord Gi* of pings per H3 cell", note=f"cells with fewer than {k} devices in every hour are not shown")
    view.add("hotspots", cells, "Hotspots", Layer("hexagonId", "hotspots", "Gi* z-score", {"hex_id": "hex"}, color_by="z"),
             tooltip=[c for c in cells.columns])
    _with_places(view, lake)
    view.centre = _centre_of_cells(shown)
    return view


def alerts_view(lake: Lake, alerts: pl.DataFrame, /) -> MapView:
    """Alerts (``citylake watch``'s) at their places' centres, coloured by severity; an alert with no place is left out."""
    SEVERITY = {"low": 1, "medium": 2, "high": 3}
    placed = alerts["place_id"].drop_nulls().unique().to_list()
    where = _centres(registry.places(lake, place_ids=placed, columns=("place_id", "name", "geometry")))
    points = (alerts.join(where, on="place_id")
              .with_columns(pl.col("severity").replace_strict(SEVERITY, default=0).alias("level"),
                            pl.col("start").dt.convert_time_zone(lake.timezone).dt.replace_time_zone(None),
                            pl.col("end").dt.convert_time_zone(lake.timezone).dt.replace_time_zone(None))
              .select("alert_id", "kind", "name", "status", "severity", "level", "start", "end", "evidence", "lat", "lon"))
    view = MapView(f"Alerts from the live watcher, {lake.timezone} time",
                   note="evidence is a coarse ratio to the usual or the line a private test crossed, never a count")
    where = {"lat": "lat", "lng": "lon"}
    view.add("alerts", points, "Alerts", Layer("point", "alerts", "Alerts", where, color_by="level", size_by="level"),
             tooltip=["kind", "name", "status", "severity", "start", "end", "evidence"])
    _with_places(view, lake)
    return view


def places_map(lake: Lake, /, *, filters: Filters = NO_FILTERS) -> MapView:
    """Places as polygons (filled by category) and sensors as points."""
    view = MapView("Places and sensors")
    _with_places(view, lake, categories=filters.categories, filled=True)
    sensors = registry.sensors(lake, columns=("sensor_id", "kind", "place_id", "lat", "lon"))
    view.add("sensors", sensors, "Sensors", Layer("point", "sensors", "Sensors", {"lat": "lat", "lng": "lon"}, color=(30, 150, 255)),
             tooltip=["sensor_id", "kind", "place_id"])
    return view


def _with_places(view: MapView, lake: Lake, *, categories: tuple[str, ...] = (), filled: bool = False) -> None:
    places = registry.places(lake, categories=categories)
    shapes = registry.shapes(places)
    polygonal = is_polygonal(shapes)  # lines and points have no outline
    outlines = places.filter(pl.Series(polygonal)).with_columns(
        pl.Series("geometry", shapely.to_geojson(shapes[polygonal]), pl.String)).select("place_id", "name", "category", "geometry")
    if outlines.height:
        view.add("places", outlines, "Places", Layer("geojson", "places", "Places", {"geojson": "geometry"}, color=(90, 170, 230),
                                                     opacity=0.35 if filled else 0.05, color_by="category" if filled else None),
                 tooltip=["name", "category", "place_id"])
        if view.centre is None:
            centre = shapely.centroid(shapely.union_all(shapes[polygonal]))
            view.centre = (centre.y, centre.x)


def _place_centres(lake: Lake, category: str) -> pl.DataFrame:
    return _centres(registry.places(lake, categories=(category,), columns=("place_id", "name", "geometry")))


def _centres(places: pl.DataFrame) -> pl.DataFrame:
    centres = shapely.centroid(registry.shapes(places))
    return places.select("place_id", "name").with_columns(pl.Series("lat", shapely.get_y(centres)),
                                                          pl.Series("lon", shapely.get_x(centres)))


def _centre_of_cells(cells: pl.DataFrame) -> tuple[float, float] | None:
    if cells.is_empty():
        return None
    lat, lon = cells_to_latlng(cells["h3_cell"].unique().to_numpy())
    return float(lat.mean()), float(lon.mean())


def _privacy_note(result) -> str:
    if isinstance(result, QueryResult):
        return f"k-anonymous (the steward's): groups of fewer than {result.k} devices are not shown"
    return "differentially private release: counts carry noise; rows under the release's threshold are not shown"


def to_keplergl(view: MapView, /, *, height: int = 600):
    """The view as a ``keplergl.KeplerGl`` widget for Jupyter (needs the ``keplergl`` package)."""
    try:
        from keplergl import KeplerGl
    except ImportError:
        from citylake.viz.kepler import MapError

        raise MapError("the keplergl package is not installed; pip install 'citylake[notebooks]'") from None
    widget = KeplerGl(height=height, config=view.config())
    for data_id, frame in view.datasets.items():
        widget.add_data(data=frame.to_pandas(), name=data_id)
    return widget

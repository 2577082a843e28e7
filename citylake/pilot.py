"""A district pilot in one step: load an area's boundary and its own files into a lake, then write its first report.

The same settings as every other entry point: the lake's resolutions, ``ingest.timezone`` and ``ingest.batch_rows``,
the pseudonym key, the analysis cluster.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from citylake import api
from citylake import settings as S
from citylake.queries import BadFilter


@dataclass(frozen=True)
class Pilot:
    """A pilot area: its boundary (one polygon) and whichever of its own files it has."""
    boundary: str | Path
    name: str = "pilot"
    pois: str | Path | None = None
    sensors: str | Path | None = None
    readings: str | Path | None = None
    pings: str | Path | None = None
    timezone: str | None = None  # the area's (IANA); kept with the lake

    @property
    def slug(self) -> str:
        return "-".join(self.name.lower().split())


def run_pilot(area: Pilot, /, *, out: str | Path, settings: S.Settings | None = None, k: int | None = None,
              start: dt.datetime | None = None, end: dt.datetime | None = None, scheduler: str | None = None,
              workers: int | None = None, announce: Callable[[str], None] = print) -> Path:
    """Load ``area`` into the lake of ``settings`` (made if missing, with its key: the pilot is its steward) and write its
    first report to ``out`` (k: the lake's floor unless given)."""
    settings = settings or S.load()
    api.cluster_asked_for(scheduler, workers, settings)  # a plain-TCP cluster is refused before any work
    lake = api.init_lake(settings=settings, timezone=area.timezone)  # opens an existing lake as it is (its zone changed if given)
    for label, step in _steps(lake, area, settings):
        announce(f"pilot: {label}: {step().line()}")
    place_id = _boundary_place_id(lake, area)
    k = api.k_for(lake, k, settings=settings)
    api.report(lake, [place_id], out=out, single=True, start=start, end=end, settings=settings, scheduler=scheduler, workers=workers, k=k,
               announce=announce)
    return Path(out)


def _steps(lake, area: Pilot, settings: S.Settings) -> list[tuple[str, Callable]]:
    steps = [("boundary", lambda: _ingest_boundary(lake, area))]
    if area.pois:
        steps.append(("POIs", lambda: api.ingest_places(lake, area.pois)))
    if area.sensors:
        steps.append(("sensors", lambda: api.ingest_sensors(lake, area.sensors)))
    if area.readings:
        steps.append(("readings", lambda: api.ingest_readings(lake, area.readings, settings=settings)))
    if area.pings:
        steps.append(("pings", lambda: api.ingest_pings(lake, area.pings, settings=settings)))
    return steps


def _ingest_boundary(lake, area: Pilot):
    """The boundary as a place of category ``pilot``, named and id'd after the area."""
    import geopandas as gpd

    from citylake.ingestion.errors import UnreadableInput

    try:
        shapes = gpd.read_file(area.boundary)
    except Exception as err:  # GDAL's own kinds of error
        raise UnreadableInput(str(area.boundary), "cannot read it as a boundary (GeoJSON, a zipped Shapefile, GeoPackage…): "
                                                  f"{str(err).splitlines()[0][:160]}") from None
    if len(shapes) != 1:
        raise BadFilter("boundary", str(area.boundary), f"holds {len(shapes)} shapes; a pilot boundary is one polygon (dissolve it first)")
    with tempfile.TemporaryDirectory() as scratch:
        framed = Path(scratch) / "pilot.geojson"  # the source name "pilot" makes the place id pilot:<slug>
        shapes.assign(id=area.slug, name=area.name, category="pilot").to_file(framed, driver="GeoJSON")
        return api.ingest_places(lake, framed, category="pilot", id_field="id")


def _boundary_place_id(lake, area: Pilot) -> str:
    ids = api.place_ids_of(lake, "pilot")
    return next((p for p in ids if p.endswith(area.slug)), ids[0])

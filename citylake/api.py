"""The Python API: open a lake with the settings in force, ingest into it, query it, analyse it.

    >>> import citylake
    >>> lake = citylake.open_lake("citylake-data")
    >>> citylake.sql(lake, "SELECT count(*) FROM pings").fetchall()

The CLI is a thin layer over these functions, so a command line and a script with the same settings do the
same thing. Each function takes ``settings`` (default: ``citylake.settings.load()``) and imports what it needs
when called.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from citylake import settings as S

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from citylake.analytics.detect import Analysis
    from citylake.ingestion.batch import IngestReport
    from citylake.lake import Lake


def init_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None) -> Lake:
    """Create a lake (or complete a partial one) with the configured resolutions."""
    from citylake.lake import Lake

    settings = settings or S.load()
    return Lake.init(path or settings["lake"], cell_res=settings["h3.cell_resolution"], partition_res=settings["h3.partition_resolution"])


def open_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None) -> Lake:
    """Open an existing lake (``path``, else the ``lake`` setting)."""
    from citylake.lake import Lake

    settings = settings or S.load()
    return Lake.open(path or settings["lake"])


def create_pseudonym_key(lake: Lake, /, *, settings: S.Settings | None = None) -> Path | None:
    """Create the pseudonym key file (outside the lake) unless it exists or $CITYLAKE_PSEUDONYM_KEY holds the key."""
    import os

    from citylake.privacy import KEY_ENV, create_key

    settings = settings or S.load()
    if os.environ.get(KEY_ENV):
        return None
    return create_key(settings["privacy.pseudonym_key_file"], lake_root=lake.root)


def steward_key(*, settings: S.Settings | None = None, doing: str = "this") -> bytes:
    """The pseudonym key of the settings in force; refuses anyone who does not hold it (``citylake.privacy``)."""
    from citylake.privacy import require_steward

    return require_steward((settings or S.load())["privacy.pseudonym_key_file"], doing=doing)


def connect(lake: Lake, /, *, as_of: str | None = None, settings: S.Settings | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB over the lake: spatial and H3 SQL functions, one view per table."""
    from citylake.lake import duckdb_for

    return duckdb_for(lake, as_of=as_of, **_duckdb_options(settings or S.load()))


def workspace(lake: Lake, /, *, role: str = "analyst", as_of: str | None = None, settings: S.Settings | None = None):
    """The SQL workspace for a role: analysts read-only without personal data; stewards (key holders) everything."""
    from citylake.privacy import STEWARD, check_role
    from citylake.queries.sandbox import Workspace

    settings = settings or S.load()
    if check_role(role) == STEWARD:
        steward_key(settings=settings, doing="the steward role")
    return Workspace(lake, role=role, as_of=as_of, **_duckdb_options(settings))


def _duckdb_options(settings: S.Settings) -> dict:
    return {"extension_dir": settings["duckdb.extension_directory"], "memory_limit": settings["duckdb.memory_limit"] or None,
            "threads": settings["duckdb.threads"] or None}


def sql(lake: Lake, query: str, /, *, role: str = "analyst", as_of: str | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run SQL in the workspace of ``role`` (analyst by default)."""
    return workspace(lake, role=role, as_of=as_of).sql(query)


def frame(lake: Lake, table: str, /, *, as_of: int | str | None = None) -> pl.LazyFrame:
    """A Polars LazyFrame over one table."""
    from citylake.lake import scan

    return scan(lake, table, as_of=as_of)


# --- ingestion, with the settings every entry point shares ---------------------------------------


def ingest_pings(lake: Lake, path: str | Path, /, *, settings: S.Settings | None = None, mapping: str | Mapping[str, str] | None = None,
                 tz: str | None = None, delimiter: str | None = None, progress: bool = False) -> IngestReport:
    """A pings file into ``pings``, pseudonymised with the steward's key (``mapping``: ``"device_id=uid,…"`` or a dict)."""
    from citylake import ingestion

    settings = settings or S.load()
    key = steward_key(settings=settings, doing="ingesting pings")
    pairs = _mapping(mapping, (*ingestion.PING_REQUIRED, *ingestion.PING_OPTIONAL))
    return ingestion.ingest_pings(lake, path, key=key, mapping=pairs, tz=tz or settings["ingest.timezone"], delimiter=delimiter,
                                  batch_rows=settings["ingest.batch_rows"], progress=progress)


def ingest_readings(lake: Lake, path: str | Path, /, *, settings: S.Settings | None = None,
                    mapping: str | Mapping[str, str] | None = None, tz: str | None = None, delimiter: str | None = None,
                    progress: bool = False) -> IngestReport:
    """A readings file into ``readings`` (sensors must be registered first)."""
    from citylake import ingestion

    settings = settings or S.load()
    pairs = _mapping(mapping, ingestion.READING_REQUIRED)
    return ingestion.ingest_readings(lake, path, mapping=pairs, tz=tz or settings["ingest.timezone"], delimiter=delimiter,
                                     batch_rows=settings["ingest.batch_rows"], progress=progress)


def ingest_sensors(lake: Lake, path: str | Path, /, *, progress: bool = False) -> IngestReport:
    """A sensor registry file into ``sensors`` (added or updated by sensor_id)."""
    from citylake import ingestion

    return ingestion.ingest_sensors(lake, path, progress=progress)


def ingest_places(lake: Lake, path: str | Path, /, *, category: str | None = None, name_field: str | None = None,
                  id_field: str | None = None, crs: str | None = None, progress: bool = False) -> IngestReport:
    """Map data into ``places`` and their H3 covers into ``place_cells``."""
    from citylake import ingestion

    return ingestion.ingest_places(lake, path, category=category, name_field=name_field, id_field=id_field, crs=crs, progress=progress)


def ingest_mqtt(lake: Lake, broker: str, topic: str, /, *, settings: S.Settings | None = None, tz: str | None = None,
                **options) -> IngestReport:
    """Live readings from an MQTT broker, committing as the ``mqtt.*`` settings say (options: client_id, max_seconds, …)."""
    from citylake import ingestion

    settings = settings or S.load()
    return ingestion.ingest_mqtt(lake, broker, topic, commit_messages=settings["mqtt.commit_messages"],
                                 commit_seconds=settings["mqtt.commit_seconds"], tz=tz or settings["ingest.timezone"], **options)


def _mapping(mapping: str | Mapping[str, str] | None, known: tuple[str, ...]) -> dict[str, str]:
    from citylake.ingestion import parse_mapping

    return parse_mapping(mapping, known) if isinstance(mapping, str) or mapping is None else dict(mapping)


# --- steward jobs and analysis --------------------------------------------------------------------


def publish(lake: Lake, /, *, k: int, engine_name: str = "duckdb", settings: S.Settings | None = None) -> dict[str, int]:
    """Recompute the k-anonymous aggregates analysts read (reads raw pings: the steward's job)."""
    from citylake.queries.publish import publish as publish_aggregates

    steward_key(settings=settings, doing="publishing")
    return publish_aggregates(lake, k=k, engine_name=engine_name)


def save_stays(lake: Lake, stays: pl.DataFrame, /, *, max_gap_s: int, min_dwell_s: int, settings: S.Settings | None = None) -> int:
    """Write per-device stays as the derived table ``stays`` (steward data: the steward's job); the new version."""
    from citylake.queries import save_stays as write_stays

    steward_key(settings=settings, doing="saving stays")
    return write_stays(lake, stays, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)


def analyse(lake: Lake, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None, settings: S.Settings | None = None,
            scheduler: str | None = None, workers: int | None = None, announce: Callable[[str], None] = print) -> Analysis:
    """The situational analysis on Dask: ``scheduler`` (else the ``analysis.scheduler`` setting, else a local cluster of
    ``workers``, else ``analysis.workers``, one core each)."""
    from citylake.analytics import analyse as run_analysis
    from citylake.analytics import dask_client

    settings = settings or S.load()
    with dask_client(scheduler or settings["analysis.scheduler"] or None, workers=workers or settings["analysis.workers"],
                     memory_limit=settings["analysis.worker_memory"] or None, announce=announce) as client:
        return run_analysis(lake, start=start, end=end, client=client)


def place_ids_of(lake: Lake, category: str, /) -> list[str]:
    """The ids of every place of ``category``, sorted; refuses a category with no places."""
    from citylake.lake import registry
    from citylake.queries import BadFilter

    ids = registry.places(lake, categories=(category,), columns=("place_id",))["place_id"].sort().to_list()
    if not ids:
        raise BadFilter("category", category, 'no places of this category; see `citylake sql "SELECT DISTINCT category FROM places"`')
    return ids

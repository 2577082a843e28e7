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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from citylake import settings as S

if TYPE_CHECKING:
    import duckdb
    import polars as pl

    from citylake.analytics.detect import Analysis
    from citylake.analytics.report import Report
    from citylake.ingestion.batch import IngestReport
    from citylake.ingestion.replay import ReplayReport
    from citylake.lake import Lake
    from citylake.privacy import Policy
    from citylake.queries import Filters


def init_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None, policy: Policy | None = None,
              timezone: str | None = None) -> Lake:
    """Create a lake (or complete a partial one) with the configured resolutions, and give it its pseudonym key and
    privacy ``policy`` (default: k floor 10, epsilon 1 per day) unless it has them (see ``create_pseudonym_key``).
    ``timezone``: the city's (an IANA name; default UTC, an existing lake keeps its own unless given one), in which reports,
    maps and hours of the day are read; rows stay in UTC."""
    from citylake.lake import Lake

    settings = settings or S.load()
    lake = Lake.init(path or settings["lake"], cell_res=settings["h3.cell_resolution"], partition_res=settings["h3.partition_resolution"],
                     timezone=timezone, storage=storage_of(settings))
    create_pseudonym_key(lake, settings=settings, policy=policy)
    return lake


def open_lake(path: str | Path | None = None, /, *, settings: S.Settings | None = None) -> Lake:
    """Open an existing lake (``path``, else the ``lake`` setting)."""
    from citylake.lake import Lake

    settings = settings or S.load()
    return Lake.open(path or settings["lake"], storage=storage_of(settings))


def storage_of(settings: S.Settings | None = None, /):
    """How to reach an ``s3://`` lake: the ``storage.*`` settings, each empty one from its AWS environment variable."""
    from citylake.lake import Storage

    settings = settings or S.load()
    return Storage.from_env(
        endpoint=settings["storage.endpoint"], region=settings["storage.region"], access_key_id=settings["storage.access_key_id"],
        secret_access_key=settings["storage.secret_access_key"], path_style=settings["storage.path_style"],
        allow_http=settings["storage.allow_http"], lock_lease_seconds=settings["storage.lock_lease_seconds"])


def create_pseudonym_key(lake: Lake, /, *, settings: S.Settings | None = None, policy: Policy | None = None) -> Path | None:
    """A new lake's key (the one in $CITYLAKE_PSEUDONYM_KEY, else a new key file of 32 random bytes, one per lake, outside
    it) and its privacy policy, recorded with the key's check value in the steward zone. A lake that has a key keeps it.
    Returns the key file made, if one was."""
    from citylake.privacy import Policy, establish_key

    return establish_key(lake, key_file(lake, settings=settings), policy=(policy or Policy()).checked())


def key_file(lake: Lake, /, *, settings: S.Settings | None = None) -> Path:
    """Where this lake's pseudonym key is kept: the setting, else ``~/.config/citylake/keys/<lake id>.key``."""
    from citylake.privacy import key_file_of

    return key_file_of(lake, (settings or S.load())["privacy.pseudonym_key_file"])


def steward_key(lake: Lake, /, *, settings: S.Settings | None = None, doing: str = "this") -> bytes:
    """The lake's pseudonym key from whoever holds it; refuses anyone else (``citylake.privacy.require_steward``)."""
    from citylake.privacy import require_steward

    return require_steward(lake, key_file(lake, settings=settings), doing=doing)


def k_for(lake: Lake, asked: int | None = None, /, *, settings: S.Settings | None = None) -> int:
    """The k of one of the steward's exact people results: the lake's floor, or ``asked`` (the steward's key needed)."""
    from citylake.privacy import k_for_result

    steward_key(lake, settings=settings, doing="an exact people result")
    return k_for_result(lake, asked)


def connect(lake: Lake, /, *, as_of: str | None = None, settings: S.Settings | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB over every table of the lake, raw pings included: the steward's (spatial and H3 SQL functions, one view
    per table). Analysts use ``sql`` / ``workspace``."""
    from citylake.lake import duckdb_for

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="a raw connection to the lake")
    return duckdb_for(lake, as_of=as_of, **_duckdb_options(settings))


def workspace(lake: Lake, /, *, role: str = "analyst", as_of: str | None = None, settings: S.Settings | None = None):
    """The SQL workspace for a role: analysts read-only without personal data; stewards (key holders) everything."""
    from citylake.privacy import STEWARD, check_role
    from citylake.queries.sandbox import Limits, Workspace

    settings = settings or S.load()
    if check_role(role) == STEWARD:
        steward_key(lake, settings=settings, doing="the steward role")
    limits = Limits(seconds=settings["sandbox.timeout_seconds"], memory=settings["sandbox.memory_limit"],
                    threads=settings["sandbox.threads"])
    return Workspace(lake, role=role, as_of=as_of, limits=limits, **_duckdb_options(settings))


def _duckdb_options(settings: S.Settings) -> dict:
    return {"extension_dir": settings["duckdb.extension_directory"], "memory_limit": settings["duckdb.memory_limit"] or None,
            "threads": settings["duckdb.threads"] or None}


def sql(lake: Lake, query: str, /, *, role: str = "analyst", as_of: str | None = None) -> duckdb.DuckDBPyRelation | None:
    """Run SQL in the workspace of ``role`` (analyst by default)."""
    return workspace(lake, role=role, as_of=as_of).sql(query)


def frame(lake: Lake, table: str, /, *, as_of: int | str | None = None, settings: S.Settings | None = None) -> pl.LazyFrame:
    """A Polars LazyFrame over one table; the steward zone's tables (raw pings, stays, quarantine…) need the steward's key."""
    from citylake.lake import scan
    from citylake.privacy import STEWARD_ONLY_TABLES

    if table in STEWARD_ONLY_TABLES:
        steward_key(lake, settings=settings, doing=f"reading {table}")
    return scan(lake, table, as_of=as_of)


# --- ingestion, with the settings every entry point shares ---------------------------------------


def ingest_pings(lake: Lake, path: str | Path, /, *, settings: S.Settings | None = None, mapping: str | Mapping[str, str] | None = None,
                 tz: str | None = None, delimiter: str | None = None, progress: bool = False, compact: bool = True) -> IngestReport:
    """A pings file into ``pings``, pseudonymised with the steward's key (``mapping``: ``"device_id=uid,…"`` or a dict);
    ``compact=False`` leaves the partitions it touched for ``merge_ingested`` after the last of several files."""
    from citylake import ingestion

    settings = settings or S.load()
    key = steward_key(lake, settings=settings, doing="ingesting pings")
    pairs = _mapping(mapping, (*ingestion.PING_REQUIRED, *ingestion.PING_OPTIONAL))
    return ingestion.ingest_pings(lake, path, key=key, mapping=pairs, tz=tz or settings["ingest.timezone"], delimiter=delimiter,
                                  batch_rows=settings["ingest.batch_rows"], earliest=settings["ingest.earliest"],
                                  buffer_mb=settings["ingest.buffer_mb"], progress=progress, compact=compact)


def check_inputs(paths: Sequence[str | Path], /) -> None:
    """Every input file present before the first is read: a mistyped name among several ingests nothing."""
    from citylake.ingestion.errors import UnreadableInput

    missing = next((str(p) for p in paths if not Path(p).is_file()), None)
    if missing is not None:
        raise UnreadableInput(missing, "no such file" + (f"; none of the {len(paths)} files was ingested" if len(paths) > 1 else ""))


def merge_ingested(lake: Lake, reports: list[IngestReport], /) -> int:
    """Merge the files of every partition these ingests (run with ``compact=False``) left in more than one file, one
    commit per table: several files ingested in turn are merged once at the end, not after each. How many were merged."""
    merged = 0
    for table in sorted({report.table for report in reports}):
        touched: dict[str, set] = {}
        for report in (r for r in reports if r.table == table):
            for column, values in report.touched.items():
                touched.setdefault(column, set()).update(values)
        merged += lake.merge_crowded(table, touched) if touched else 0
    return merged


def ingest_pings_on_cluster(lake: Lake, paths: list[str | Path], /, *, settings: S.Settings | None = None, scheduler: str | None = None,
                            workers: int | None = None, mapping: str | Mapping[str, str] | None = None, tz: str | None = None,
                            delimiter: str | None = None, announce: Callable[[str], None] = print) -> IngestReport:
    """Pings files ingested on a Dask cluster (``scheduler``, else a local one of ``workers``) in one commit: the rows one
    process would land. Workers read the files where they are (a shared path, or ``s3://`` on the lake's store). The
    tasks carry the pseudonym key, so a remote cluster must be ``tls://``, its workers trusted as the steward."""
    from citylake.ingestion.fanout import PINGS

    return _ingest_on_cluster(lake, paths, PINGS, doing="ingesting pings", settings=settings, scheduler=scheduler, workers=workers,
                              mapping=mapping, tz=tz, delimiter=delimiter, announce=announce)


def ingest_readings_on_cluster(lake: Lake, paths: list[str | Path], /, *, settings: S.Settings | None = None,
                               scheduler: str | None = None, workers: int | None = None, mapping: str | Mapping[str, str] | None = None,
                               tz: str | None = None, delimiter: str | None = None,
                               announce: Callable[[str], None] = print) -> IngestReport:
    """Readings files ingested on a Dask cluster in one commit, as ``ingest_readings`` would land them (checked against
    the sensor registry). The steward's job, as every cluster ingest: the checked rows wait in the steward zone's
    staging area until the commit."""
    from citylake.ingestion.fanout import READINGS

    return _ingest_on_cluster(lake, paths, READINGS, doing="ingesting on a cluster (checked rows wait in the steward zone)",
                              settings=settings, scheduler=scheduler, workers=workers, mapping=mapping, tz=tz, delimiter=delimiter,
                              announce=announce)


def _ingest_on_cluster(lake: Lake, paths: list[str | Path], feed, /, *, doing: str, settings: S.Settings | None, scheduler: str | None,
                       workers: int | None, mapping: str | Mapping[str, str] | None, tz: str | None, delimiter: str | None,
                       announce: Callable[[str], None]) -> IngestReport:
    from citylake.ingestion.fanout import DEFAULT_ROWS_PER_TASK, PINGS, ingest_on_cluster, plan

    settings = settings or S.load()
    scheduler = cluster_asked_for(scheduler, workers, settings)
    key = steward_key(lake, settings=settings, doing=doing)
    pairs = _mapping(mapping, (*feed.required, *feed.optional))
    sources = [str(p) for p in paths]
    pieces = plan(lake, sources, feed, rows_per_task=DEFAULT_ROWS_PER_TASK, delimiter=delimiter, mapping=pairs)  # before a cluster starts
    with cluster_for(scheduler, settings=settings, workers=workers, announce=announce) as client:
        return ingest_on_cluster(lake, sources, client, feed, key=key if feed is PINGS else None, mapping=pairs,
                                 tz=tz or settings["ingest.timezone"], delimiter=delimiter, batch_rows=settings["ingest.batch_rows"],
                                 earliest=settings["ingest.earliest"], announce=announce, pieces=pieces)


MAX_RETENTION_HOURS = 24 * 365 * 100  # a retention past a century keeps everything anyway


def stopped_cluster_runs(lake: Lake, /, *, hours: int, remove: bool = False) -> list[str]:
    """Cluster ingests whose command stopped before its end (killed) more than ``hours`` ago (at least a day), whose
    checked rows wait in the steward zone's staging area; removed when ``remove``."""
    from citylake.ingestion.fanout import staging_area, stale_runs

    runs = stale_runs(lake, older_than=dt.timedelta(hours=min(max(hours, 0), MAX_RETENTION_HOURS)))
    for run in runs if remove else []:
        lake.location.delete_tree(staging_area(run))
    return runs


def ingest_readings(lake: Lake, path: str | Path, /, *, settings: S.Settings | None = None,
                    mapping: str | Mapping[str, str] | None = None, tz: str | None = None, delimiter: str | None = None,
                    progress: bool = False, compact: bool = True) -> IngestReport:
    """A readings file into ``readings`` (sensors must be registered first); ``compact`` as for ``ingest_pings``."""
    from citylake import ingestion

    settings = settings or S.load()
    pairs = _mapping(mapping, ingestion.READING_REQUIRED)
    return ingestion.ingest_readings(lake, path, mapping=pairs, tz=tz or settings["ingest.timezone"], delimiter=delimiter,
                                     batch_rows=settings["ingest.batch_rows"], earliest=settings["ingest.earliest"],
                                     buffer_mb=settings["ingest.buffer_mb"], progress=progress, compact=compact)


def ingest_sensors(lake: Lake, path: str | Path, /, *, progress: bool = False) -> IngestReport:
    """A sensor registry file into ``sensors`` (added or updated by sensor_id)."""
    from citylake import ingestion

    return ingestion.ingest_sensors(lake, path, progress=progress)


def ingest_places(lake: Lake, path: str | Path, /, *, category: str | None = None, name_field: str | None = None,
                  id_field: str | None = None, crs: str | None = None, layer: str | None = None, progress: bool = False) -> IngestReport:
    """Map data into ``places`` and their H3 covers into ``place_cells`` (``layer``: the one layer of a multi-layer file to
    read; default every layer)."""
    from citylake import ingestion

    return ingestion.ingest_places(lake, path, category=category, name_field=name_field, id_field=id_field, crs=crs, layer=layer,
                                   progress=progress)


def ingest_mqtt(lake: Lake, broker: str, topic: str, /, *, feed: str = "readings", settings: S.Settings | None = None,
                tz: str | None = None, **options) -> IngestReport:
    """Live readings or pings (``feed``) from an MQTT broker, committing and compacting as the ``mqtt.*`` settings say;
    pings are pseudonymised with the steward's key (options: client_id, max_seconds, max_messages, on_commit, announce)."""
    from citylake import ingestion

    settings = settings or S.load()
    key = steward_key(lake, settings=settings, doing="ingesting pings") if feed == "pings" else None
    return ingestion.ingest_mqtt(lake, broker, topic, feed=feed, key=key, commit_messages=settings["mqtt.commit_messages"],
                                 commit_seconds=settings["mqtt.commit_seconds"], tz=tz or settings["ingest.timezone"],
                                 earliest=settings["ingest.earliest"], compact_seconds=settings["mqtt.compact_minutes"] * 60,
                                 retention_hours=settings["lake.vacuum_retention_hours"], target_mb=settings["lake.target_file_mb"],
                                 **options)


def watch(lake: Lake, /, *, settings: S.Settings | None = None, broker: str | None = None, alerts_topic: str = "citylake/alerts",
          max_seconds: float | None = None, stop=None, announce: Callable[[str], None] = print, on_poll=None) -> int:
    """``citylake watch``: raise live alerts from what lands in the lake until ``stop`` is set (default: on SIGINT or
    SIGTERM, in the main thread) or ``max_seconds`` have passed, writing
    them to the ``alerts`` table and, with ``broker``, to ``<alerts_topic>/<alert id>``. Returns the alert rows written.
    The steward's: it reads raw pings; the k floor of the lake's policy bounds every crowd it reports."""
    from citylake.analytics.watch import WatchConfig, Watcher
    from citylake.live import AlertPublisher, stop_on_signals
    from citylake.privacy import k_for_result

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="watching live pings")
    lake.require_writable()
    config = WatchConfig(poll_seconds=settings["watch.poll_seconds"], history_days=settings["watch.history_days"],
                         lateness=dt.timedelta(minutes=settings["watch.lateness_minutes"]), released_clock=settings["watch.released_clock"])
    publisher = AlertPublisher(broker, alerts_topic) if broker else None
    try:
        watcher = Watcher(lake, k=k_for_result(lake, None), config=config, publish=publisher.send if publisher else None,
                          announce=announce)
        if publisher:
            watcher.republish_recent()
        return watcher.run(max_seconds=max_seconds, stop=stop or stop_on_signals(), on_poll=on_poll)  # one watcher per lake
    finally:
        if publisher:
            publisher.close()


def alerts(lake: Lake, /, *, role: str = "analyst", open_only: bool = False, since: dt.datetime | None = None,
           kinds: tuple[str, ...] = (), settings: S.Settings | None = None) -> pl.DataFrame:
    """The alerts ``citylake watch`` raised, newest first: an analyst's are the released ones (crowd surges from a
    differentially private test, faults and drops as raised); the steward's (``role="steward"``) are judged on exact counts."""
    import polars as pl

    from citylake.lake import scan
    from citylake.privacy import STEWARD, check_role

    if check_role(role) == STEWARD:
        steward_key(lake, settings=settings, doing="the steward's alerts")
    rows = scan(lake, "alerts" if role == STEWARD else "alerts_released")
    if open_only:
        rows = rows.filter(pl.col("status") == "open")
    if since is not None:
        rows = rows.filter(pl.col("end") >= since)
    if kinds:
        rows = rows.filter(pl.col("kind").is_in(list(kinds)))
    return rows.sort("start", descending=True).collect()


def replay(broker: str, /, *, settings: S.Settings | None = None, tz: str | None = None, **options) -> ReplayReport:
    """A city's pings and readings files published to MQTT in event-time order at a chosen speed, for tests and demos (options:
    pings, readings, their topics, speed, start, end, batch_seconds, …; see ``ingestion.replay``). Naive times in the files are
    read in ``tz``, default the ``ingest.timezone`` setting. Needs no lake: it is the city's feed, raw device ids and all."""
    from citylake import ingestion

    settings = settings or S.load()
    return ingestion.replay(broker, tz=tz or settings["ingest.timezone"], **options)


def check_ledger(lake: Lake, /, *, repair: bool = False) -> list[str]:
    """Drift between the ingestion ledger and the tables (``ingestion.ledger``), after mending what can be mended when
    ``repair``; an empty list means they agree."""
    from citylake.ingestion import ledger

    drift = ledger.check(lake)
    if repair and drift.missing_batches:
        for table in drift.missing_batches:
            ledger.repair(lake, table, drift=drift)
        drift = ledger.check(lake)
    return drift.lines


def _mapping(mapping: str | Mapping[str, str] | None, known: tuple[str, ...]) -> dict[str, str]:
    from citylake.ingestion import parse_mapping

    return parse_mapping(mapping, known) if isinstance(mapping, str) or mapping is None else dict(mapping)


# --- steward jobs and analysis --------------------------------------------------------------------


def publish(lake: Lake, /, *, epsilon: float | None = None, delta: float | None = None, days: list[dt.date] | None = None,
            engine_name: str = "polars", settings: S.Settings | None = None, announce: Callable[[str], None] = print,
            scheduler: str | None = None, workers: int | None = None) -> dict[str, int]:
    """Release ``days`` (default: every day with pings) with differential privacy, spending ``epsilon`` and ``delta`` per
    day (default: the lake's budget per day less what live crowd alerts keep); refused past the budget. Reads raw pings:
    the steward's job. With ``scheduler`` (or ``workers``: a local cluster) each day is computed by a Dask task."""
    from citylake.privacy import read_policy
    from citylake.queries.release import publish as release

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="publishing")
    policy = read_policy(lake)
    epsilon = policy.release_epsilon if epsilon is None else epsilon
    delta = policy.delta_per_day if delta is None else delta
    if not (scheduler or workers):
        return release(lake, policy=policy, epsilon=epsilon, delta=delta, days=days, engine_name=engine_name, announce=announce)
    cluster = cluster_asked_for(scheduler, workers, settings)
    with cluster_for(cluster, settings=settings, workers=workers, announce=announce) as client:
        return release(lake, policy=policy, epsilon=epsilon, delta=delta, days=days, engine_name=engine_name, announce=announce,
                       client=client)


def save_stays(lake: Lake, stays: pl.DataFrame, /, *, max_gap_s: int, min_dwell_s: int, settings: S.Settings | None = None) -> int:
    """Write per-device stays as the derived table ``stays`` (steward data: the steward's job); the new version."""
    from citylake.queries import save_stays as write_stays

    steward_key(lake, settings=settings, doing="saving stays")
    return write_stays(lake, stays, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)


def analyse(lake: Lake, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None, settings: S.Settings | None = None,
            scheduler: str | None = None, workers: int | None = None, k: int | None = None,
            announce: Callable[[str], None] = print) -> Analysis:
    """The situational analysis on Dask: ``scheduler`` (else the ``analysis.scheduler`` setting, else a local cluster of
    ``workers``, else ``analysis.workers``, one core each). No crowd under ``k`` devices (default: the lake's k floor) is
    detected; hours of the day are the lake's time zone's."""
    from citylake.analytics import analyse as run_analysis
    from citylake.privacy import k_for_result

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="the situational analysis (it reads raw pings)")
    with cluster_for(cluster_asked_for(scheduler, workers, settings), settings=settings, workers=workers,
                     announce=announce) as client:
        return run_analysis(lake, start=start, end=end, client=client, k=k_for_result(lake, k))


def report(lake: Lake, place_ids: Sequence[str], /, *, out: str | Path, single: bool = False, start: dt.datetime | None = None,
           end: dt.datetime | None = None, settings: S.Settings | None = None, scheduler: str | None = None,
           workers: int | None = None, k: int | None = None, announce: Callable[[str], None] = print) -> list[Report]:
    """``citylake report``: the situational analysis, its detections kept (``keep_detections``), and a report per place
    written (``citylake.reports.write_reports``). The analysis runs on Dask as ``analyse``'s; when a cluster was asked
    for (``scheduler``, ``workers`` or the ``analysis.scheduler`` setting) the reports are computed and drawn there too,
    a task per place, and only written here."""
    from citylake.analytics import analyse as run_analysis
    from citylake.analytics.report import categories_of
    from citylake.privacy import k_for_result
    from citylake.reports import write_reports

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="district reports (they read raw pings)")
    asked = cluster_asked_for(scheduler, workers, settings)
    categories_of(lake, place_ids)  # a place the lake does not hold is refused before any work
    k = k_for_result(lake, k)
    with cluster_for(asked, settings=settings, workers=workers, announce=announce) as client:
        found = run_analysis(lake, start=start, end=end, client=client, k=k)
        if not keep_detections(lake, found, start=start, end=end):
            announce("report: the detections table is not updated (this user cannot write the lake)")
        return write_reports(lake, found, place_ids, out=out, single=single, start=start, end=end, k=k, announce=announce,
                             client=client if asked or workers else None)


def cluster_for(scheduler: str | None, /, *, settings: S.Settings, workers: int | None = None, announce=print):
    """The Dask client a steward's job on ``lake`` runs on: ``scheduler`` (a tls:// one, TLS from the settings), else a local
    cluster (TLS with credentials made for the run). A plain-TCP cluster is refused (``analytics.cluster``)."""
    from citylake.analytics import dask_client

    return dask_client(scheduler, workers=workers or settings["analysis.workers"], memory_limit=settings["analysis.worker_memory"] or None,
                       security=cluster_security(settings), announce=announce)


def cluster_asked_for(scheduler: str | None, workers: int | None, settings: S.Settings) -> str | None:
    """The cluster a job asked for: ``--scheduler``; else a local one when ``--workers`` is given; else the setting. A
    plain-TCP one is refused now, before any work."""
    from citylake.analytics.cluster import refuse_plain_tcp

    chosen = scheduler or (None if workers else settings["analysis.scheduler"] or None)
    if chosen:
        refuse_plain_tcp(chosen)
    return chosen


def worker(scheduler: str, /, *, settings: S.Settings | None = None, memory_limit: str | None = None, name: str | None = None) -> None:
    """Run one Dask worker for ``scheduler`` (`citylake worker`), tuned as the local cluster's, until the scheduler goes."""
    from citylake.analytics.cluster import run_worker

    settings = settings or S.load()
    run_worker(scheduler, security=cluster_security(settings), memory_limit=memory_limit or settings["analysis.worker_memory"] or None,
               name=name)


def cluster_security(settings: S.Settings | None = None, /):
    """Dask's security settings for a ``tls://`` cluster from the ``analysis.tls_*`` settings (None when unset)."""
    from citylake.analytics.cluster import tls_security

    settings = settings or S.load()
    return tls_security(settings["analysis.tls_ca_file"], settings["analysis.tls_cert"], settings["analysis.tls_key"])


def detect(lake: Lake, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None, settings: S.Settings | None = None,
           scheduler: str | None = None, workers: int | None = None, k: int | None = None,
           announce: Callable[[str], None] = print) -> pl.DataFrame:
    """``citylake detect``: the batch detector over [start, end), its detections written to the ``detections`` table (the
    steward zone; rows overlapping the window replaced) and returned. Where the history cannot support a usual it says
    what is missing through ``announce``."""
    from citylake.analytics import detections

    lake.require_writable()
    found = analyse(lake, start=start, end=end, settings=settings, scheduler=scheduler, workers=workers, k=k, announce=announce)
    thin = found.history_needed(found.place_scores["place_id"].unique().to_list(), start, end)
    if thin:
        announce(f"detect: {thin}")
    return detections.save(lake, found, start=start, end=end)


def keep_detections(lake: Lake, analysis: Analysis, /, *, start: dt.datetime | None = None, end: dt.datetime | None = None) -> bool:
    """Keep a batch analysis's detections (a report's) in the ``detections`` table, as ``detect`` does; False when this
    user cannot write the lake (the report is still written)."""
    from citylake.analytics import detections
    from citylake.lake import NotWritable

    try:
        lake.require_writable()
    except NotWritable:
        return False
    detections.save(lake, analysis, start=start, end=end)
    return True


def place_ids_of(lake: Lake, category: str, /) -> list[str]:
    """The ids of every place of ``category``, sorted; refuses a category with no places."""
    from citylake.lake import registry
    from citylake.queries import BadFilter

    ids = registry.places(lake, categories=(category,), columns=("place_id",))["place_id"].sort().to_list()
    if not ids:
        raise BadFilter("category", category, 'no places of this category; see `citylake sql "SELECT DISTINCT category FROM places"`')
    return ids


# --- people results, by role: the steward's exact ones, everyone else's from the releases ------------------------


def footfall(lake: Lake, /, *, role: str = "analyst", by: str = "place", freq: str = "1h", res: int | None = None,
             filters: Filters | None = None, k: int | None = None, engine_name: str = S.DEFAULT_ENGINE, settings: S.Settings | None = None,
             scheduler: str | None = None, announce: Callable[[str], None] = print):
    """Footfall per place (or cell, or category) per bucket: for the steward (the key needed) exact and k-anonymous
    (``QueryResult``), on a Dask cluster at ``scheduler`` a task per day when given; for anyone else the release,
    filtered (``Released``)."""
    from citylake import queries
    from citylake.queries import released

    filters = _on_city_clock(lake, filters or queries.Filters())
    if _steward(lake, role, settings, k):
        if scheduler:
            from citylake.analytics.fanout import footfall_on_cluster

            with cluster_for(scheduler, settings=settings or S.load(), announce=announce) as client:
                return footfall_on_cluster(lake, client, by=by, freq=freq, res=res, filters=filters, k=k_for(lake, k, settings=settings))
        return queries.footfall(lake, by=by, freq=freq, res=res, filters=filters, k=k_for(lake, k, settings=settings),
                                engine_name=engine_name)
    return released.footfall(lake, by=by, freq=freq, res=res, filters=filters)


def stays(lake: Lake, /, *, filters: Filters, max_gap_s: int, min_dwell_s: int, engine_name: str = S.DEFAULT_ENGINE,
          settings: S.Settings | None = None, scheduler: str | None = None, announce: Callable[[str], None] = print):
    """Per-device stays (the steward's data; check the role first): on a Dask cluster at ``scheduler`` a task per span of
    days when given, the same stays as one process."""
    from citylake import queries

    if scheduler:
        from citylake.analytics.fanout import stays_on_cluster

        with cluster_for(scheduler, settings=settings or S.load(), announce=announce) as client:
            return stays_on_cluster(lake, client, filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s)
    return queries.stays(lake, filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s, engine_name=engine_name)


def od(lake: Lake, /, *, role: str = "analyst", freq: str = "1d", filters: Filters | None = None, k: int | None = None,
       max_gap_s: int = 30 * 60, min_dwell_s: int = 5 * 60, engine_name: str = S.DEFAULT_ENGINE, settings: S.Settings | None = None):
    """Flows between zones: for the steward exact and k-anonymous between the filters' places; for anyone else the
    release of flows between districts per day."""
    from citylake import queries
    from citylake.queries import released

    filters = _on_city_clock(lake, filters or queries.Filters())
    if _steward(lake, role, settings, k):
        found = queries.stays(lake, filters=filters, max_gap_s=max_gap_s, min_dwell_s=min_dwell_s, engine_name=engine_name)
        return queries.od(found, freq=freq, k=k_for(lake, k, settings=settings), engine_name=engine_name)
    if freq != "1d" or set(filters.categories) - {"district"}:
        raise queries.BadFilter("od", f"{freq}, {', '.join(filters.categories)}", "flows are released between districts per day; "
                                f"use --category district --freq 1d (or {released.STEWARD_HINT})")
    return released.od(lake, filters=queries.Filters(start=filters.start, end=filters.end, place_ids=filters.place_ids,
                                                     devices=filters.devices))


def profile(lake: Lake, /, *, role: str = "analyst", radius_m: float = 300.0, freq: str = "1h", filters: Filters | None = None,
            k: int | None = None, engine_name: str = S.DEFAULT_ENGINE, settings: S.Settings | None = None):
    """Each place's footfall beside its nearby sensors' readings, from the steward's exact footfall or the release."""
    from citylake import queries
    from citylake.queries import released

    filters = _on_city_clock(lake, filters or queries.Filters())
    if _steward(lake, role, settings, k):
        return queries.profile(lake, radius_m=radius_m, freq=freq, filters=filters, k=k_for(lake, k, settings=settings),
                               engine_name=engine_name)
    hourly = released.footfall(lake, by="place", freq=freq, filters=filters)
    table = queries.profile(lake, radius_m=radius_m, freq=freq, filters=filters, engine_name=engine_name, hourly=hourly.as_result()).table
    return released.Released(table, hourly.source)


def conditions(lake: Lake, /, *, role: str = "analyst", radius_m: float = 300.0, filters: Filters | None = None, k: int | None = None,
               engine_name: str = S.DEFAULT_ENGINE, settings: S.Settings | None = None) -> pl.DataFrame:
    """What sensors near each place read in its busy hours, the busy hours taken from the steward's exact footfall or
    from the release."""
    from citylake import queries
    from citylake.queries import released

    filters = _on_city_clock(lake, filters or queries.Filters())
    if _steward(lake, role, settings, k):
        return queries.conditions(lake, radius_m=radius_m, filters=filters, k=k_for(lake, k, settings=settings), engine_name=engine_name)
    hourly = released.footfall(lake, by="place", freq="1h", filters=filters).as_result()
    return queries.conditions(lake, radius_m=radius_m, filters=filters, engine_name=engine_name, hourly=hourly)


def _on_city_clock(lake: Lake, filters: Filters) -> Filters:
    """Hours of the day and weekdays as the city reads them: in the lake's time zone unless the filters name one."""
    import dataclasses

    return filters if filters.tz is not None else dataclasses.replace(filters, tz=lake.timezone)


def require_steward_role(lake: Lake, role: str, /, *, doing: str, settings: S.Settings | None = None) -> None:
    """For what only the steward does (per-device stays, stay points, reports on raw pings): refuses the analyst role."""
    from citylake.privacy import STEWARD, Refused, check_role

    if check_role(role) != STEWARD:
        raise Refused(f"{doing} reads per-device data and is not released; it is the steward's: --role steward, with the lake's key")
    steward_key(lake, settings=settings, doing=doing)


def _steward(lake: Lake, role: str, settings: S.Settings | None, k: int | None) -> bool:
    """Whether ``role`` is the (verified) steward; an analyst's --k is refused (a release's threshold is the steward's)."""
    from citylake.privacy import STEWARD, Refused, check_role

    if check_role(role) == STEWARD:
        steward_key(lake, settings=settings, doing="the steward role")
        return True
    if k is not None:
        raise Refused("--k sets the k of the steward's exact results; analysts read releases, whose threshold the steward sets "
                      "(pass --role steward with the lake's key)")
    return False


# --- the steward's privacy administration ---------------------------------------------------------------


def privacy_status(lake: Lake, /, *, settings: S.Settings | None = None) -> tuple[dict, pl.DataFrame]:
    """The lake's policy (without its check values) and the budget spent per day so far."""
    import dataclasses

    import polars as pl

    from citylake.lake import scan
    from citylake.privacy import read_policy

    steward_key(lake, settings=settings, doing="reading the privacy policy")
    policy = read_policy(lake)
    shown = {k: v for k, v in dataclasses.asdict(policy).items() if k not in ("epochs", "pending")}
    shown["key_epoch"] = policy.epoch
    spent = (scan(lake, "privacy_ledger").group_by("day").agg(pl.col("epsilon").sum(), pl.col("delta").sum(),
                                                             pl.col("release_id").n_unique().alias("releases")).sort("day").collect())
    return shown, spent


def change_policy(lake: Lake, /, *, settings: S.Settings | None = None, **values) -> dict:
    """Change some of the lake's policy values (the steward's); returns the values changed."""
    from citylake.privacy import read_policy, write_policy

    steward_key(lake, settings=settings, doing="changing the privacy policy")
    chosen = {name: value for name, value in values.items() if value is not None}
    write_policy(lake, read_policy(lake).changed(**chosen))
    return chosen


def rotate_key(lake: Lake, /, *, settings: S.Settings | None = None) -> int:
    """A new pseudonym key for the lake (a new epoch); returns the epoch."""
    from citylake.privacy import rotate_key as rotate

    return rotate(lake, key_file(lake, settings=settings))


# --- accounts of the served lake (`citylake serve`) ------------------------------------------------------


def add_user(lake: Lake, name: str, role: str, /, *, settings: S.Settings | None = None) -> str:
    """A new account of the served lake; returns its bearer token, which is shown only now (the steward's)."""
    from citylake.privacy import Accounts
    from citylake.server.pilots import forget

    steward_key(lake, settings=settings, doing="managing the server's accounts")
    token = Accounts(lake).add(name, role)
    forget(lake, name)  # nothing left from an earlier account of this name
    return token


def users(lake: Lake, /, *, settings: S.Settings | None = None) -> list:
    """The served lake's accounts (names, roles, areas; never tokens)."""
    from citylake.privacy import Accounts

    steward_key(lake, settings=settings, doing="listing the server's accounts")
    return Accounts(lake).list()


def revoke_user(lake: Lake, name: str, /, *, settings: S.Settings | None = None) -> None:
    """Remove an account; a running server refuses its token from the next request on."""
    from citylake.privacy import Accounts
    from citylake.server.pilots import forget

    steward_key(lake, settings=settings, doing="managing the server's accounts")
    Accounts(lake).revoke(name)
    forget(lake, name)  # a pilot's uploads, lake and report go with its account


def publish_reports(lake: Lake, reports: dict[str, Path], /, *, settings: S.Settings | None = None) -> list[Path]:
    """Hand written HTML district reports (by place id) to `citylake serve`'s planners (the steward's decision, like a
    release's)."""
    from citylake.server.reports import ReportShelf

    steward_key(lake, settings=settings, doing="publishing reports to planners")
    return ReportShelf(lake).shelve(reports)


def serve(lake: Lake, /, *, settings: S.Settings | None = None, announce: Callable[[str], None] = print) -> None:
    """Serve the lake over HTTP and Arrow Flight SQL until interrupted (``citylake.server``); the server holds the lake's
    key, so only its steward starts it."""
    from citylake.server import serve as run

    settings = settings or S.load()
    steward_key(lake, settings=settings, doing="serving the lake (the server answers as the steward decides)")
    run(lake, settings, announce=announce)

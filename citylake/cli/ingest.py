"""``citylake ingest``: files and live feeds into the lake, exactly once, bad rows quarantined with a reason."""

from __future__ import annotations

import time

import click

from citylake.cli.options import Context, options, pass_context
from citylake.cli.output import note, progress_wanted, say, status


@click.group()
def ingest() -> None:
    """Bring feeds into the lake: exactly once, bad rows quarantined with a reason.

    \b
    Every file is fingerprinted: re-ingesting it, or a file that overlaps it, adds nothing twice.
    A summary line follows each file; `citylake sql "SELECT * FROM quarantine"` shows what was set aside.
    """


def _each(ctx: Context, files: tuple[str, ...], ingest_one) -> None:
    """``ingest_one(lake, path, progress)`` for each file in turn, with its summary line."""
    from citylake import api

    api.check_inputs(files)
    lake = ctx.open(write=True)
    for path in files:
        say(ingest_one(lake, path, progress=progress_wanted()).line())


def _each_merged_once(ctx: Context, files: tuple[str, ...], ingest_one) -> None:
    """``_each`` for a row feed: ``ingest_one(lake, path, progress, compact)``; with several files, each lands unmerged
    and the partitions they touched are merged once at the end (each file merging them again rewrites them each time)."""
    from citylake import api

    if len(files) == 1:
        return _each(ctx, files, lambda lake, path, progress: ingest_one(lake, path, progress, True))
    api.check_inputs(files)
    lake, reports = ctx.open(write=True), []
    for path in files:
        reports.append(ingest_one(lake, path, progress_wanted(), False))
        say(reports[-1].line())
    started = time.perf_counter()
    with status(f"merging the files of the partitions these {len(files)} files touched…"):
        merged = api.merge_ingested(lake, reports)
    note(f"merged the files of {merged:,} partitions in {time.perf_counter() - started:.1f}s")


TZ = click.option("--tz", help="Time zone of timestamps that carry no offset (setting ingest.timezone; default UTC).")
tabular = options(  # FILES… with --map, --tz and --delimiter: what every row-per-record feed takes
    click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False)),
    click.option("--map", "mapping", metavar="PAIRS",
                 help="Rename source columns: target=source pairs, e.g. device_id=uid,ts=time,lat=y,lon=x."),
    TZ,
    click.option("--delimiter", help="CSV delimiter; sniffed from the header when not given."),
    pass_context,
)


on_cluster = options(
    click.option("--scheduler", metavar="tls://HOST:PORT", help="Ingest every FILE on this Dask cluster, in one commit (tls:// only: "
                 "the tasks carry the lake's storage keys and, for pings, the pseudonym key; workers: `citylake worker`)."),
    click.option("--workers", type=int, help="Ingest every FILE on a local Dask cluster of this many workers, in one commit."),
)


@ingest.command(name="pings")
@tabular
@on_cluster
def pings(ctx: Context, files: tuple[str, ...], mapping: str | None, tz: str | None, delimiter: str | None, scheduler: str | None,
          workers: int | None) -> None:
    """Device pings (CSV or Parquet: device_id, ts, lat, lon[, accuracy_m]) into `pings`.

    Device ids are replaced by keyed-hash pseudonyms before anything is written. With --scheduler or --workers the files
    are checked on a Dask cluster, a task per file (per ~2M rows of a Parquet file), and land in one commit; workers read
    them where they are: a path they share, or s3://BUCKET/KEY on the lake's store.

    \b
    Examples:
      citylake ingest pings pings-2026-11-01.csv --tz Asia/Shanghai --map device_id=uid
      citylake --lake s3://city/lake ingest pings s3://city/inbox/day-*.parquet --scheduler tls://10.0.0.5:8786
    """
    from citylake import api

    if _on_a_cluster(ctx, files, api.ingest_pings_on_cluster, mapping=mapping, tz=tz, delimiter=delimiter, scheduler=scheduler,
                     workers=workers):
        return
    _each_merged_once(ctx, files, lambda lake, path, progress, compact: api.ingest_pings(
        lake, path, settings=ctx.settings, mapping=mapping, tz=tz, delimiter=delimiter, progress=progress, compact=compact))


def _on_a_cluster(ctx: Context, files: tuple[str, ...], ingest_on_cluster, /, *, scheduler: str | None, workers: int | None,
                  **options) -> bool:
    """Ingest ``files`` on a Dask cluster when one was asked for (True); refuse an object-store input without one."""
    if scheduler or workers:
        lake = ctx.open(write=True)
        say(ingest_on_cluster(lake, list(files), settings=ctx.settings, scheduler=scheduler, workers=workers, announce=note,
                              **options).line())
        return True
    remote = [f for f in files if f.startswith("s3://")]
    if remote:
        raise click.UsageError(f"{remote[0]} is on object storage: ingest it on a Dask cluster (--scheduler or --workers), "
                               "whose workers read it there")
    return False


@ingest.command(name="sensors")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@pass_context
def sensors(ctx: Context, files: tuple[str, ...]) -> None:
    """The sensor registry (CSV/Parquet with sensor_id, kind, lat, lon[, unit, place_id], or GeoJSON points).

    Sensors are added or updated by sensor_id; each gets its cell and the place that contains
    it (or the nearest within 500 m). Other columns are kept as attributes.

    \b
    Example:
      citylake ingest sensors sensors.csv
    """
    from citylake import api

    _each(ctx, files, api.ingest_sensors)


@ingest.command(name="readings")
@tabular
@on_cluster
def readings(ctx: Context, files: tuple[str, ...], mapping: str | None, tz: str | None, delimiter: str | None, scheduler: str | None,
             workers: int | None) -> None:
    """Sensor readings (CSV, JSON Lines or Parquet: sensor_id, ts, metric, value) into `readings`.

    Readings of sensors not in the registry are quarantined: register them and ingest again. With --scheduler or
    --workers (the steward's: checked rows wait in the steward zone until the commit) the files are checked on a Dask
    cluster, as pings are, and land in one commit.

    \b
    Examples:
      citylake ingest readings readings-*.csv readings.jsonl
      citylake --lake s3://city/lake ingest readings s3://city/inbox/readings-*.parquet --scheduler tls://10.0.0.5:8786
    """
    from citylake import api

    if _on_a_cluster(ctx, files, api.ingest_readings_on_cluster, mapping=mapping, tz=tz, delimiter=delimiter, scheduler=scheduler,
                     workers=workers):
        return
    _each_merged_once(ctx, files, lambda lake, path, progress, compact: api.ingest_readings(
        lake, path, settings=ctx.settings, mapping=mapping, tz=tz, delimiter=delimiter, progress=progress, compact=compact))


@ingest.command(name="places")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--category", help="Category of every place in the file (else its 'category' column, else OSM tags).")
@click.option("--name-field", help="Column holding the place name (default: name).")
@click.option("--id-field", help="Column holding the source's id (default: id, osm_id, …; else a hash of the geometry).")
@click.option("--crs", help="CRS of a file that names none, e.g. EPSG:3067.")
@click.option("--layer", help="The one layer to read of a GeoPackage or other multi-layer file (default: every layer).")
@pass_context
def places(ctx: Context, files: tuple[str, ...], category: str | None, name_field: str | None, id_field: str | None,
           crs: str | None, layer: str | None) -> None:
    """Map data (GeoJSON, GeoParquet, Shapefile or .zip, GeoPackage, CSV with WKT or lat/lon, OSM .pbf) into `places`.

    Shapes are reprojected to EPSG:4326, flattened to 2D and repaired if invalid; each place is
    covered with H3 cells (place_cells), flagged interior or boundary. A shape whose cover would
    pass 10 million cells is quarantined. Every layer of a multi-layer file is read unless
    --layer names one.

    \b
    Example:
      citylake ingest places parks.geojson --category park --name-field NAME
    """
    from citylake import api

    _each(ctx, files, lambda lake, path, progress: api.ingest_places(lake, path, category=category, name_field=name_field,
                                                                    id_field=id_field, crs=crs, layer=layer, progress=progress))


@ingest.command(name="mqtt")
@click.option("--broker", required=True, metavar="mqtt://HOST:PORT", help="The MQTT broker.")
@click.option("--topic", required=True, help="Topic filter, e.g. 'city/sensors/#'.")
@click.option("--feed", type=click.Choice(["readings", "pings"]), default="readings", show_default=True,
              help="What the messages carry: sensor readings into `readings`, or device pings into `pings`.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds (default: run until Ctrl-C / SIGTERM).")
@click.option("--max-messages", type=int, help="Stop after this many messages.")
@click.option("--client-id", default="citylake-ingest", show_default=True,
              help="MQTT client id; the broker keeps unacknowledged messages for it across restarts.")
@TZ
@pass_context
def mqtt(ctx: Context, broker: str, topic: str, feed: str, max_seconds: float | None, max_messages: int | None, client_id: str,
         tz: str | None) -> None:
    """Live readings or pings from an MQTT broker, committed every N messages or T seconds.

    \b
    Each message is one JSON object or a JSON list of them:
      --feed readings  {"sensor_id", "ts", "metric", "value"}
                       e.g. {"sensor_id": "S0001", "ts": "2026-11-01T08:00:00Z", "metric": "pm25", "value": 31.5}
      --feed pings     {"device_id", "ts", "lat", "lon"[, "accuracy_m"]}
                       e.g. {"device_id": "a1b2c3", "ts": "2026-11-01T08:00:00Z", "lat": 31.2304, "lon": 121.4737}
    ts carries an offset or Z, or is local time in --tz, or epoch seconds/milliseconds; other keys are ignored.

    Pings' device ids are replaced by keyed-hash pseudonyms (the lake's key) before anything is written.
    Bad records are quarantined with a reason; each table's key drops repeats.
    Messages are acknowledged only once committed, so a crash or a broker restart loses nothing;
    a commit the lake refuses (a full disk) is tried again; SIGINT/SIGTERM flush what is held first.
    The partitions the feed touches are merged in the background every mqtt.compact_minutes.

    \b
    Example:
      citylake ingest mqtt --broker mqtt://localhost:1883 --topic 'city/sensors/#' --max-seconds 60
      citylake ingest mqtt --broker mqtt://localhost:1883 --topic 'city/pings/#' --feed pings
    """
    from citylake import api

    report = api.ingest_mqtt(ctx.open(write=True), broker, topic, feed=feed, settings=ctx.settings, client_id=client_id,
                             max_seconds=max_seconds, max_messages=max_messages, tz=tz, announce=note,
                             on_commit=lambda r: note(f"committed: {r.accepted:,} {r.table} so far"))
    say(report.line())


COMMANDS = (ingest,)

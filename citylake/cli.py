"""The ``citylake`` command.

User mistakes (a bad setting, an unknown table, a SQL error) print one line on stderr and
exit 1; a traceback means a bug in citylake.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from citylake import api
from citylake import settings as S
from h3_index.errors import CitylakeError

FORMATS = click.Choice(["table", "csv", "json"])
# Long lines stay whole when piped or logged; a pipe gets a wide page instead of 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class Context:
    def __init__(self, lake: str | None, config: str | None) -> None:
        self.settings = S.load(config=config, overrides={"lake": lake})

    def open(self):
        return api.open_lake(settings=self.settings)

    @property
    def lake_root(self) -> str:
        return str(self.settings["lake"])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--lake", metavar="DIR", help="Lake directory. Default: $CITYLAKE_LAKE, else ./citylake-data.")
@click.option("--config", metavar="FILE", help="Settings file. Default: $CITYLAKE_CONFIG, else ./citylake.toml if present.")
@click.version_option(package_name="citylake")
@click.pass_context
def cli(ctx: click.Context, lake: str | None, config: str | None) -> None:
    """citylake: a spatial lakehouse for city data.

    Feeds (map data, IoT sensors, device pings) land in Delta tables keyed by H3 cells
    and time; DuckDB and Polars query them with the same answers.

    \b
    Start here:
      citylake init                                    create the lake and the pseudonym key
      citylake generate-city --out city                a sample city as feed files
      citylake ingest places city/places.geojson       then sensors, readings, pings likewise
      citylake tables                                  what the lake holds
      citylake query footfall --category park          visitors per park per hour
      citylake sql "SELECT count(*) FROM pings"        anything else, in SQL
    """
    ctx.obj = Context(lake, config)


@cli.command()
@click.pass_obj
def init(ctx: Context) -> None:
    """Create the lake and its tables (safe to run again on an existing lake)."""
    from ingestion.pseudonym import KEY_ENV, create_key

    lake = api.init_lake(settings=ctx.settings)
    out.print(f"lake ready at {lake.root} (cell resolution {lake.cell_res}, partition resolution {lake.partition_res})")
    if not os.environ.get(KEY_ENV):
        key = create_key(ctx.settings["privacy.pseudonym_key_file"], lake_root=lake.root)
        out.print(f"pseudonym key: {key} (keep it outside the lake; back it up: without it pseudonyms change)")


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--as-of", metavar="VERSION|TIME", help="Show tables as of a time (ISO) or version.")
@click.pass_obj
def tables(ctx: Context, fmt: str, as_of: str | None) -> None:
    """Rows, files, bytes, partitions and version of every table (read from the Delta logs)."""
    lake = ctx.open()
    when = _as_of(as_of)
    rows = [vars(lake.stats(name, as_of=when)) for name in lake.names]
    _emit(pa.Table.from_pylist(rows), fmt, title=f"lake {lake.root}")


@cli.command()
@click.argument("query")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--as-of", metavar="TIME", help="Query the lake as it was at this ISO time.")
@click.option("--max-rows", default=1000, show_default=True, help="Rows to print in table format (0 for all).")
@click.option("--role", type=click.Choice(["analyst", "steward"]), default="analyst", show_default=True,
              help="analyst: read-only, no raw pings or quarantine, no files; steward: everything (needs the pseudonym key).")
@click.pass_obj
def sql(ctx: Context, query: str, fmt: str, as_of: str | None, max_rows: int, role: str) -> None:
    """Run SQL against the lake. Tables are views; h3_* and spatial ST_* functions are loaded.

    Analysts (the default role) get a read-only workspace: SELECT and EXPLAIN over places,
    place_cells, sensors, readings and batches, with no access to other files. Raw pings and the
    quarantine are for the steward role, which needs the pseudonym key.

    \b
    Example:
      citylake sql "SELECT h3_cell_to_string(h3_cell_to_parent(h3_cell, 7)) AS cell,
                           count(*) AS pings FROM pings GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    """
    lake = ctx.open()
    result = api.workspace(lake, role=role, as_of=as_of, settings=ctx.settings).sql(query)
    if result is None:
        return
    table = result.to_arrow_table()
    shown = table.slice(0, max_rows) if fmt == "table" and max_rows else table
    _emit(shown, fmt)
    if fmt == "table" and shown.num_rows < table.num_rows:
        click.echo(f"({table.num_rows:,} rows, first {shown.num_rows:,} shown; use --max-rows 0 or --format csv)", err=True)


@cli.command()
@click.option("--role", type=click.Choice(["analyst", "steward"]), default="analyst", show_default=True,
              help="Same roles as `citylake sql`.")
@click.option("--history", "history_file", default="~/.citylake_history", show_default=True, help="Where the shell keeps its history.")
@click.pass_obj
def shell(ctx: Context, role: str, history_file: str) -> None:
    """Interactive SQL over the lake: history, statements over several lines (end them with ;).

    Same rules as `citylake sql`: analysts read, and see no raw pings. Commands: .tables, .help, .quit.

    \b
    Example:
      citylake shell
      citylake> SELECT category, count(*) FROM places
           ...> GROUP BY 1;
    """
    from citylake.shell import Shell

    lake = ctx.open()
    Shell(api.workspace(lake, role=role, settings=ctx.settings), lake.names, emit=_emit, history_file=history_file).run()


@cli.command()
@click.option("--k", "k_anon", type=int, help="k for the published tables (default: setting privacy.k_anonymity).")
@click.option("--engine", "engine_name", type=click.Choice(["duckdb", "polars"]), default="duckdb", show_default=True)
@click.pass_obj
def publish(ctx: Context, k_anon: int | None, engine_name: str) -> None:
    """Recompute the k-anonymous aggregates analysts may read in SQL (a steward job; needs the pseudonym key).

    Writes footfall_hourly (per place and hour), footfall_cells_hourly (per resolution-9 cell and
    hour) and od_daily (trips between districts per day); each keeps only groups of at least k devices.

    \b
    Example (nightly):
      citylake publish && citylake sql "SELECT * FROM footfall_hourly ORDER BY devices DESC LIMIT 5"
    """
    from ingestion.pseudonym import load_key
    from queries.publish import publish as publish_aggregates

    load_key(ctx.settings["privacy.pseudonym_key_file"])  # reading raw pings is the steward's
    started = time.perf_counter()
    with out_status("computing the published aggregates…"):
        written = publish_aggregates(ctx.open(), k=_k(ctx, k_anon), engine_name=engine_name)
    rows = ", ".join(f"{name} {n:,} rows" for name, n in written.items())
    out.print(f"published {rows} in {time.perf_counter() - started:.1f}s")


@cli.group()
def maintain() -> None:
    """Table maintenance: compaction, vacuum, history."""


@maintain.command()
@click.argument("names", nargs=-1, metavar="[TABLE]...")
@click.option("--target-mb", type=int, help="Target file size in MiB (setting lake.target_file_mb).")
@click.pass_obj
def compact(ctx: Context, names: tuple[str, ...], target_mb: int | None) -> None:
    """Merge small files into large ones, one commit per table (all tables if none named)."""
    lake = ctx.open()
    target = target_mb or ctx.settings["lake.target_file_mb"]
    for name in names or lake.names:
        before = lake.stats(name)
        started = time.perf_counter()
        with out.status(f"compacting {name} ({before.files:,} files)…"):
            lake.compact(name, target_mb=target)
        after = lake.stats(name)
        out.print(f"{name}: {before.files:,} files → {after.files:,} in {time.perf_counter() - started:.1f}s (version {after.version})")


@maintain.command()
@click.argument("names", nargs=-1, metavar="[TABLE]...")
@click.option("--retention-hours", type=int, help="Keep files needed by versions younger than this (setting lake.vacuum_retention_hours).")
@click.option("--dry-run/--apply", default=True, show_default=True, help="List what would go, or delete it.")
@click.pass_obj
def vacuum(ctx: Context, names: tuple[str, ...], retention_hours: int | None, dry_run: bool) -> None:
    """Remove files no current or retained version needs (a dry run unless --apply)."""
    lake = ctx.open()
    hours = ctx.settings["lake.vacuum_retention_hours"] if retention_hours is None else retention_hours
    for name in names or lake.names:
        files = lake.vacuum(name, retention_hours=hours, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        out.print(f"{name}: {verb} {len(files):,} files")
        for path in files[:20] if dry_run else []:
            out.print(f"  {path}")
    if dry_run:
        out.print("dry run: nothing deleted; pass --apply to delete")


@maintain.command()
@click.argument("name", metavar="TABLE")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_obj
def history(ctx: Context, name: str, limit: int, fmt: str) -> None:
    """Commits of a table, newest first (version, time, operation, metrics)."""
    lake = ctx.open()
    rows = [_commit_row(commit) for commit in lake.history(name, limit=limit)]
    _emit(pa.Table.from_pylist(rows), fmt, title=f"history of {name}")


@cli.group()
def ingest() -> None:
    """Bring feeds into the lake: exactly once, bad rows quarantined with a reason.

    \b
    Every file is fingerprinted: re-ingesting it, or a file that overlaps it, adds nothing twice.
    A summary line follows each file; `citylake sql "SELECT * FROM quarantine"` shows what was set aside.
    """


def _progress() -> bool:
    return sys.stderr.isatty()


def _print_report(report) -> None:
    out.print(report.line(), highlight=False, soft_wrap=True)


MAP_HELP = "Rename source columns: target=source pairs, e.g. device_id=uid,ts=time,lat=y,lon=x."
TZ_HELP = "Time zone of timestamps that carry no offset (setting ingest.timezone; default UTC)."


def tabular_feed_options(command):
    """FILES… with --map, --tz and --delimiter: the options every row-per-record feed takes."""
    for option in reversed((
        click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False)),
        click.option("--map", "mapping", metavar="PAIRS", help=MAP_HELP),
        click.option("--tz", help=TZ_HELP),
        click.option("--delimiter", help="CSV delimiter; sniffed from the header when not given."),
        click.pass_obj,
    )):
        command = option(command)
    return command


@ingest.command(name="pings")
@tabular_feed_options
def ingest_pings_command(ctx: Context, files: tuple[str, ...], mapping: str | None, tz: str | None, delimiter: str | None) -> None:
    """Device pings (CSV or Parquet: device_id, ts, lat, lon[, accuracy_m]) into `pings`.

    Device ids are replaced by keyed-hash pseudonyms before anything is written.

    \b
    Example:
      citylake ingest pings pings-2026-11-01.csv --tz Asia/Shanghai --map device_id=uid
    """
    from ingestion.location import OPTIONAL, REQUIRED, ingest_pings, parse_mapping
    from ingestion.pseudonym import load_key

    lake = ctx.open()
    key = load_key(ctx.settings["privacy.pseudonym_key_file"])
    pairs = parse_mapping(mapping, (*REQUIRED, *OPTIONAL))
    for path in files:
        _print_report(ingest_pings(lake, path, key=key, mapping=pairs, tz=tz or ctx.settings["ingest.timezone"],
                                   delimiter=delimiter, batch_rows=ctx.settings["ingest.batch_rows"], progress=_progress()))


@ingest.command(name="sensors")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.pass_obj
def ingest_sensors_command(ctx: Context, files: tuple[str, ...]) -> None:
    """The sensor registry (CSV/Parquet with sensor_id, kind, lat, lon[, unit, place_id], or GeoJSON points).

    Sensors are added or updated by sensor_id; each gets its cell and the place that contains
    it (or the nearest within 500 m). Other columns are kept as attributes.

    \b
    Example:
      citylake ingest sensors sensors.csv
    """
    from ingestion.iot import ingest_sensors

    lake = ctx.open()
    for path in files:
        _print_report(ingest_sensors(lake, path, progress=_progress()))


@ingest.command(name="readings")
@tabular_feed_options
def ingest_readings_command(ctx: Context, files: tuple[str, ...], mapping: str | None, tz: str | None, delimiter: str | None) -> None:
    """Sensor readings (CSV, JSON Lines or Parquet: sensor_id, ts, metric, value) into `readings`.

    Readings of sensors not in the registry are quarantined: register them and ingest again.

    \b
    Example:
      citylake ingest readings readings-*.csv readings.jsonl
    """
    from ingestion.iot import READING_REQUIRED, ingest_readings
    from ingestion.validate import parse_mapping

    lake = ctx.open()
    pairs = parse_mapping(mapping, READING_REQUIRED)
    for path in files:
        _print_report(ingest_readings(lake, path, mapping=pairs, tz=tz or ctx.settings["ingest.timezone"], delimiter=delimiter,
                                      batch_rows=ctx.settings["ingest.batch_rows"], progress=_progress()))


@ingest.command(name="places")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--category", help="Category of every place in the file (else its 'category' column, else OSM tags).")
@click.option("--name-field", help="Column holding the place name (default: name).")
@click.option("--id-field", help="Column holding the source's id (default: id, osm_id, …; else a hash of the geometry).")
@click.option("--crs", help="CRS of a file that names none, e.g. EPSG:3067.")
@click.pass_obj
def ingest_places_command(ctx: Context, files: tuple[str, ...], category: str | None, name_field: str | None,
                          id_field: str | None, crs: str | None) -> None:
    """Map data (GeoJSON, GeoParquet, Shapefile or .zip, GeoPackage, CSV with WKT or lat/lon, OSM .pbf) into `places`.

    Shapes are reprojected to EPSG:4326 and repaired if invalid; each place is covered with
    H3 cells (place_cells), flagged interior or boundary.

    \b
    Example:
      citylake ingest places parks.geojson --category park --name-field NAME
    """
    from ingestion.map import ingest_places

    lake = ctx.open()
    for path in files:
        _print_report(ingest_places(lake, path, category=category, name_field=name_field, id_field=id_field, crs=crs,
                                    progress=_progress()))


@ingest.command(name="mqtt")
@click.option("--broker", required=True, metavar="mqtt://HOST:PORT", help="The MQTT broker.")
@click.option("--topic", required=True, help="Topic filter, e.g. 'city/sensors/#'.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds (default: run until Ctrl-C / SIGTERM).")
@click.option("--max-messages", type=int, help="Stop after this many messages.")
@click.option("--client-id", default="citylake-ingest", show_default=True,
              help="MQTT client id; the broker keeps unacknowledged messages for it across restarts.")
@click.option("--tz", help=TZ_HELP)
@click.pass_obj
def ingest_mqtt_command(ctx: Context, broker: str, topic: str, max_seconds: float | None, max_messages: int | None,
                        client_id: str, tz: str | None) -> None:
    """Live readings from an MQTT broker, committed every N messages or T seconds.

    Each message is a JSON reading {"sensor_id", "ts", "metric", "value"} or a list of them.
    Messages are acknowledged only once committed; SIGINT/SIGTERM flush what is held first.

    \b
    Example:
      citylake ingest mqtt --broker mqtt://localhost:1883 --topic 'city/sensors/#' --max-seconds 60
    """
    from ingestion.mqtt import ingest_mqtt

    lake = ctx.open()
    report = ingest_mqtt(
        lake, broker, topic, client_id=client_id, commit_messages=ctx.settings["mqtt.commit_messages"],
        commit_seconds=ctx.settings["mqtt.commit_seconds"], max_seconds=max_seconds, max_messages=max_messages,
        tz=tz or ctx.settings["ingest.timezone"], on_commit=lambda r: click.echo(f"committed: {r.accepted:,} readings so far", err=True),
    )
    _print_report(report)


@cli.group()
def query() -> None:
    """People–things–places questions, on DuckDB or Polars (same answers), k-anonymous."""


RESULT_OPTIONS = (
    click.option("--engine", "engine_name", type=click.Choice(["duckdb", "polars"]), default="duckdb", show_default=True),
    click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True),
    click.option("--out", type=click.Path(dir_okay=False), help="Write the result to this file instead of the screen."),
)


def _with(*options):
    """A decorator applying several click options, listed in --help in the order given."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


_result_options = _with(*RESULT_OPTIONS)  # --engine, --format and --out, as every query command has them
WINDOW_OPTIONS = (click.option("--from", "start", metavar="TIME", help="Start (ISO), inclusive."),
                  click.option("--to", "end", metavar="TIME", help="End (ISO), exclusive."))
_window_options = _with(*WINDOW_OPTIONS)  # --from and --to


K_OPTION = click.option("--k", "k_anon", type=int, help="k-anonymity for this result (default: setting "
                        "privacy.k_anonymity); lowering it is for the steward (needs the pseudonym key).")


@query.command(name="footfall")
@click.option("--by", type=click.Choice(["place", "category", "cell"]), default="place", show_default=True,
              help="Group by place, by place category, or by H3 cell.")
@click.option("--res", type=int, help="H3 resolution for --by cell (default: the lake's cell resolution).")
@click.option("--freq", type=click.Choice(["5min", "15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket.")
@click.option("--from", "start", metavar="TIME", help="Start (ISO, UTC unless it carries an offset), inclusive.")
@click.option("--to", "end", metavar="TIME", help="End (ISO), exclusive.")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Only this place (repeatable).")
@click.option("--category", "categories", multiple=True, help="Only places of this category (repeatable), e.g. park.")
@click.option("--hours", help="Hours of day (UTC): a range such as 9-17 or a list such as 8,12,18.")
@click.option("--weekdays", help="mon,tue,… or weekend / weekdays.")
@click.option("--bbox", metavar="XMIN,YMIN,XMAX,YMAX", help="Only pings inside this lon/lat box.")
@K_OPTION
@_result_options
@click.pass_obj
def query_footfall(ctx: Context, by: str, res: int | None, freq: str, start: str | None, end: str | None, place_ids: tuple[str, ...],
                   categories: tuple[str, ...], hours: str | None, weekdays: str | None, bbox: str | None, k_anon: int | None,
                   engine_name: str, fmt: str, out: str | None) -> None:
    """Pings and distinct devices per place (or category, or H3 cell) per time bucket.

    Pings in a place's interior cells count directly; pings in its boundary cells get an exact
    point-in-polygon test. Groups with fewer than k distinct devices (setting privacy.k_anonymity)
    are withheld, and how many is reported.

    \b
    Example: visitors of each park per hour last weekend
      citylake query footfall --category park --from 2026-11-07 --to 2026-11-09 --freq 1h
    """
    from queries import Filters, footfall
    from queries.filters import parse_hours, parse_weekdays

    filters = Filters(start=_when("--from", start), end=_when("--to", end), hours=parse_hours(hours),
                      weekdays=parse_weekdays(weekdays), bbox=_bbox(bbox), place_ids=place_ids, categories=categories)
    result = footfall(ctx.open(), by=by, freq=freq, res=res, filters=filters, k=_k(ctx, k_anon),
                      engine_name=engine_name)
    table = result.table
    if by == "cell":  # cells are integers in the lake, hex strings at the edges
        from h3_index import cells_to_strings

        table = table.append_column("cell", pa.array(cells_to_strings(table.column("h3_cell").to_numpy()), pa.string()))
    _write_result(table, fmt, out)
    click.echo(result.summary(), err=True)


@query.command(name="dwell")
@_window_options
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Only this place (repeatable).")
@click.option("--category", "categories", multiple=True, help="Only places of this category (repeatable).")
@click.option("--max-gap", default=30, show_default=True, help="Minutes of silence inside a place that end a stay.")
@click.option("--min-dwell", default=5, show_default=True, help="Minutes a stay must last to count.")
@click.option("--visits", "visits_freq", type=click.Choice(["15min", "1h", "1d"]), help="Show visits per place per bucket instead.")
@click.option("--save", is_flag=True, help="Also write the stays as the derived table `stays` (steward data: per device).")
@K_OPTION
@_result_options
@click.pass_obj
def query_dwell(ctx: Context, start: str | None, end: str | None, place_ids: tuple[str, ...], categories: tuple[str, ...],
                max_gap: int, min_dwell: int, visits_freq: str | None, save: bool, k_anon: int | None, engine_name: str, fmt: str,
                out: str | None) -> None:
    """How long people stay in places: visits, devices, median and p90 stay per place (k-anonymous).

    A stay is a run of one device's consecutive pings inside a place with no silence longer than
    --max-gap, lasting at least --min-dwell.

    \b
    Example: dwell in parks last weekend, and visits per hour
      citylake query dwell --category park --from 2026-11-07 --to 2026-11-09
      citylake query dwell --category park --visits 1h
    """
    from queries import Filters, dwell, save_stays, stays, visits

    lake = ctx.open()
    filters = Filters(start=_when("--from", start), end=_when("--to", end), place_ids=place_ids, categories=categories)
    found = stays(lake, filters=filters, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60, engine_name=engine_name)
    if save:
        version = save_stays(lake, found, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60)
        click.echo(f"stays: {found.height:,} rows written (version {version})", err=True)
    k = _k(ctx, k_anon)
    result = (visits(found, freq=visits_freq, k=k, engine_name=engine_name) if visits_freq
              else dwell(found, k=k, engine_name=engine_name))
    _write_result(result.table, fmt, out)
    click.echo(result.summary(), err=True)


@query.command(name="od")
@click.option("--category", "categories", multiple=True, help="Zones: places of this category (repeatable), e.g. district.")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Zones: these places (repeatable).")
@_window_options
@click.option("--freq", type=click.Choice(["1h", "1d"]), default="1d", show_default=True, help="Bucket of the departure time.")
@click.option("--cells", "cell_res", type=click.IntRange(0, 15), metavar="RES",
              help="Zones are H3 cells at RES instead of places; stays are stay points (--radius, --min-dwell).")
@click.option("--radius", default=200.0, show_default=True, help="With --cells: metres a device may wander and still stay.")
@click.option("--max-gap", default=30, show_default=True, help="Minutes of silence inside a zone that end a stay.")
@click.option("--min-dwell", default=5, show_default=True, help="Minutes a stay must last to count as a trip end.")
@K_OPTION
@_result_options
@click.pass_obj
def query_od(ctx: Context, categories: tuple[str, ...], place_ids: tuple[str, ...], start: str | None, end: str | None, freq: str,
             cell_res: int | None, radius: float, max_gap: int, min_dwell: int, k_anon: int | None, engine_name: str, fmt: str,
             out: str | None) -> None:
    """Origin–destination flows: trips between consecutive stays in different zones (k-anonymous).

    Zones should not overlap (one category such as district): a stay inside two overlapping
    zones at once would read as a trip between them.

    With --cells, zones are H3 cells and stays are stay points anywhere: runs of pings within
    --radius metres of their first for at least --min-dwell minutes.

    \b
    Examples: flows between districts per day; between resolution-7 cells
      citylake query od --category district --freq 1d
      citylake query od --cells 7 --radius 200 --min-dwell 15
    """
    from queries import Filters, od, od_cells, stay_points, stays

    filters = Filters(start=_when("--from", start), end=_when("--to", end), place_ids=place_ids, categories=categories)
    if cell_res is not None:
        points = stay_points(ctx.open(), radius_m=radius, min_dwell_s=min_dwell * 60, filters=filters, engine_name=engine_name)
        result = od_cells(points, res=cell_res, freq=freq, k=_k(ctx, k_anon), engine_name=engine_name)
        table = result.table
        for side in ("origin", "destination"):  # cells are integers in the lake, hex strings at the edges
            from h3_index import cells_to_strings

            table = table.set_column(table.schema.get_field_index(side), side,
                                     pa.array(cells_to_strings(table.column(side).to_numpy()), pa.string()))
        _write_result(table, fmt, out)
        click.echo(result.summary(), err=True)
        return
    found = stays(ctx.open(), filters=filters, max_gap_s=max_gap * 60, min_dwell_s=min_dwell * 60, engine_name=engine_name)
    result = od(found, freq=freq, k=_k(ctx, k_anon), engine_name=engine_name)
    _write_result(result.table, fmt, out)
    click.echo(result.summary(), err=True)


@query.command(name="near")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="Around this place (repeatable); with --of sensors, these sensors.")
@click.option("--category", "categories", multiple=True, help="Around places of this category (repeatable), e.g. expo.")
@click.option("--what", type=click.Choice(["sensors", "pois"]), default="sensors", show_default=True, help="What to look for.")
@click.option("--radius", default=300.0, show_default=True, help="Metres from the place's outline (0 inside it).")
@click.option("--knn", "k", type=int, help="Instead of a radius: the K nearest (from each place, or each sensor with --of sensors).")
@click.option("--of", "of", type=click.Choice(["places", "sensors"]), default="places", show_default=True,
              help="Whose neighbours --knn finds.")
@click.option("--readings", is_flag=True, help="Show what the nearby sensors read during each place's busy hours.")
@click.option("--from", "start", metavar="TIME", help="Start (ISO) for --readings, inclusive.")
@click.option("--to", "end", metavar="TIME", help="End (ISO) for --readings, exclusive.")
@K_OPTION
@_result_options
@click.pass_obj
def query_near(ctx: Context, place_ids: tuple[str, ...], categories: tuple[str, ...], what: str, radius: float, k: int | None,
               of: str, readings: bool, start: str | None, end: str | None, k_anon: int | None, engine_name: str, fmt: str,
               out: str | None) -> None:
    """Things near places: sensors or POIs within --radius metres, or the --knn nearest, with distances on the sphere.

    \b
    Examples:
      citylake query near --place places:expo --radius 300                 # sensors within 300 m of the expo hall
      citylake query near --category park --what pois --knn 3              # 3 nearest POIs of each park
      citylake query near --place places:expo --readings --from 2026-11-04 # what they read while the expo was busy
    """
    from queries import Filters, conditions
    from queries.near import near, nearest_things

    filters = Filters(start=_when("--from", start), end=_when("--to", end), place_ids=place_ids, categories=categories)
    lake = ctx.open()
    if readings:
        table = conditions(lake, radius_m=radius, filters=filters, k=_k(ctx, k_anon), engine_name=engine_name)
    elif k is not None:
        table = nearest_things(lake, of=of, what=what, k=k, filters=filters)
    else:
        table = near(lake, what=what, radius_m=radius, filters=filters)
    _write_result(table.to_arrow(), fmt, out)
    click.echo(f"{table.height:,} rows", err=True)


@query.command(name="profile")
@click.option("--place", "place_ids", multiple=True, metavar="ID", help="This place (repeatable).")
@click.option("--category", "categories", multiple=True, help="Places of this category (repeatable).")
@click.option("--radius", default=300.0, show_default=True, help="Sensors within this many metres of the place count as its own.")
@click.option("--freq", type=click.Choice(["15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket.")
@_window_options
@K_OPTION
@_result_options
@click.pass_obj
def query_profile(ctx: Context, place_ids: tuple[str, ...], categories: tuple[str, ...], radius: float, freq: str, start: str | None,
                  end: str | None, k_anon: int | None, engine_name: str, fmt: str, out: str | None) -> None:
    """People–things–places: footfall of each place per bucket beside its nearby sensors' mean readings.

    One column per metric (e.g. pm25, laeq, people_count); the correlation of devices with each
    metric is printed after the table. k-anonymous: buckets with fewer than k devices are absent.

    \b
    Example: the expo hall during the event, hourly
      citylake query profile --place places:expo --from 2026-11-04 --to 2026-11-06
    """
    import polars as pl

    from queries import Filters, correlations, profile

    filters = Filters(start=_when("--from", start), end=_when("--to", end), place_ids=place_ids, categories=categories)
    result = profile(ctx.open(), radius_m=radius, freq=freq, filters=filters, k=_k(ctx, k_anon),
                     engine_name=engine_name)
    _write_result(result.table, fmt, out)
    for row in correlations(pl.from_arrow(result.table)).filter(pl.col("buckets") >= 3).iter_rows(named=True):
        click.echo(f"{row['place_id']}: devices vs {row['metric']}: r = {row['r']} over {row['buckets']} buckets", err=True)
    click.echo(result.summary(), err=True)


ANALYSIS_OPTIONS = (
    *WINDOW_OPTIONS,
    click.option("--scheduler", metavar="tcp://HOST:PORT", help="Run on this Dask cluster (default: setting analysis.scheduler, "
                 "else a local cluster)."),
    click.option("--workers", type=int, help="Workers of the local cluster (default: setting analysis.workers)."),
)


_analysis_options = _with(*ANALYSIS_OPTIONS)


def _analyse(ctx: Context, lake, start, end, scheduler, workers):
    from analytics.cluster import dask_client
    from analytics.detect import analyse

    with dask_client(scheduler or ctx.settings["analysis.scheduler"] or None, workers=workers or ctx.settings["analysis.workers"],
                     memory_limit=ctx.settings["analysis.worker_memory"] or None,
                     announce=lambda text: click.echo(text, err=True)) as client:
        with out_status("analysing: series per day, baselines, anomalies, faults, hotspots…"):
            return analyse(lake, start=start, end=end, client=client)


@cli.command()
@click.option("--district", "place_ids", multiple=True, metavar="PLACE_ID", help="Report on this place (repeatable).")
@click.option("--category", help="One report per place of this category, e.g. district (batch mode).")
@click.option("--out", type=click.Path(), required=True,
              help="report.html or report.md for one place; a directory for several (with summary.json).")
@K_OPTION
@_analysis_options
@click.pass_obj
def report(ctx: Context, place_ids: tuple[str, ...], category: str | None, out: str, k_anon: int | None, start: str | None,
           end: str | None, scheduler: str | None, workers: int | None) -> None:
    """Decision-support summaries: what is unusual (events, sensor faults), hotspots, footfall and dwell,
    nearby sensors, flows in and out — k-anonymous, as HTML (figures embedded) or Markdown.

    \b
    Examples:
      citylake report --district places:expo --from 2026-11-04 --to 2026-11-06 --out expo.html
      citylake report --category district --out reports/        # one per district + reports/summary.json
    """
    from analytics.report import build, write, write_summary

    lake = ctx.open()
    if category:
        place_ids = tuple(scan_place_ids(lake, category))
    if not place_ids:
        raise click.UsageError("say which place: --district PLACE_ID (repeatable) or --category CATEGORY")
    begin, finish, k = _when("--from", start), _when("--to", end), _k(ctx, k_anon)
    analysis = _analyse(ctx, lake, begin, finish, scheduler, workers)
    single = len(place_ids) == 1 and Path(out).suffix.lower() in (".html", ".md")
    reports = []
    for place_id in place_ids:
        made = build(lake, analysis, place_id, start=begin, end=finish, k=k)
        target = Path(out) if single else Path(out) / f"{place_id.replace(':', '_')}.html"
        write(made, target)
        reports.append(made)
        click.echo(f"report: {target} — {made.headline['events']} events, {made.headline['sensor_faults']} sensor faults, "
                   f"{made.headline['hot_cells']} hot cells", err=True)
    if not single:
        click.echo(f"summary: {write_summary(reports, Path(out) / 'summary.json')}", err=True)


def scan_place_ids(lake, category: str) -> list[str]:
    import polars as pl

    from lake import scan

    ids = scan(lake, "places").filter(pl.col("category") == category).select("place_id").collect()["place_id"].sort().to_list()
    if not ids:
        raise click.UsageError(f"no places of category {category!r}; see `citylake sql \"SELECT DISTINCT category FROM places\"`")
    return ids


@cli.command()
@click.option("--boundary", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The pilot area (GeoJSON, Shapefile zip, GeoPackage…), one polygon.")
@click.option("--pois", type=click.Path(exists=True, dir_okay=False), help="The area's POIs (CSV with lat/lon or WKT, GeoJSON…).")
@click.option("--sensors", type=click.Path(exists=True, dir_okay=False), help="Sensor registry of the area.")
@click.option("--readings", type=click.Path(exists=True, dir_okay=False), help="Sensor readings.")
@click.option("--pings", type=click.Path(exists=True, dir_okay=False), help="Location-service pings.")
@click.option("--name", default="pilot", show_default=True, help="Name of the pilot area.")
@click.option("--out", type=click.Path(), default="pilot-report.html", show_default=True, help="The first report (.html or .md).")
@K_OPTION
@_analysis_options
@click.pass_obj
def pilot(ctx: Context, boundary: str, pois: str | None, sensors: str | None, readings: str | None, pings: str | None, name: str,
          out: str, k_anon: int | None, start: str | None, end: str | None, scheduler: str | None, workers: int | None) -> None:
    """District pilot in one command: load the area's boundary and its own data, index it, write its first report.

    \b
    Example:
      citylake pilot --boundary park.geojson --pois pois.csv --sensors sensors.csv --readings readings.csv \\
                     --pings pings.csv --name "Riverside Park" --out riverside.html
    """
    import geopandas as gpd

    from analytics.report import build, write
    from ingestion.iot import ingest_readings, ingest_sensors
    from ingestion.location import ingest_pings
    from ingestion.map import ingest_places
    from ingestion.pseudonym import load_key
    from lake import Lake

    # init opens an existing lake as it is
    lake = Lake.init(ctx.lake_root, cell_res=ctx.settings["h3.cell_resolution"], partition_res=ctx.settings["h3.partition_resolution"])
    area = gpd.read_file(boundary)
    if len(area) != 1:
        raise click.UsageError(f"{boundary} holds {len(area)} shapes; a pilot boundary is one polygon (dissolve it first)")
    slug = "pilot:" + "-".join(name.lower().split())
    framed = Path(out).with_suffix(".boundary.geojson")
    area.assign(id=slug.split(":", 1)[1], name=name, category="pilot").to_file(framed, driver="GeoJSON")
    steps = [("boundary", lambda: ingest_places(lake, framed, category="pilot", id_field="id"))]
    if pois:
        steps.append(("POIs", lambda: ingest_places(lake, pois)))
    if sensors:
        steps.append(("sensors", lambda: ingest_sensors(lake, sensors)))
    if readings:
        steps.append(("readings", lambda: ingest_readings(lake, readings)))
    if pings:
        steps.append(("pings", lambda: ingest_pings(lake, pings, key=load_key(ctx.settings["privacy.pseudonym_key_file"]))))
    for label, step in steps:
        click.echo(f"pilot: {label}: {step().line()}", err=True)
    framed.unlink(missing_ok=True)
    place_id = scan_place_ids(lake, "pilot")
    place_id = next((p for p in place_id if p.endswith(slug.split(":", 1)[1])), place_id[0])
    begin, finish = _when("--from", start), _when("--to", end)
    analysis = _analyse(ctx, lake, begin, finish, scheduler, workers)
    target = write(build(lake, analysis, place_id, start=begin, end=finish, k=_k(ctx, k_anon)), out)
    click.echo(f"pilot: first report at {target}", err=True)


@cli.group(name="map")
def map_group() -> None:
    """kepler.gl maps as HTML files that open offline (assets beside them in citylake-kepler/).

    With no tile server the layers draw on a plain background; --tiles URL (a MapLibre style
    JSON on your own tile server) draws a base map under them.
    """


MAP_OUT = click.option("--out", type=click.Path(dir_okay=False), required=True,
                       help="The file to write: footfall.html (interactive, offline) or footfall.png (static, for reports).")
MAP_TILES = click.option("--tiles", metavar="STYLE_URL", help="MapLibre style URL of your tile server (default: no base map).")


_map_options = _with(*WINDOW_OPTIONS, MAP_TILES, MAP_OUT)


def _write_map(view, out: str, tiles: str | None) -> None:
    from viz import write_html
    from viz.static import write_png

    path = write_png(view, out) if out.lower().endswith(".png") else write_html(view, out, tiles=tiles)
    layers = ", ".join(f"{layer.label} ({view.datasets[layer.data_id].height:,} rows)" for layer in view.layers)
    click.echo(f"map written to {path} — {layers}" + (f"; {view.note}" if view.note else ""), err=True)


@map_group.command(name="footfall")
@click.option("--res", default=9, show_default=True, type=click.IntRange(0, 15), help="H3 resolution of the hexagons.")
@click.option("--freq", type=click.Choice(["15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket to play back.")
@K_OPTION
@_map_options
@click.pass_obj
def map_footfall(ctx: Context, res: int, freq: str, k_anon: int | None, start: str | None, end: str | None,
                 tiles: str | None, out: str) -> None:
    """Devices per H3 cell per bucket as extruded hexagons with time playback (k-anonymous).

    \b
    Example:
      citylake map footfall --res 9 --freq 1h --from 2026-11-04 --to 2026-11-05 --out footfall.html
    """
    from queries import Filters
    from viz import footfall_map

    view = footfall_map(ctx.open(), res=res, freq=freq, filters=Filters(start=_when("--from", start), end=_when("--to", end)),
                        k=_k(ctx, k_anon))
    _write_map(view, out, tiles)


@map_group.command(name="readings")
@click.option("--metric", help="Only this metric, e.g. pm25 (default: all, coloured by value).")
@click.option("--freq", type=click.Choice(["15min", "1h", "1d"]), default="1h", show_default=True, help="Time bucket to play back.")
@_map_options
@click.pass_obj
def map_readings(ctx: Context, metric: str | None, freq: str, start: str | None, end: str | None, tiles: str | None, out: str) -> None:
    """Mean reading per sensor per bucket as coloured points with time playback.

    \b
    Example:
      citylake map readings --metric pm25 --out pm25.html
    """
    from queries import Filters
    from viz import readings_map

    _write_map(readings_map(ctx.open(), metric=metric, freq=freq, filters=Filters(start=_when("--from", start), end=_when("--to", end))),
               out, tiles)


@map_group.command(name="od")
@click.option("--category", default="district", show_default=True, help="Zones: places of this category.")
@click.option("--freq", type=click.Choice(["1h", "1d"]), default="1d", show_default=True, help="Bucket of the departure time.")
@K_OPTION
@_map_options
@click.pass_obj
def map_od(ctx: Context, category: str, freq: str, k_anon: int | None, start: str | None, end: str | None, tiles: str | None,
           out: str) -> None:
    """Trips between zones as arcs from origin to destination (k-anonymous).

    \b
    Example:
      citylake map od --category district --out flows.html
    """
    from queries import Filters
    from viz import od_map

    view = od_map(ctx.open(), category=category, freq=freq, filters=Filters(start=_when("--from", start), end=_when("--to", end)),
                  k=_k(ctx, k_anon))
    _write_map(view, out, tiles)


@map_group.command(name="hotspots")
@K_OPTION
@_analysis_options
@MAP_TILES
@MAP_OUT
@click.pass_obj
def map_hotspots(ctx: Context, k_anon: int | None, start: str | None, end: str | None, scheduler: str | None, workers: int | None,
                 tiles: str | None, out: str) -> None:
    """Hot and cold H3 cells (Getis-Ord Gi* of pings) from the situational analysis, coloured by z.

    \b
    Example:
      citylake map hotspots --from 2026-11-04 --to 2026-11-06 --out hotspots.html
    """
    from viz import hotspots_map

    lake = ctx.open()
    analysis = _analyse(ctx, lake, _when("--from", start), _when("--to", end), scheduler, workers)
    _write_map(hotspots_map(lake, analysis.hotspots, patterns=analysis.trends, k=_k(ctx, k_anon)), out, tiles)


@map_group.command(name="places")
@click.option("--category", "categories", multiple=True, help="Only places of this category (repeatable).")
@MAP_TILES
@MAP_OUT
@click.pass_obj
def map_places(ctx: Context, categories: tuple[str, ...], tiles: str | None, out: str) -> None:
    """Places as polygons coloured by category, and the sensors.

    \b
    Example:
      citylake map places --out places.html
    """
    from queries import Filters
    from viz import places_map

    _write_map(places_map(ctx.open(), filters=Filters(categories=categories)), out, tiles)


def _k(ctx: Context, asked: int | None) -> int:
    """The k for a people result: the setting, or --k; only the steward (the pseudonym key's holder) may go lower."""
    from ingestion.errors import NoPseudonymKey
    from ingestion.pseudonym import load_key
    from queries.sandbox import Refused

    floor = ctx.settings["privacy.k_anonymity"]
    if asked is None or asked >= floor:
        return floor if asked is None else asked
    try:
        load_key(ctx.settings["privacy.pseudonym_key_file"])
    except NoPseudonymKey:
        raise Refused(f"--k {asked} is below the lake's k-anonymity ({floor}); only the steward, who holds the pseudonym key, "
                      "may lower it") from None
    return asked


def _when(option: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO time such as 2026-11-07 or 2026-11-07T08:00Z", param_hint=option) from None


def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not four numbers xmin,ymin,xmax,ymax", param_hint="--bbox") from None
    return x0, y0, x1, y1


def _write_result(table: pa.Table, fmt: str, out: str | None) -> None:
    if fmt == "parquet":
        if not out:
            raise click.BadParameter("parquet needs a file: pass --out FILE", param_hint="--format")
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    elif out:
        with open(out, "w") as f, contextlib.redirect_stdout(f):
            _emit(table, "table" if fmt == "table" else fmt)
    else:
        _emit(table, fmt)


@cli.command(name="settings")
@click.pass_obj
def show_settings(ctx: Context) -> None:
    """Every setting, its value in force and where that value came from."""
    rows = [
        {"setting": s.name, "value": str(ctx.settings[s.name]), "from": ctx.settings.sources[s.name], "env": s.env_var, "help": s.help}
        for s in S.SETTINGS
    ]
    _emit(pa.Table.from_pylist(rows), "table")


@cli.command(name="generate-city")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write the feed files into.")
@click.option("--devices", default=2000, show_default=True, help="Devices whose pings to generate.")
@click.option("--days", default=7, show_default=True, help="Days of data.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same city.")
@click.option("--start", default="2026-11-02", show_default=True, help="First day (UTC).")
@click.option("--pings-format", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--mess", default=0.001, show_default=True, help="Share of rows duplicated or with swapped coordinates.")
def generate_city_command(out_dir: str, devices: int, days: int, seed: int, start: str, pings_format: str, mess: float) -> None:
    """Write a realistic sample city as feed files, with the injected events as truth.

    \b
    Writes places.geojson, sensors.csv, readings.csv, pings.csv|parquet, events.json, manifest.json.
    Example:
      citylake generate-city --out city --devices 2000 --days 7 --seed 1
      citylake ingest places city/places.geojson && citylake ingest sensors city/sensors.csv
      citylake ingest readings city/readings.csv && citylake ingest pings city/pings.csv
    """
    from ingestion.city import generate_city

    started = time.perf_counter()
    with out_status(f"generating a city of {devices:,} devices over {days} days…"):
        manifest = generate_city(out_dir, devices=devices, days=days, seed=seed, start=start, pings_format=pings_format, mess=mess)
    rows = ", ".join(f"{n:,} {t}" for t, n in manifest["rows"].items())
    out.print(f"city written to {out_dir} in {time.perf_counter() - started:.1f}s: {rows}; injected events in {out_dir}/events.json")


# Delta commit metrics worth a glance, by the names delta-rs gives them.
COMMIT_METRICS = ("num_added_files", "num_removed_files", "num_added_rows", "num_target_rows_inserted",
                  "num_target_rows_updated", "num_target_rows_deleted", "numFilesAdded", "numFilesRemoved",
                  "numDeletedFiles", "numFilesDeleted")


def _commit_row(commit: dict[str, Any]) -> dict[str, Any]:
    metrics = commit.get("operationMetrics") or {}
    details = {k: metrics[k] for k in COMMIT_METRICS if k in metrics}
    params = commit.get("operationParameters") or {}
    if "mode" in params:
        details["mode"] = params["mode"]
    for key in ("citylake.rows", "citylake.batch_id", "citylake.inserted", "citylake.duplicates"):
        if key in commit:
            details[key.removeprefix("citylake.")] = commit[key]
    return {
        "version": commit.get("version"),
        "time": dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
        "operation": commit.get("operation"),
        "details": ", ".join(f"{k}={v}" for k, v in details.items()),
    }


def out_status(text: str):
    return out.status(text) if sys.stderr.isatty() else contextlib.nullcontext()


def _as_of(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _emit(table: pa.Table, fmt: str, *, title: str | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps(table.to_pylist(), default=_json_value, indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        writer.writerows(tuple(row.values()) for row in table.to_pylist())
    else:
        grid = Table(title=title, show_lines=False)
        for name in table.column_names:
            grid.add_column(name, overflow="fold")
        for row in table.to_pylist():
            grid.add_row(*(_cell(v) for v in row.values()))
        out.print(grid)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) < 10**15 else str(value)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user mistakes into one line and exit code 1."""
    try:
        cli.main(args=argv, prog_name="citylake", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except (CitylakeError, duckdb.Error) as err:
        click.echo(f"citylake: error: {_one_line(err)}", err=True)
        return 1
    return 0


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    for marker in ("Python exception occurred while executing the UDF: ",):
        if marker in text:
            text = text.split(marker, 1)[1]
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip() and not line.startswith("At:"))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()

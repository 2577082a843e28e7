"""The ``citylake`` command.

User mistakes (a bad setting, an unknown table, a SQL error) print one line on stderr and
exit 1; a traceback means a bug in citylake.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import time
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
out = Console()


class Context:
    def __init__(self, lake: str | None, config: str | None) -> None:
        self.settings = S.load(config=config, overrides={"lake": lake})

    def open(self):
        return api.open_lake(settings=self.settings)


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
      citylake init                        create the lake
      citylake tables                      what it holds
      citylake sql "SELECT count(*) FROM pings"
    """
    ctx.obj = Context(lake, config)


@cli.command()
@click.pass_obj
def init(ctx: Context) -> None:
    """Create the lake and its tables (safe to run again on an existing lake)."""
    lake = api.init_lake(settings=ctx.settings)
    out.print(f"lake ready at {lake.root} (cell resolution {lake.cell_res}, partition resolution {lake.partition_res})")


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
@click.pass_obj
def sql(ctx: Context, query: str, fmt: str, as_of: str | None, max_rows: int) -> None:
    """Run SQL against the lake. Every table is a view; h3_* and spatial ST_* functions are loaded.

    \b
    Example:
      citylake sql "SELECT h3_cell_to_string(h3_cell_to_parent(h3_cell, 7)) AS cell,
                           count(*) AS pings FROM pings GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    """
    lake = ctx.open()
    con = api.connect(lake, as_of=as_of, settings=ctx.settings)
    result = con.sql(query)
    if result is None:
        return
    table = result.to_arrow_table()
    shown = table.slice(0, max_rows) if fmt == "table" and max_rows else table
    _emit(shown, fmt)
    if fmt == "table" and shown.num_rows < table.num_rows:
        click.echo(f"({table.num_rows:,} rows, first {shown.num_rows:,} shown; use --max-rows 0 or --format csv)", err=True)


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


@cli.command(name="settings")
@click.pass_obj
def show_settings(ctx: Context) -> None:
    """Every setting, its value in force and where that value came from."""
    rows = [
        {"setting": s.name, "value": str(ctx.settings[s.name]), "from": ctx.settings.sources[s.name], "env": s.env_var, "help": s.help}
        for s in S.SETTINGS
    ]
    _emit(pa.Table.from_pylist(rows), "table")


@cli.command(name="sample")
@click.option("--devices", default=2000, show_default=True, help="Devices whose pings to generate.")
@click.option("--days", default=2, show_default=True, help="Days of data.")
@click.option("--seed", default=7, show_default=True, help="Random seed: the same seed gives the same city.")
@click.pass_obj
def sample(ctx: Context, devices: int, days: int, seed: int) -> None:
    """Write a small sample city (parks, sensors, readings, pings) into the lake, replacing its tables."""
    from ingestion.sample import write_sample  # the CLI is the only caller; keep start-up light

    lake = api.init_lake(settings=ctx.settings)
    started = time.perf_counter()
    with out.status("generating sample city…"):
        counts = write_sample(lake, devices=devices, days=days, seed=seed)
    summary = ", ".join(f"{n:,} {t}" for t, n in counts.items())
    out.print(f"sample city written in {time.perf_counter() - started:.1f}s: {summary}")


# Delta commit metrics worth a planner's glance, by the name delta-rs gives them.
COMMIT_METRICS = ("num_added_files", "num_removed_files", "numFilesAdded", "numFilesRemoved", "num_output_rows",
                  "numDeletedFiles", "numFilesToDelete", "numFilesDeleted")


def _commit_row(commit: dict[str, Any]) -> dict[str, Any]:
    metrics = commit.get("operationMetrics") or {}
    details = {k: metrics[k] for k in COMMIT_METRICS if k in metrics}
    params = commit.get("operationParameters") or {}
    if "mode" in params:
        details["mode"] = params["mode"]
    if "citylake.rows" in commit:
        details["rows"] = commit["citylake.rows"]
    return {
        "version": commit.get("version"),
        "time": dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
        "operation": commit.get("operation"),
        "details": ", ".join(f"{k}={v}" for k, v in details.items()),
    }


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

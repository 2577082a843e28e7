"""Lake commands: init, tables, settings, maintain (compact, vacuum, check, history) and generate-city."""

from __future__ import annotations

import os
import time

import click

from citylake.cli.options import TABLE_FORMATS, Context, OutPath, pass_context
from citylake.cli.output import emit, rows, say, status


@click.command()
@click.option("--k-floor", type=int, help="Smallest group of devices any exact people result shows (default 10).")
@click.option("--epsilon-per-day", type=float, help="Privacy budget: the epsilon all releases of one day may spend together (default 1).")
@click.option("--delta-per-day", type=float, help="…and the delta (default 1e-6; 0 for pure epsilon-DP, Laplace noise).")
@click.option("--timezone", metavar="ZONE", help="The city's time zone, e.g. Asia/Shanghai (default UTC): reports, maps and hours "
              "of the day are read in it; rows stay in UTC. Given again, it changes.")
@pass_context
def init(ctx: Context, k_floor: int | None, epsilon_per_day: float | None, delta_per_day: float | None, timezone: str | None) -> None:
    """Create the lake, its zones and tables, its pseudonym key and its privacy policy (safe to run again: an
    existing lake keeps its own).

    The steward zone (raw pings, stays, quarantine, batches, the privacy ledger and policy) is readable by the
    lake's owner only; the shared tables and the releases by everyone who can reach the lake.
    """
    from citylake import api
    from citylake.privacy import Policy

    policy = Policy().changed(k_floor=k_floor, epsilon_per_day=epsilon_per_day, delta_per_day=delta_per_day)
    lake = api.init_lake(settings=ctx.settings, policy=policy, timezone=timezone)
    say(f"lake ready at {lake.uri} (cell resolution {lake.cell_res}, partition resolution {lake.partition_res}, "
        f"times read in {lake.timezone})")
    key, from_env = api.key_file(lake, settings=ctx.settings), bool(os.environ.get("CITYLAKE_PSEUDONYM_KEY"))
    if key.exists() or from_env:
        say(f"pseudonym key: {'$CITYLAKE_PSEUDONYM_KEY' if from_env else key} (the steward's: keep it outside the lake and back it "
            "up; without it the lake's pseudonyms cannot be made again)")
    else:
        say("this lake's pseudonym key is its steward's, and not here")


@click.command()
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option("--as-of", metavar="VERSION|TIME", help="Show tables as of a time (ISO) or version.")
@pass_context
def tables(ctx: Context, fmt: str, as_of: str | None) -> None:
    """Rows, files, bytes, partitions and version of every table (read from the Delta logs)."""
    lake = ctx.open()
    when = int(as_of) if as_of is not None and as_of.isdigit() else as_of
    emit(rows([vars(lake.stats(name, as_of=when)) for name in lake.readable_names]), fmt, title=f"lake {lake.uri}")


@click.command(name="settings")
@pass_context
def show_settings(ctx: Context) -> None:
    """Every setting, its value in force and where that value came from."""
    from citylake import settings as S

    emit(rows([{"setting": s.name, "value": ctx.settings.shown(s.name), "from": ctx.settings.sources[s.name], "env": s.env_var,
                "help": s.help} for s in S.SETTINGS]), "table")


@click.group()
def maintain() -> None:
    """Table maintenance: compaction, vacuum, history, and a check of the ingestion ledger."""


@maintain.command()
@click.argument("names", nargs=-1, metavar="[TABLE]...")
@click.option("--target-mb", type=int, help="Target file size in MiB (setting lake.target_file_mb).")
@pass_context
def compact(ctx: Context, names: tuple[str, ...], target_mb: int | None) -> None:
    """Merge small files into large ones, one commit per table (all tables if none named)."""
    lake = ctx.open(write=True)
    target = target_mb or ctx.settings["lake.target_file_mb"]
    for name in names or lake.readable_names:
        before = lake.stats(name)
        started = time.perf_counter()
        with status(f"compacting {name} ({before.files:,} files)…"):
            lake.compact(name, target_mb=target)
        after = lake.stats(name)
        say(f"{name}: {before.files:,} files → {after.files:,} in {time.perf_counter() - started:.1f}s (version {after.version})")


@maintain.command()
@click.argument("names", nargs=-1, metavar="[TABLE]...")
@click.option("--retention-hours", type=click.IntRange(0, 24 * 365 * 100),
              help="Keep files needed by versions younger than this (setting lake.vacuum_retention_hours).")
@click.option("--dry-run/--apply", default=True, show_default=True, help="List what would go, or delete it.")
@pass_context
def vacuum(ctx: Context, names: tuple[str, ...], retention_hours: int | None, dry_run: bool) -> None:
    """Remove files no current or retained version needs (a dry run unless --apply)."""
    lake = ctx.open(write=not dry_run)
    hours = ctx.settings["lake.vacuum_retention_hours"] if retention_hours is None else retention_hours
    for name in names or lake.readable_names:
        files = lake.vacuum(name, retention_hours=hours, dry_run=dry_run)
        say(f"{name}: {'would remove' if dry_run else 'removed'} {len(files):,} files")
        for path in files[:20] if dry_run else []:
            say(f"  {path}")
    if not names and lake.readable("pings"):
        from citylake import api

        runs = api.stopped_cluster_runs(lake, hours=hours, remove=not dry_run)
        say(f"staging: {'would remove' if dry_run else 'removed'} the rows of {len(runs):,} stopped cluster ingest(s)")
    if dry_run:
        say("dry run: nothing deleted; pass --apply to delete")


@maintain.command()
@click.option("--repair", is_flag=True, help="Write the batches rows a crash left out (from their commits), then check again.")
@pass_context
def check(ctx: Context, repair: bool) -> None:
    """Check that the ingestion ledger agrees with the tables: every committed chunk has its batches row and its
    quarantined lines, the counts match, every place has its cells. Exits 1 and lists any drift."""
    from citylake import api

    lake = ctx.open()
    api.steward_key(lake, settings=ctx.settings, doing="checking the ingestion ledger")
    with status("checking the ledger against the tables…"):
        drift = api.check_ledger(lake, repair=repair)
    for line in drift:
        say(f"drift: {line}")
    if drift:
        raise click.exceptions.Exit(1)
    say("ok: batches and quarantine agree with every table's commits; every place has its cells")


@maintain.command()
@click.argument("name", metavar="TABLE")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@pass_context
def history(ctx: Context, name: str, limit: int, fmt: str) -> None:
    """Commits of a table, newest first (version, time, operation, metrics)."""
    from citylake.lake import commit_summary

    emit(rows([commit_summary(commit) for commit in ctx.open().history(name, limit=limit)]), fmt, title=f"history of {name}")


@click.command(name="generate-city")
@click.option("--out", "out_dir", required=True, type=OutPath(dir_okay=True, file_okay=False, make_parents=True),
              help="Directory to write the feed files into.")
@click.option("--devices", default=2000, show_default=True, help="Devices whose pings to generate.")
@click.option("--days", default=7, show_default=True, help="Days of data.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same city.")
@click.option("--start", default="2026-11-02", show_default=True, help="First day (UTC).")
@click.option("--pings-format", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--mess", default=0.001, show_default=True, help="Share of rows duplicated or with swapped coordinates.")
def generate_city(out_dir: str, devices: int, days: int, seed: int, start: str, pings_format: str, mess: float) -> None:
    """Write a realistic sample city as feed files, with the injected events as truth.

    \b
    Writes places.geojson, sensors.csv, readings.csv, pings.csv|parquet, events.json, manifest.json.
    Example:
      citylake generate-city --out city --devices 2000 --days 7 --seed 1
      citylake ingest places city/places.geojson && citylake ingest sensors city/sensors.csv
      citylake ingest readings city/readings.csv && citylake ingest pings city/pings.csv
    """
    from citylake.ingestion import generate_city as generate

    started = time.perf_counter()
    with status(f"generating a city of {devices:,} devices over {days} days…"):
        manifest = generate(out_dir, devices=devices, days=days, seed=seed, start=start, pings_format=pings_format, mess=mess)
    made = ", ".join(f"{n:,} {t}" for t, n in manifest["rows"].items())
    say(f"city written to {out_dir} in {time.perf_counter() - started:.1f}s: {made}; injected events in {out_dir}/events.json")


COMMANDS = (init, tables, show_settings, maintain, generate_city)

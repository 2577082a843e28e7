"""The SQL workspace and what analysts read: sql, shell, publish."""

from __future__ import annotations

import time

import click

from citylake.cli.options import TABLE_FORMATS, Context, IsoTime, pass_context
from citylake.cli.output import emit, note, say, status

ROLE = click.option("--role", type=click.Choice(["analyst", "steward"]), default="analyst", show_default=True,
                    help="analyst: read-only, no raw pings or quarantine, no files; steward: everything (needs the pseudonym key).")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@click.option("--as-of", metavar="TIME", help="Query the lake as it was at this ISO time.")
@click.option("--max-rows", default=1000, show_default=True, help="Rows to print in table format (0 for all).")
@ROLE
@pass_context
def sql(ctx: Context, query: str, fmt: str, as_of: str | None, max_rows: int, role: str) -> None:
    """Run SQL against the lake. Tables are views; h3_* and spatial ST_* functions are loaded.

    Analysts (the default role) get a read-only workspace: SELECT and EXPLAIN over the shared
    tables (places, place_cells, sensors, readings) and the releases (footfall_hourly,
    footfall_cells_hourly, od_daily, releases), with no file access. Raw pings, stays, the quarantine,
    the batches and the privacy ledger are for the steward role, which needs the lake's key.

    \b
    Example:
      citylake sql "SELECT h3_cell_to_string(h3_cell_to_parent(h3_cell, 7)) AS cell,
                           count(*) AS pings FROM pings GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
    """
    from citylake import api

    result = api.workspace(ctx.open(), role=role, as_of=as_of, settings=ctx.settings).sql(query)
    if result is None:
        return
    table = result.to_arrow_table()
    shown = table.slice(0, max_rows) if fmt == "table" and max_rows else table
    emit(shown, fmt)
    if fmt == "table" and shown.num_rows < table.num_rows:
        note(f"({table.num_rows:,} rows, first {shown.num_rows:,} shown; use --max-rows 0 or --format csv)")


@click.command()
@click.option("--role", type=click.Choice(["analyst", "steward"]), default="analyst", show_default=True,
              help="Same roles as `citylake sql`.")
@click.option("--history", "history_file", default="~/.citylake_history", show_default=True, help="Where the shell keeps its history.")
@pass_context
def shell(ctx: Context, role: str, history_file: str) -> None:
    """Interactive SQL over the lake: history, statements over several lines (end them with ;).

    Same rules as `citylake sql`: analysts read, and see no raw pings. Commands: .tables, .help, .quit.

    \b
    Example:
      citylake shell
      citylake> SELECT category, count(*) FROM places
           ...> GROUP BY 1;
    """
    from citylake import api
    from citylake.cli import interrupts
    from citylake.shell import Shell

    interrupts.let_the_caller_handle()  # Ctrl-C cancels a statement, not the shell
    lake = ctx.open()
    Shell(api.workspace(lake, role=role, settings=ctx.settings), lake.names, emit=emit, history_file=history_file).run()


@click.command()
@click.option("--epsilon", type=float, help="Epsilon this release spends per day (default: the lake's budget per day less "
              "what live crowd alerts keep).")
@click.option("--delta", type=float, help="Delta it spends per day (default: the lake's; 0 for Laplace noise, pure epsilon-DP).")
@click.option("--from", "start", type=IsoTime(), help="First day to release (default: every day with pings).")
@click.option("--to", "end", type=IsoTime(), help="Day after the last one to release.")
@click.option("--engine", "engine_name", type=click.Choice(["duckdb", "polars"]), default="polars", show_default=True)
@click.option("--scheduler", metavar="tls://HOST:PORT", help="Compute each day on this Dask cluster, a task per day (tls:// "
              "only; workers: `citylake worker`).")
@click.option("--workers", type=int, help="Compute each day on a local Dask cluster of this many workers.")
@pass_context
def publish(ctx: Context, epsilon: float | None, delta: float | None, start, end, engine_name: str, scheduler: str | None,
            workers: int | None) -> None:
    """Release people data for analysts with differential privacy (a steward job; needs the lake's key).

    For each day: footfall_hourly (devices per place and hour), footfall_cells_hourly (devices per
    cell and hour) and od_daily (devices travelling between districts). Each device's contribution
    is bounded, OpenDP's noise is added on fixed public partitions, and only noisy counts of at least
    the lake's k floor are written. A release replaces the previous one of its days for readers. The
    budget ledger refuses a release that would take a day past the lake's budget (`citylake privacy show`).

    \b
    Example (nightly, yesterday at half the daily budget):
      citylake publish --from 2026-11-29 --to 2026-11-30 --epsilon 0.5
      citylake sql "SELECT * FROM footfall_hourly ORDER BY devices DESC LIMIT 5"
    """
    from citylake import api

    started = time.perf_counter()
    days = _days(start, end)
    with status("releasing…") as spinner:
        written = api.publish(ctx.open(write=True), epsilon=epsilon, delta=delta, days=days, engine_name=engine_name, settings=ctx.settings,
                              announce=lambda text: spinner.update(text) if spinner else None, scheduler=scheduler, workers=workers)
    made = ", ".join(f"{name} {n:,} rows" for name, n in written.items())
    say(f"released {made} in {time.perf_counter() - started:.1f}s")


def _days(start, end) -> list | None:
    """The UTC days from ``start`` up to (not including) ``end``; None (every day with pings) when neither is given."""
    import datetime as dt

    if start is None and end is None:
        return None
    if start is None or end is None:
        raise click.UsageError("give both --from and --to, or neither (every day with pings)")
    first, stop = start.date(), end.date()
    return [first + dt.timedelta(days=i) for i in range((stop - first).days)]


COMMANDS = (sql, shell, publish)

"""The SQL workspace and what analysts read: sql, shell, publish."""

from __future__ import annotations

import time

import click

from citylake.cli.options import TABLE_FORMATS, Context, pass_context
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

    Analysts (the default role) get a read-only workspace: SELECT and EXPLAIN over places,
    place_cells, sensors, readings and batches, with no access to other files. Raw pings and the
    quarantine are for the steward role, which needs the pseudonym key.

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
    from citylake.shell import Shell

    lake = ctx.open()
    Shell(api.workspace(lake, role=role, settings=ctx.settings), lake.names, emit=emit, history_file=history_file).run()


@click.command()
@click.option("--k", "k_anon", type=int, help="k for the published tables (default: setting privacy.k_anonymity).")
@click.option("--engine", "engine_name", type=click.Choice(["duckdb", "polars"]), default="duckdb", show_default=True)
@pass_context
def publish(ctx: Context, k_anon: int | None, engine_name: str) -> None:
    """Recompute the k-anonymous aggregates analysts may read in SQL (a steward job; needs the pseudonym key).

    Writes footfall_hourly (per place and hour), footfall_cells_hourly (per resolution-9 cell and
    hour) and od_daily (trips between districts per day); each keeps only groups of at least k devices.

    \b
    Example (nightly):
      citylake publish && citylake sql "SELECT * FROM footfall_hourly ORDER BY devices DESC LIMIT 5"
    """
    from citylake import api

    started = time.perf_counter()
    with status("computing the published aggregates…"):
        written = api.publish(ctx.open(), k=ctx.k(k_anon), engine_name=engine_name, settings=ctx.settings)
    made = ", ".join(f"{name} {n:,} rows" for name, n in written.items())
    say(f"published {made} in {time.perf_counter() - started:.1f}s")


COMMANDS = (sql, shell, publish)

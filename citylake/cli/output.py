"""How results reach the terminal or a file: a table on screen, CSV, JSON or Parquet; progress only on a terminal."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import sys
from typing import Any

import click

_console = None


def console():
    """rich's console, made on first use (importing rich costs time every --help would pay)."""
    global _console
    if _console is None:
        from rich.console import Console

        # Long lines stay whole when piped or logged; a pipe gets a wide page instead of 80 columns.
        _console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    return _console


def say(text: str) -> None:
    """A line of the command's own output (stdout)."""
    console().print(text, highlight=False, soft_wrap=True)


def note(text: str) -> None:
    """A line about the output (stderr), so a pipe gets only the data."""
    click.echo(text, err=True)


def status(text: str):
    """A spinner with ``text`` on a terminal; nothing when output is piped or logged."""
    return console().status(text) if sys.stderr.isatty() else contextlib.nullcontext()


def progress_wanted() -> bool:
    return sys.stderr.isatty()


def emit(table, fmt: str, *, title: str | None = None) -> None:
    """``table`` (pyarrow) on stdout as a grid, CSV or JSON."""
    if fmt == "json":
        click.echo(json.dumps(table.to_pylist(), default=_json_value, indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(table.column_names)
        writer.writerows(tuple(row.values()) for row in table.to_pylist())
    else:
        from rich.table import Table

        grid = Table(title=title, show_lines=False)
        for name in table.column_names:
            grid.add_column(name, overflow="fold")
        for row in table.to_pylist():
            grid.add_row(*(_cell(v) for v in row.values()))
        console().print(grid)


def write_result(table, fmt: str, out: str | None) -> None:
    """A query's result on screen, or into ``out`` (Parquet needs a file)."""
    if fmt == "parquet":  # with --out: the query options refuse parquet without it before the query runs
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    elif out:
        with open(out, "w") as f, contextlib.redirect_stdout(f):
            emit(table, fmt)
    else:
        emit(table, fmt)


def rows(records: list[dict[str, Any]]):
    """A list of records as a pyarrow table for ``emit``."""
    import pyarrow as pa

    return pa.Table.from_pylist(records)


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

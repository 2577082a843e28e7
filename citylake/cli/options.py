"""What many commands share: the context (settings, the lake), parameter types for ISO times and boxes, and the
option bundles (time window, place filters, k, result format, analysis cluster)."""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable
from pathlib import Path

import click

from citylake import settings as S


class Context:
    """The settings in force for one command line, and the lake they name."""

    def __init__(self, lake: str | None, config: str | None) -> None:
        self.settings = S.load(config=config, overrides={"lake": lake})

    def open(self, *, write: bool = False):
        """The lake; ``write=True`` (a command that changes it) refuses now, before any work, a lake this user cannot change."""
        from citylake import api

        lake = api.open_lake(settings=self.settings)
        if write:
            lake.require_writable()
        return lake

    def k(self, lake, asked: int | None) -> int:
        """The k of one of the steward's exact results: the lake's floor, or --k (the steward's key is checked)."""
        from citylake import api

        return api.k_for(lake, asked, settings=self.settings)


pass_context = click.make_pass_decorator(Context)


class IsoTime(click.ParamType):
    """An ISO date or time such as 2026-11-07 or 2026-11-07T08:00Z (UTC unless it carries an offset)."""

    name = "TIME"

    def convert(self, value, param, ctx) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO time such as 2026-11-07 or 2026-11-07T08:00Z", param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)  # a time without an offset is UTC


class Bbox(click.ParamType):
    """xmin,ymin,xmax,ymax in degrees of longitude and latitude."""

    name = "XMIN,YMIN,XMAX,YMAX"

    def convert(self, value, param, ctx) -> tuple[float, float, float, float]:
        if isinstance(value, tuple):
            return value
        try:
            x0, y0, x1, y1 = (float(v) for v in value.split(","))
        except ValueError:
            self.fail(f"{value!r} is not four numbers xmin,ymin,xmax,ymax", param, ctx)
        return x0, y0, x1, y1


class OutPath(click.Path):
    """A file (or directory) a command will write, checked when the command line is read, before any work: its directory
    must exist (or, with ``make_parents``, be creatable) and be writable, and a file must not be a directory."""

    def __init__(self, *, dir_okay: bool = False, file_okay: bool = True, make_parents: bool = False) -> None:
        super().__init__(dir_okay=dir_okay, file_okay=file_okay)
        self.make_parents = make_parents

    def convert(self, value, param, ctx) -> str:
        out = super().convert(value, param, ctx)
        path = Path(out)
        if path.exists():
            if not os.access(path, os.W_OK):
                self.fail(f"{out} is not writable by you; choose another file", param, ctx)
            return out
        parent = path.parent
        if not parent.is_dir():
            if not self.make_parents:
                self.fail(f"the directory {parent} does not exist; create it first (mkdir -p {parent}) or write elsewhere", param, ctx)
            parent = next(p for p in (parent, *parent.parents) if p.exists())
            if not parent.is_dir():
                self.fail(f"{parent} is a file, so {out} cannot be made; choose another path", param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"the directory {parent} is not writable by you; choose another path", param, ctx)
        return out


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, listed in --help in the order given."""
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


START = click.option("--from", "start", type=IsoTime(), help="Start (ISO, UTC unless it carries an offset), inclusive.")
END = click.option("--to", "end", type=IsoTime(), help="End (ISO), exclusive.")
window = options(START, END)
PLACES = click.option("--place", "place_ids", multiple=True, metavar="ID", help="Only this place (repeatable).")
CATEGORIES = click.option("--category", "categories", multiple=True, help="Only places of this category (repeatable), e.g. park.")
places = options(PLACES, CATEGORIES)
K = click.option("--k", "k_anon", type=int, help="With --role steward: k-anonymity of this exact result (default: the lake's "
                 "k floor, see `citylake privacy show`).")
ROLE = click.option("--role", type=click.Choice(["analyst", "steward"]), default="analyst", show_default=True,
                    help="analyst: the differentially private releases; steward: exact, k-anonymous results from raw pings "
                    "(needs the lake's pseudonym key).")
ENGINE = click.option("--engine", "engine_name", type=click.Choice(["duckdb", "polars"]), default=S.DEFAULT_ENGINE, show_default=True,
                      help="Query engine; both give the same answers, Polars is the faster on every shape measured.")
_result = options(
    ENGINE,
    click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True),
    click.option("--out", type=OutPath(), help="Write the result to this file instead of the screen."),
)


def result(command: Callable) -> Callable:
    """--engine, --format and --out; a format that needs a file is refused before the query runs."""
    @functools.wraps(command)
    def checked(*args, **kwargs):
        if kwargs["fmt"] == "parquet" and not kwargs["out"]:
            raise click.BadParameter("parquet needs a file: pass --out FILE", param_hint="'--format'")
        return command(*args, **kwargs)
    return _result(checked)
TABLE_FORMATS = click.Choice(["table", "csv", "json"])
analysis = options(
    START, END,
    click.option("--scheduler", metavar="tls://HOST:PORT", help="Run on this Dask cluster, tls:// only (default: setting "
                 "analysis.scheduler, else a local cluster; workers: `citylake worker`)."),
    click.option("--workers", type=int, help="Workers of the local cluster (default: setting analysis.workers)."),
)


def filters(*, start=None, end=None, place_ids=(), categories=(), hours=None, weekdays=None, bbox=None, tz=None):
    """The query filters from the options a command was given (hours and weekdays as typed: 9-17, weekend; on the clock of
    ``tz``, the lake's time zone, where given)."""
    from citylake.queries import Filters, parse_hours, parse_weekdays

    return Filters(start=start, end=end, place_ids=tuple(place_ids), categories=tuple(categories), hours=parse_hours(hours),
                   weekdays=parse_weekdays(weekdays), bbox=bbox, tz=tz)

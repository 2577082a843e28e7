"""``citylake detect``: the batch detector's decisions, machine-readable, and the ``detections`` table they are kept in."""

from __future__ import annotations

import click

from citylake.cli.options import K, OutPath, analysis, pass_context
from citylake.cli.output import note, write_result


@click.command()
@analysis
@K
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "parquet"]), default="table", show_default=True)
@click.option("--out", type=OutPath(make_parents=True), help="Write the detections to this file instead of the screen.")
@pass_context
def detect(ctx, start, end, scheduler: str | None, workers: int | None, k_anon: int | None, fmt: str, out: str | None) -> None:
    """Find crowd surges, traffic drops, unusual readings and sensor faults over a window, write them to the
    `detections` table and print them (kind, place, sensors, start, end, peak, severity, evidence).

    Each place's devices per hour are judged against the usual for that hour and kind of day (in the lake's time
    zone) learned from the window's other days: a crowd surge is at least k devices, twice the usual and far beyond
    its count noise. High severity: act on it. Where the history is too short it says how many more days it needs.
    Reads raw pings: the steward's command; the table is in the steward zone.

    \b
    Examples:
      citylake detect --from 2026-11-01 --to 2026-11-08 --format json --out detections.json
      citylake detect --format parquet --out detections.parquet
    """
    from citylake import api

    if fmt == "parquet" and not out:
        raise click.BadParameter("parquet needs a file: pass --out FILE", param_hint="'--format'")
    lake = ctx.open(write=True)
    found = api.detect(lake, start=start, end=end, settings=ctx.settings, scheduler=scheduler, workers=workers,
                       k=ctx.k(lake, k_anon), announce=note)
    if found.is_empty() and fmt == "table":
        note("detect: nothing unusual in the window")
        return
    shown = found.drop("computed_at") if fmt == "table" else found
    write_result(shown.to_arrow(), fmt, out)
    if out:
        note(f"detect: {found.height} detection(s) in {out}; kept in the detections table")


COMMANDS = (detect,)

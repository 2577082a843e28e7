"""``citylake watch`` and ``citylake alerts``: live detection over what lands in the lake, and the alerts it raised."""

from __future__ import annotations

import click

from citylake.cli.options import ROLE, START, TABLE_FORMATS, Context, pass_context
from citylake.cli.output import emit, note, say


@click.command()
@click.option("--broker", metavar="mqtt://HOST:PORT", help="Also publish each alert to this MQTT broker (retained, QoS 1).")
@click.option("--alerts-topic", default="citylake/alerts", show_default=True,
              help="Topic prefix of published alerts: each alert goes to <prefix>/<alert id>.")
@click.option("--max-seconds", type=float, help="Stop after this many seconds (default: run until Ctrl-C / SIGTERM).")
@pass_context
def watch(ctx: Context, broker: str | None, alerts_topic: str, max_seconds: float | None) -> None:
    """Raise live alerts as pings and readings land (from `citylake ingest mqtt` or any ingest).

    Every 5 minutes of event time it judges, per place, the distinct devices of the last 15 minutes
    against what is usual there at that quarter-hour on that kind of day (learned from the lake's
    last `watch.history_days` days), and per sensor its latest readings. Alerts:

    \b
      crowd surge    a place with at least the lake's k floor of devices, 2x its usual and far
                     beyond its noise (the innermost of nested places)
      sensor fault   an impossible value, a flat line, or an hour of silence
      traffic drop   a traffic counter under half its usual, twice in a row

    Each alert is one episode: one row of the steward's `alerts` table, updated as it grows and
    closed when it has been quiet (15 min for surges, 30 for drops, an hour for faults). Stopped
    and started again, it resumes where it stopped: no alert lost, none twice. It reads raw pings:
    the steward's command. Evidence gives ratios to the usual, never a count of people.

    Analysts and planners read `alerts_released`: the faults and drops, and crowd surges from a
    differentially private test each quarter-hour (devices in the last hour against twice the
    usual of the history's release, plus a margin for the noise; the lake's policy keeps
    `alert_epsilon` of each day's budget for it and allows `alert_most` such alerts a day). It
    needs the history published (`citylake publish`), and says so when it is not.

    \b
    Example:
      citylake watch --broker mqtt://localhost:1883 --alerts-topic city/alerts
      citylake alerts --open
    """
    from citylake import api

    lake = ctx.open(write=True)

    def progress(watcher, changed: int) -> None:
        if changed:
            note(f"watch: {changed} alert update(s); judged up to {watcher.checkpoint.evaluated:%Y-%m-%d %H:%M} UTC")

    written = api.watch(lake, settings=ctx.settings, broker=broker, alerts_topic=alerts_topic, max_seconds=max_seconds,
                        announce=note, on_poll=progress)
    say(f"watch stopped: {written} alert update(s) written")


@click.command()
@click.option("--open", "open_only", is_flag=True, help="Only alerts still open.")
@START
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["crowd surge", "sensor fault", "traffic drop"]),
              help="Only alerts of this kind (repeatable).")
@ROLE
@click.option("--format", "fmt", type=TABLE_FORMATS, default="table", show_default=True)
@pass_context
def alerts(ctx: Context, open_only: bool, start, kinds: tuple[str, ...], role: str, fmt: str) -> None:
    """The alerts `citylake watch` raised, newest first.

    As an analyst (the default): what analysts and planners read — sensor faults and traffic
    drops as raised, crowd surges from a differentially private test. With --role steward: every
    alert as judged on exact counts (k-anonymous crowds).

    \b
    Example:
      citylake alerts --open
      citylake alerts --from 2026-11-05 --kind "crowd surge" --format json
    """
    from citylake import api

    found = api.alerts(ctx.open(), role=role, open_only=open_only, since=start, kinds=kinds, settings=ctx.settings)
    if found.is_empty() and fmt == "table":
        seen = "" if role == "steward" else (" that analysts see (crowds reach them only through a differentially private "
                                            "test that large crowds pass; the key holder's `--role steward` shows every alert)")
        note("no alerts" + (" open" if open_only else "") + seen + "; `citylake watch` raises them as data lands")
        return
    emit(found.drop("updated_at").to_arrow() if fmt == "table" else found.to_arrow(), fmt, title="alerts")


COMMANDS = (watch, alerts)

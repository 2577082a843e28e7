"""``citylake replay``: a city's feed files published to MQTT in event-time order at a chosen speed, for tests and demos."""

from __future__ import annotations

import math

import click

from citylake.cli import interrupts
from citylake.cli.ingest import TZ
from citylake.cli.options import Context, pass_context, window
from citylake.cli.output import note, say

FILE = click.Path(exists=True, dir_okay=False)


class Speed(click.ParamType):
    """Event seconds per wall-clock second, or max (0): as fast as the broker takes them."""

    name = "SPEED"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            return value
        if str(value).strip().lower() == "max":
            return 0.0
        try:
            speed = float(value)
        except ValueError:
            speed = math.nan
        if not (speed >= 0 and math.isfinite(speed)):
            self.fail(f"{value!r} is not a speed: give event seconds per wall-clock second, such as 60, or max", param, ctx)
        return speed


@click.command()
@click.option("--broker", required=True, metavar="mqtt://HOST:PORT", help="The MQTT broker to publish to.")
@click.option("--pings", type=FILE, help="Pings file (CSV, JSON Lines or Parquet: device_id, ts, lat, lon[, accuracy_m]).")
@click.option("--pings-topic", default="city/pings", show_default=True, metavar="TOPIC", help="Topic of the pings.")
@click.option("--readings", type=FILE, help="Readings file (CSV, JSON Lines or Parquet: sensor_id, ts, metric, value).")
@click.option("--readings-topic", default="city/sensors/readings", show_default=True, metavar="TOPIC", help="Topic of the readings.")
@click.option("--speed", type=Speed(), default="60", show_default=True,
              help="Event seconds per wall-clock second (60: an hour of the city a minute); max or 0: as fast as the broker takes them.")
@window
@click.option("--batch-seconds", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Wall-clock seconds each message covers: it holds batch-seconds × speed of event time (a minute at max speed).")
@click.option("--max-rows", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows per message at most.")
@TZ
@pass_context
def replay(ctx: Context, broker: str, pings: str | None, pings_topic: str, readings: str | None, readings_topic: str, speed: float,
           start, end, batch_seconds: float, max_rows: int, tz: str | None) -> None:
    """Publish a city's pings and readings files to MQTT in event-time order, at SPEED times real time.

    For tests and demos: a live `citylake ingest mqtt` (and a detector) sees the city as it happens,
    an injected surge included. Rows of both files in [--from, --to) are sorted by time (the window is
    held in memory: 3M pings take some 800 MB) and go out as JSON lists of objects, the messages `ingest mqtt`
    reads, QoS 1, each message once the replay clock reaches its last row. Values are sent as the
    file holds them (raw device ids: this is the city's feed, not the lake). A line of progress goes to
    stderr every 10 s, a summary to stdout at the end; Ctrl-C stops and says where to go on.

    \b
    Example: the sample city's surge day (its events.json), an hour a minute
      citylake generate-city --out city --devices 2000 --days 7
      citylake ingest mqtt --broker mqtt://localhost:1883 --topic 'city/sensors/#'   # another terminal
      citylake replay --broker mqtt://localhost:1883 --pings city/pings.csv --readings city/readings.csv \\
          --from 2026-11-05T08:00Z --to 2026-11-05T18:00Z --speed 60
    """
    from citylake import api, ingestion

    if not (pings or readings):
        raise click.UsageError("give --pings FILE, --readings FILE or both")
    interrupts.explain("citylake: interrupted; replay stopped before any message was acknowledged")
    try:
        report = api.replay(broker, settings=ctx.settings, tz=tz, pings=pings, pings_topic=pings_topic, readings=readings,
                            readings_topic=readings_topic, speed=speed, start=start, end=end, batch_seconds=batch_seconds,
                            max_rows=max_rows, on_progress=lambda r: note(r.progress()))
    except ingestion.ReplayInterrupted as stopped:
        interrupts.explain(stopped.report.interrupted())
        raise
    say(report.line())


COMMANDS = (replay,)

"""Replay a city's feed files to MQTT in event-time order, at a chosen speed: a live feed for tests and demos.

``replay(broker, pings=…, readings=…, speed=60)`` reads the rows of the files whose time falls in [``start``,
``end``), sorts them by event time and publishes each feed to its topic as JSON lists of objects, the messages
``ingest mqtt`` reads: pings ``device_id, ts, lat, lon[, accuracy_m]``, readings ``sensor_id, ts, metric, value``.
Values go out as the file holds them: raw device ids (this is the city's feed, not the lake), times as written (a
typed Parquet time as ISO UTC), and a value whose text is a JSON number as that number.

Pacing: a message leaves when the replay clock, ``(event time − first event time) / speed`` of wall clock since the
start, reaches its last row. A message holds one slice of event time, ``batch_seconds × speed`` wide (a minute at
``speed=0``, as fast as the broker takes them), and at most ``max_rows`` rows. Within a topic messages are in event-time
order; across topics to within one slice. QoS 1, with at most ``INFLIGHT`` messages unacknowledged: a message the broker
does not take stops the replay with an error, never silently.

Memory: the window's rows are held, as their JSON text and time (some 100 bytes a ping), and sorted by an index, not a
copy; with the libraries and the reading's working copies a replay of 3M pings (7,000 devices over 7 days) peaked at
800 MB. Narrow the window with ``start``/``end`` for larger files.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import polars as pl

from citylake.ingestion import validate as V
from citylake.ingestion.errors import BadOption, UnreadableInput
from citylake.ingestion.iot import READING_REQUIRED
from citylake.ingestion.location import OPTIONAL as PING_OPTIONAL
from citylake.ingestion.location import REQUIRED as PING_REQUIRED
from citylake.ingestion.mqtt import CONNECT_TIMEOUT_S, Broker
from citylake.ingestion.textfile import chunks, columns

PINGS_TOPIC, READINGS_TOPIC = "city/pings", "city/sensors/readings"  # under the city/sensors/# the README's ingest example takes
SPEED = 60.0  # event seconds per wall-clock second: an hour of the city a minute
BATCH_SECONDS = 1.0  # wall clock between messages of a feed: each holds that slice of event time
MAX_ROWS = 1_000  # rows per message: a thousand pings are some 100 kB of JSON
READ_ROWS = 100_000  # rows read at a time: a chunk's working copies cost several times its rows' ~100 bytes each
UNPACED_SLICE_S = 60  # event seconds per message at full speed: small enough that the feeds stay interleaved
INFLIGHT = 100  # messages published but not yet acknowledged; then the replay waits for the broker
ACK_TIMEOUT_S = 30  # a broker that acknowledges nothing for this long is gone
PROGRESS_SECONDS = 10  # how often a long replay says how far it got
TS, JSON = "_ts", "_json"
ISO = "%Y-%m-%dT%H:%M:%S%.fZ"
JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
FIX = "replay publishes the columns under these names: rename them in the file"


@dataclass(frozen=True)
class Feed:
    """One file to replay, the topic its rows go to, and the columns of its messages."""

    name: str
    path: Path
    topic: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()  # published as JSON numbers where their text is one


def feeds_of(*, pings: str | Path | None, pings_topic: str, readings: str | Path | None, readings_topic: str) -> list[Feed]:
    """The feeds given, pings first."""
    feeds = []
    if pings is not None:
        feeds.append(Feed("pings", Path(pings), pings_topic, PING_REQUIRED, PING_OPTIONAL, numbers=("lat", "lon", "accuracy_m")))
    if readings is not None:
        feeds.append(Feed("readings", Path(readings), readings_topic, READING_REQUIRED, numbers=("value",)))
    return feeds


@dataclass
class ReplayReport:
    """What was published and acknowledged, and how long it took."""

    broker: str
    rows: dict[str, int] = field(default_factory=dict)  # per feed
    messages: int = 0
    skipped: int = 0  # rows of the files with no readable time (or no readable line): they have no place in event time
    first: dt.datetime | None = None  # event time of the window's first and last row
    last: dt.datetime | None = None
    reached: dt.datetime | None = None  # event time of the last row acknowledged
    resume: dt.datetime | None = None  # after an interruption: event time of the first row not acknowledged
    read_seconds: float = 0.0  # reading and sorting the files' window
    seconds: float = 0.0  # publishing, from the first message to the last acknowledgement (the pace of the replay)

    def line(self) -> str:
        total = sum(self.rows.values())
        feeds = ", ".join(f"{n:,} {name}" for name, n in self.rows.items())
        span = f"event time {_shown(self.first)} to {_shown(self.last)} ({_span(self.first, self.last)})" if self.first else "no rows"
        skipped = f"; {self.skipped:,} rows skipped (no readable time or line)" if self.skipped else ""
        return (f"replayed {total:,} rows ({feeds}) in {self.messages:,} messages to {self.broker}; {span} sent in "
                f"{self.seconds:.1f} s, after {self.read_seconds:.1f} s reading the files{skipped}")

    def progress(self) -> str:
        return (f"replay: event time {_shown(self.reached)}, {sum(self.rows.values()):,} rows in {self.messages:,} messages, "
                f"{self.seconds:.0f} s")

    def interrupted(self) -> str:
        """The one line for Ctrl-C: how far it got and how to go on."""
        sent = f"after {sum(self.rows.values()):,} rows in {self.messages:,} messages acknowledged"
        if self.resume is None:
            return f"citylake: interrupted; replay stopped {sent}"
        return (f"citylake: interrupted; replay stopped {sent}; go on with --from {_shown(self.resume, floor=True)} (rows of that "
                "second may go out again: the lake keeps each once)")


class ReplayInterrupted(KeyboardInterrupt):
    """Ctrl-C during a replay, with what was acknowledged by then."""

    def __init__(self, report: ReplayReport) -> None:
        super().__init__(report.interrupted())
        self.report = report


def replay(
    broker: str, /, *, pings: str | Path | None = None, pings_topic: str = PINGS_TOPIC, readings: str | Path | None = None,
    readings_topic: str = READINGS_TOPIC, speed: float = SPEED, start: dt.datetime | None = None, end: dt.datetime | None = None,
    batch_seconds: float = BATCH_SECONDS, max_rows: int = MAX_ROWS, tz: str = "UTC", client_id: str | None = None,
    on_progress: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Publish the rows of the ``pings`` and ``readings`` files with a time in [``start``, ``end``) to their topics in event-time
    order, ``speed`` times real time (0: as fast as the broker takes them); naive times in the files are read in ``tz``.
    Ctrl-C raises ``ReplayInterrupted``, which holds the report so far."""
    address = Broker.parse(broker)
    feeds = feeds_of(pings=pings, pings_topic=pings_topic, readings=readings, readings_topic=readings_topic)
    _check_options(feeds, speed=speed, start=start, end=end, batch_seconds=batch_seconds, max_rows=max_rows, tz=tz)
    found = {feed.name: columns(feed.path) for feed in feeds}  # every header before the broker and before any row is read
    for feed in feeds:
        V.check_columns(found[feed.name], {}, str(feed.path), feed.required, fix=FIX)
    client = _connect(address, client_id or f"citylake-replay-{uuid.uuid4().hex[:8]}")
    report = ReplayReport(str(address), rows={feed.name: 0 for feed in feeds})
    reading = time.monotonic()
    try:
        read = [_rows_in_window(feed, found[feed.name], start=start, end=end, tz=tz, report=report) for feed in feeds]
        windows = [rows for rows, _ in read]
        if not any(rows.times.size for rows in windows):
            raise _nothing_in_window(feeds, [span for _, span in read], start, end)
        report.read_seconds = time.monotonic() - reading
        width_s = batch_seconds * speed if speed else UNPACED_SLICE_S
        _publish(client, feeds, windows, report, speed=speed, width_us=int(width_s * 1e6), max_rows=max_rows, on_progress=on_progress)
    finally:
        client.disconnect()
        client.loop_stop()
    return report


def _check_options(feeds: list[Feed], *, speed: float, start, end, batch_seconds: float, max_rows: int, tz: str) -> None:
    if not feeds:
        raise BadOption("--pings/--readings", None, "give a pings file, a readings file or both")
    for feed in feeds:
        if not feed.topic or any(c in feed.topic for c in "#+"):
            raise BadOption(f"--{feed.name}-topic", feed.topic, "give a topic to publish to, such as city/pings (no # or + wildcards)")
    if not (speed >= 0 and np.isfinite(speed)):
        raise BadOption("--speed", speed, "give event seconds per wall-clock second, e.g. 60, or max (0)")
    if not batch_seconds > 0:
        raise BadOption("--batch-seconds", batch_seconds, "give a positive number of seconds, e.g. 1")
    if max_rows < 1:
        raise BadOption("--max-rows", max_rows, "give a positive number of rows per message, e.g. 1000")
    if start and end and _utc(start) >= _utc(end):
        raise BadOption("--to", _shown(end), f"it must come after --from {_shown(start)}")
    V.check_timezone(tz)


def _connect(address: Broker, client_id: str) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(INFLIGHT)
    connected, refused = threading.Event(), []

    def on_connect(c, userdata, flags, reason, properties):
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(address.host, address.port, keepalive=30)
    except OSError as err:
        raise UnreadableInput(str(address), f"cannot connect to the broker ({err}); is it running?") from None
    client.loop_start()
    if not connected.wait(CONNECT_TIMEOUT_S) or refused:
        client.loop_stop()
        why = f"the broker refused the connection ({refused[0]})" if refused else f"no answer within {CONNECT_TIMEOUT_S}s"
        raise UnreadableInput(str(address), f"{why}; check the address and that it takes anonymous clients")
    return client


@dataclass
class _Rows:
    """A feed's rows in the window, in event-time order without a sorted copy of their text: row ``i`` is at ``times[i]``
    (microseconds, sorted) and its JSON object is ``texts[order[i]]`` (ties keep their order in the file)."""

    times: np.ndarray
    order: np.ndarray
    texts: pl.Series

    def objects(self, a: int, b: int) -> list[str]:
        return self.texts.gather(self.order[a:b]).to_list()


def _rows_in_window(feed: Feed, found: list[str], *, start, end, tz: str,
                    report: ReplayReport) -> tuple[_Rows, tuple[dt.datetime, dt.datetime] | None]:
    """The feed's rows with a time in [start, end), and the first and last time of the whole file (None: no readable time);
    ``found``: the file's columns."""
    fields = [c for c in (*feed.required, *feed.optional) if c in found]
    parts, first, last = [], [], []
    for raw in chunks(feed.path, batch_rows=READ_ROWS):
        rows = pl.from_arrow(raw.rows.select(fields))
        times = V.timestamps(rows["ts"], tz)
        report.skipped += len(raw.rejected) + times.null_count()
        if times.null_count() < times.len():
            first.append(times.min())
            last.append(times.max())
        keep = times.is_not_null()
        if start:
            keep &= times >= _utc(start)
        if end:
            keep &= times < _utc(end)
        rows = rows.with_columns(times.alias(TS)).filter(keep)
        parts.append(rows.select(pl.col(TS).dt.epoch("us"), _json_objects(feed, fields, rows.schema).alias(JSON)))
    frame = pl.concat(parts, rechunk=False) if parts else pl.DataFrame(schema={TS: pl.Int64, JSON: pl.String})
    times = frame[TS].to_numpy()
    order = np.argsort(times, kind="stable")
    return _Rows(times[order], order, frame[JSON]), (min(first), max(last)) if first else None


def _nothing_in_window(feeds: list[Feed], spans: list, start, end) -> UnreadableInput:
    """No row to replay: say what times the files do hold."""
    files = ", ".join(str(feed.path) for feed in feeds)
    held = [span for span in spans if span]
    if not held:
        return UnreadableInput(files, "no row has a readable time (ISO with Z or an offset, naive in --tz, or epoch seconds)")
    window = f"[{_shown(start) if start else 'the start'}, {_shown(end) if end else 'the end'})"
    return UnreadableInput(files, f"no row falls in {window}; the files' times run from {_shown(min(s[0] for s in held))} to "
                           f"{_shown(max(s[1] for s in held))}: choose --from/--to within them")


def _json_objects(feed: Feed, fields: list[str], schema: pl.Schema) -> pl.Expr:
    """Each row as a JSON object of its fields: text as text, except a number column's text that is a JSON number."""
    values = [pl.col(TS).dt.to_string(ISO).alias(c) if c == "ts" and schema[c].is_temporal() else pl.col(c) for c in fields]
    text = pl.struct(values).struct.json_encode()
    for c in feed.numbers:
        if c in fields and schema[c] == pl.String:  # "lat":"31.2" → "lat":31.2 (keys are fixed, values escaped: one match)
            text = text.str.replace(f'([{{,])"{c}":"({JSON_NUMBER})"([,}}])', f'${{1}}"{c}":${{2}}${{3}}')
    return text


def _publish(client: paho.Client, feeds: list[Feed], windows: list[_Rows], report: ReplayReport, *, speed: float,
             width_us: int, max_rows: int, on_progress) -> None:
    times = [rows.times for rows in windows]
    first_us = min(int(t[0]) for t in times if t.size)
    report.first, report.last = _time(first_us), _time(max(int(t[-1]) for t in times if t.size))
    sender = _Sender(client, report, on_progress)
    upcoming = None  # the first row of the message waiting for its time
    try:
        for f, a, b in _plan(times, first_us, width_us, max_rows):
            upcoming = _time(times[f][a])
            if speed:
                sender.wait_until(sender.started + (times[f][b - 1] - first_us) / 1e6 / speed)
            payload = ("[" + ",".join(windows[f].objects(a, b)) + "]").encode()
            sender.send(feeds[f], payload, _Sent(feeds[f].name, b - a, upcoming, _time(times[f][b - 1])))
            upcoming = None
        sender.finish()
    except KeyboardInterrupt:
        report.resume = sender.pending[0].first if sender.pending else upcoming
        raise ReplayInterrupted(report) from None
    finally:
        report.seconds = time.monotonic() - sender.started


@dataclass
class _Sent:
    """A message published, not yet acknowledged: its feed, rows, and first and last row's time."""

    feed: str
    rows: int
    first: dt.datetime
    last: dt.datetime
    info: paho.MQTTMessageInfo | None = None


class _Sender:
    """Publishes messages (QoS 1, at most ``INFLIGHT`` unacknowledged) and counts each into the report once the broker has it."""

    def __init__(self, client: paho.Client, report: ReplayReport, on_progress) -> None:
        self.client, self.report, self.on_progress = client, report, on_progress
        self.pending: collections.deque[_Sent] = collections.deque()
        self.started = self.last_said = time.monotonic()

    def wait_until(self, due: float) -> None:
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(left, 1.0))
            self.tick()

    def send(self, feed: Feed, payload: bytes, sent: _Sent) -> None:
        sent.info = self.client.publish(feed.topic, payload, qos=1)
        self.pending.append(sent)
        while len(self.pending) >= INFLIGHT:
            self.acknowledged()
        self.tick()

    def finish(self) -> None:
        while self.pending:
            self.acknowledged()

    def tick(self) -> None:
        """Count what the broker has taken so far, without waiting; say how far the replay got now and then."""
        while self.pending and self.acknowledged(wait=False):
            pass
        now = time.monotonic()
        self.report.seconds = now - self.started
        if self.on_progress and now - self.last_said >= PROGRESS_SECONDS:
            self.last_said = now
            self.on_progress(self.report)

    def acknowledged(self, *, wait: bool = True) -> bool:
        """Count the oldest message once the broker has acknowledged it, waiting up to ``ACK_TIMEOUT_S`` if ``wait``; whether it
        has. A lost connection (paho raises) or a broker silent for that long ends the replay."""
        sent = self.pending[0]
        try:
            if wait:
                sent.info.wait_for_publish(ACK_TIMEOUT_S)
            taken = sent.info.is_published()
        except (RuntimeError, ValueError) as err:
            raise self._lost(sent, str(err)) from None
        if not taken:
            if wait:
                raise self._lost(sent, f"no acknowledgement for {ACK_TIMEOUT_S}s")
            return False
        self.pending.popleft()
        self.report.rows[sent.feed] += sent.rows
        self.report.messages += 1
        self.report.reached = sent.last
        return True

    def _lost(self, sent: _Sent, why: str) -> UnreadableInput:
        return UnreadableInput(self.report.broker, f"lost the broker ({why}); is it still running? {self.report.messages:,} messages "
                               f"were acknowledged: go on with --from {_shown(sent.first, floor=True)}")


def _plan(times: list[np.ndarray], first_us: int, width_us: int, max_rows: int) -> list[tuple[int, int, int]]:
    """The messages as (feed, first row, end row), in the order they leave: by their last row's time. A feed's message holds
    the rows of one slice of event time ``width_us`` wide, at most ``max_rows`` of them."""
    feed, starts, stops, due = [], [], [], []
    for f, t in enumerate(times):
        if not t.size:
            continue
        slices = (t - first_us) // width_us
        run_starts = np.flatnonzero(np.r_[True, slices[1:] != slices[:-1]])
        rank = np.arange(t.size) - np.repeat(run_starts, np.diff(np.r_[run_starts, t.size]))  # row's place in its slice
        begin = np.flatnonzero(rank % max_rows == 0)
        feed.append(np.full(begin.size, f))
        starts.append(begin)
        stops.append(np.r_[begin[1:], t.size])
        due.append(t[stops[-1] - 1])
    feed, starts, stops, due = (np.concatenate(a) for a in (feed, starts, stops, due))
    order = np.lexsort((starts, feed, due))
    return list(zip(feed[order].tolist(), starts[order].tolist(), stops[order].tolist()))


def _utc(when: dt.datetime) -> dt.datetime:
    """A time without an offset is UTC."""
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _time(micros) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(micros))


def _shown(when: dt.datetime | None, *, floor: bool = False) -> str:
    """ISO in UTC with Z; ``floor``: to the second below (a --from that misses nothing)."""
    if when is None:
        return "none"
    when = when.astimezone(dt.timezone.utc)
    if floor or not when.microsecond:
        when = when.replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def _span(first: dt.datetime, last: dt.datetime) -> str:
    seconds = (last - first).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"

"""Live feeds: subscribe to an MQTT broker and micro-batch sensor readings or device pings into the lake.

Each message is one JSON object, or a JSON list of them:

- ``feed="readings"`` (the default), into ``readings``:
  ``{"sensor_id": "S0001", "ts": "2026-11-01T08:00:00Z", "metric": "pm25", "value": 31.5}``;
  a reading of a sensor the registry does not know is quarantined.
- ``feed="pings"``, into ``pings``:
  ``{"device_id": "a1b2c3", "ts": "2026-11-01T08:00:00Z", "lat": 31.2304, "lon": 121.4737, "accuracy_m": 8.0}``
  (``accuracy_m`` optional). The device id is replaced by its keyed-hash pseudonym (the lake's key, ``key``) before
  anything is written: a quarantined ping shows ``pseudonym:<id>``, never the raw id, and a message that is no JSON,
  or a list member that is no object, is quarantined with its text withheld (``location.validate_pings``).

Values are checked as the file feeds check them (``ts`` with an offset or ``Z``, naive local time in ``tz``, or epoch
seconds/millis); other keys are ignored. Each record is quarantined under a row number of its own: its place in the
session (messages in arrival order, records in message order).

Messages are acknowledged to the broker only after the commit that holds them (QoS 1 with a persistent session), so
a crash loses nothing: the broker redelivers, and the table's key dedupe keeps a redelivered record from landing
twice. A commit that fails (a full disk, a lake briefly unwritable) is tried again, its messages still
unacknowledged, until it lands. A broker that goes away is waited for: the client reconnects and the broker resends
what was not acknowledged (a message is acknowledged only on the connection it came on). SIGINT/SIGTERM flush what
is held, then exit. The partitions the feed touches are merged in the background (``ingestion.compaction``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import paho.mqtt.client as paho
import pyarrow as pa
from deltalake.exceptions import DeltaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citylake.ingestion import ledger
from citylake.ingestion import location as pings
from citylake.ingestion.batch import BatchWriter, Chunk, IngestReport
from citylake.ingestion.compaction import Compactor
from citylake.ingestion.errors import BadOption, UnreadableInput
from citylake.ingestion.iot import READING_REQUIRED, sensor_cells, validate_readings
from citylake.ingestion.textfile import RawChunk, json_fields, parse_json
from citylake.ingestion.validate import EARLIEST, check_timezone, time_window
from citylake.lake import Lake

CONNECT_TIMEOUT_S = 10
SESSION_EXPIRY_S = 7 * 86400  # the broker keeps unacknowledged messages for a stopped ingester this long
COMMIT_MESSAGES = 5_000  # a commit every this many messages…
COMMIT_SECONDS = 10  # …or this many seconds: small files stay rare, readings land within seconds
COMPACT_MINUTES = 10  # touched partitions merged this often: a day's partition holds a few files, not thousands
MAX_RECEIVE = 65_535  # MQTT v5's largest Receive Maximum: a commit may hold at most this many messages
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # a failed commit is tried again after 1 s, then twice as long each time, at most 30 s
FIELDS = {"readings": READING_REQUIRED, "pings": (*pings.REQUIRED, *pings.OPTIONAL)}  # feed (and its table) → fields read


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Broker:
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise BadOption("--broker", url, "write it as mqtt://HOST:PORT")
        return cls(parsed.hostname, parsed.port or 1883)

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass
class Message:
    mid: int
    qos: int
    payload: bytes
    connection: int  # which connection it came on: its packet id means something only there


def ingest_mqtt(
    lake: Lake, broker: str, topic: str, /, *, feed: str = "readings", key: bytes | None = None, client_id: str = "citylake-ingest",
    commit_messages: int = COMMIT_MESSAGES, commit_seconds: float = COMMIT_SECONDS, max_seconds: float | None = None,
    max_messages: int | None = None, tz: str = "UTC", earliest: dt.date = EARLIEST, compact_seconds: float = COMPACT_MINUTES * 60,
    retention_hours: int = 168, target_mb: int = 128, on_commit: Callable[[IngestReport], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> IngestReport:
    """Subscribe and commit ``feed`` ("readings" or "pings", which needs the lake's pseudonym ``key``) every
    ``commit_messages`` messages or ``commit_seconds``, until ``max_seconds``/``max_messages`` or a SIGINT/SIGTERM;
    merge the touched partitions every ``compact_seconds`` (0: never) and vacuum files removed more than
    ``retention_hours`` ago. ``announce`` hears of compactions and of commits tried again."""
    validate = _validator(lake, feed, key=key, tz=tz, earliest=earliest)
    address = Broker.parse(broker)
    announce = announce or (lambda line: None)
    commit_messages = min(commit_messages, MAX_RECEIVE)
    ledger.repair(lake, feed)  # an ingester killed between a micro-batch's rows and its batches row left drift
    inbox: queue.Queue[Message] = queue.Queue()
    client, connection = _connect(address, topic, client_id, inbox, window=commit_messages)
    session = hashlib.sha256(f"{address}/{topic}/{client_id}/{time.time_ns()}".encode()).hexdigest()
    writer = BatchWriter(lake, feed, f"{address}/{topic}", session)
    records = itertools.count(1)
    stop = stop_on_signals()
    started, held, received, index = time.monotonic(), [], 0, 0
    last_commit = started

    def commit(held: list[Message], index: int) -> None:
        chunk = validate(_as_rows(held, FIELDS[feed], records), writer.source)
        _commit_until_landed(writer, index, chunk, stop, announce, held=len(held))
        _ack(client, held, connection())  # only now may the broker forget them
        compactor.touched(writer.take_touched())

    with Compactor(lake, feed, every_s=compact_seconds, retention_hours=retention_hours, target_mb=target_mb,
                   announce=announce) as compactor:
        try:
            while not stop.is_set():
                compactor.check()
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
                if max_messages is not None and received >= max_messages:
                    break
                try:
                    held.append(inbox.get(timeout=0.1))
                    received += 1
                except queue.Empty:
                    pass
                if held and (len(held) >= commit_messages or time.monotonic() - last_commit >= commit_seconds):
                    commit(held, index)
                    index, held, last_commit = index + 1, [], time.monotonic()
                    if on_commit:
                        on_commit(writer.report)
            if held:
                commit(held, index)
        finally:
            client.disconnect()
            client.loop_stop()
    if compactor.done.partitions or compactor.done.failures:
        writer.report.notes.append(compactor.done.note())
    writer.report.seconds = time.monotonic() - started
    return writer.report


def _validator(lake: Lake, feed: str, *, key: bytes | None, tz: str, earliest: dt.date) -> Callable[[RawChunk, str], Chunk]:
    """How a micro-batch of ``feed`` is checked; refuses an unknown feed, pings without the key, a bad time zone."""
    if feed not in FIELDS:
        raise BadOption("--feed", feed, f"choose one of {', '.join(FIELDS)}")
    check_timezone(tz)
    if feed == "pings":
        if not key:
            raise BadOption("--feed", feed, "pings are pseudonymised with the lake's key before anything is written; pass key=")
        return lambda raw, source: pings.validate_pings(raw, source, key=key, cell_res=lake.cell_res, mapping={}, tz=tz,
                                                        window=time_window(earliest))  # checked against now, batch by batch
    return lambda raw, source: validate_readings(raw, source, known=sensor_cells(lake), mapping={}, tz=tz,
                                                 window=time_window(earliest))


RETRIED = (OSError, DeltaError)  # a full disk (DiskFull), a lake made read-only (NotWritable), a failed Delta write


def _commit_until_landed(writer: BatchWriter, index: int, chunk: Chunk, stop: threading.Event, announce: Callable[[str], None], *,
                         held: int) -> None:
    """Commit the micro-batch, trying again while the lake refuses it; once stopped (SIGINT/SIGTERM), one last try."""
    delay = RETRY_FIRST_S
    while True:
        try:
            writer.commit(index, chunk)
            return
        except RETRIED as err:
            if stop.is_set():
                raise
            announce(f"{writer.table}: commit failed ({err}); {held:,} messages held unacknowledged, trying again in {delay:g}s")
            stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)


def _ack(client: paho.Client, held: list[Message], connection: int) -> None:
    """Acknowledge the committed messages that came on the current connection (the broker resends the others on it, and
    an old packet id may by now name another message); each packet id once."""
    for mid in dict.fromkeys(m.mid for m in held if m.qos and m.connection == connection):
        client.ack(mid, 1)


def _connect(address: Broker, topic: str, client_id: str, inbox: queue.Queue, *, window: int) -> tuple[paho.Client, Callable[[], int]]:
    """MQTT v5 with a persistent session, manual acks, and a Receive Maximum of one commit's worth: the broker may send
    that many messages before any is acknowledged (v3.1.1 brokers stop at ~20). The client reconnects by itself when
    the broker goes away. Returns the client and the number of its current connection."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    connect = Properties(PacketTypes.CONNECT)
    connect.ReceiveMaximum = window
    connect.SessionExpiryInterval = SESSION_EXPIRY_S
    subscribed = threading.Event()
    connections = itertools.count(1)
    current = [0]

    def on_connect(c, userdata, flags, reason, properties):
        if not reason.is_failure:
            current[0] = next(connections)
            c.subscribe(topic, qos=1)

    def on_message(c, userdata, msg):
        inbox.put(Message(msg.mid, msg.qos, msg.payload, current[0]))

    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(address.host, address.port, keepalive=30, clean_start=False, properties=connect)
    except OSError as err:
        raise UnreadableInput(str(address), f"cannot connect to the broker ({err}); is it running?") from None
    client.loop_start()
    if not subscribed.wait(CONNECT_TIMEOUT_S):
        client.loop_stop()
        raise UnreadableInput(str(address), f"no subscription to {topic!r} within {CONNECT_TIMEOUT_S}s")
    return client, lambda: current[0]


def _as_rows(held: list[Message], fields: tuple[str, ...], numbers: Iterator[int]) -> RawChunk:
    """Messages as text rows, one per record, each numbered from ``numbers``; a message that is no JSON, or a list
    member that is no object, is rejected with its text (no CSV: a pings feed withholds it)."""
    rows: dict[str, list] = {field: [] for field in fields}
    positions, rejected = [], []
    for message in held:
        text = message.payload.decode("utf-8", "replace")[:10_000]
        body, why = parse_json(message.payload)
        if why:
            rejected.append((next(numbers), text, f"message {why[0]}", why[1]))
            continue
        for record in body if isinstance(body, list) else [body]:
            values, why = json_fields(record, message.payload)
            if why:
                rejected.append((next(numbers), text, f"message {why[0]}" if record is body else f"a member of the message list {why[0]}",
                                 why[1]))
                continue
            for field in fields:
                rows[field].append(values.get(field))
            positions.append(next(numbers))
    table = pa.table({field: pa.array(values, pa.string()) for field, values in rows.items()})
    return RawChunk(table, np.asarray(positions, dtype=np.int64), rejected, delimiter=None)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    return stop

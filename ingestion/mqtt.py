"""Live feeds: subscribe to an MQTT broker and micro-batch readings or pings into the lake.

Each message carries one record, or a list of records, as JSON. A reading:
``{"sensor_id": "S0001", "ts": "2026-11-01T08:00:00Z", "metric": "pm25", "value": 31.5}``; a ping:
``{"device_id": "a81f…", "ts": "2026-11-01T08:00:03Z", "lat": 31.2304, "lon": 121.4737, "accuracy_m": 12}`` (accuracy_m
optional). Pings are checked exactly as a pings file's rows are and pseudonymised with the lake's key before anything
is written; a rejected ping is quarantined with its device id as the pseudonym, and a message that is not JSON is
quarantined withheld (its id cannot be separated from the rest).
Messages are acknowledged to the broker only after the commit that holds them (QoS 1 with a
persistent session), so a crash loses nothing: the broker redelivers, and the lake's key
dedupe keeps redelivered readings from landing twice. SIGINT/SIGTERM flush what is held, then exit.
"""

from __future__ import annotations

import hashlib
import json
import queue
import signal
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import paho.mqtt.client as paho
import pyarrow as pa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citylake.ingestion.batch import BatchWriter, IngestReport
from citylake.ingestion.errors import BadOption, UnreadableInput
from citylake.ingestion.iot import READING_REQUIRED, sensor_cells, validate_readings
from citylake.ingestion.location import OPTIONAL as PING_OPTIONAL
from citylake.ingestion.location import REQUIRED as PING_REQUIRED
from citylake.ingestion.location import WITHHELD, validate_pings
from citylake.ingestion.textfile import RawChunk
from citylake.ingestion.validate import time_window
from citylake.lake import Lake

CONNECT_TIMEOUT_S = 10
SESSION_EXPIRY_S = 7 * 86400  # the broker keeps unacknowledged messages for a stopped ingester this long
COMMIT_MESSAGES = 5_000  # a commit every this many messages…
COMMIT_SECONDS = 10  # …or this many seconds: small files stay rare, readings land within seconds
MAX_RECEIVE = 65_535  # MQTT v5's largest Receive Maximum: a commit may hold at most this many messages
FEEDS = {"readings": READING_REQUIRED, "pings": (*PING_REQUIRED, *PING_OPTIONAL)}  # the fields each feed's records carry


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
    seq: int
    mid: int
    qos: int
    payload: bytes


def ingest_mqtt(
    lake: Lake, broker: str, topic: str, /, *, client_id: str = "citylake-ingest", commit_messages: int = COMMIT_MESSAGES,
    commit_seconds: float = COMMIT_SECONDS, max_seconds: float | None = None, max_messages: int | None = None, tz: str = "UTC",
    on_commit=None, feed: str = "readings", key: bytes | None = None,
) -> IngestReport:
    """Subscribe and commit the ``feed``'s records (readings, or pings pseudonymised with ``key``) every
    ``commit_messages`` messages or ``commit_seconds``, until ``max_seconds``/``max_messages`` or a SIGINT/SIGTERM."""
    if feed not in FEEDS:
        raise BadOption("--feed", feed, f"use one of {', '.join(FEEDS)}")
    if feed == "pings" and key is None:
        raise BadOption("--feed", feed, "pings need the lake's pseudonym key")
    address = Broker.parse(broker)
    commit_messages = min(commit_messages, MAX_RECEIVE)
    inbox: queue.Queue[Message] = queue.Queue()
    client = _connect(address, topic, client_id, inbox, window=commit_messages)
    session = hashlib.sha256(f"{address}/{topic}/{client_id}/{time.time_ns()}".encode()).hexdigest()
    writer = BatchWriter(lake, feed, f"{address}/{topic}", session)
    stop = stop_on_signals()
    started, held, received, index = time.monotonic(), [], 0, 0
    last_commit = started
    try:
        while not stop.is_set():
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
                _commit(lake, writer, client, held, index, tz, feed, key)
                index, held, last_commit = index + 1, [], time.monotonic()
                if on_commit:
                    on_commit(writer.report)
        if held:
            _commit(lake, writer, client, held, index, tz, feed, key)
    finally:
        client.disconnect()
        client.loop_stop()
    writer.report.seconds = time.monotonic() - started
    return writer.report


def _connect(address: Broker, topic: str, client_id: str, inbox: queue.Queue, *, window: int) -> paho.Client:
    """MQTT v5 with a persistent session, manual acks, and a Receive Maximum of one commit's worth:
    the broker may send that many messages before any is acknowledged (v3.1.1 brokers stop at ~20)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True)
    connect = Properties(PacketTypes.CONNECT)
    connect.ReceiveMaximum = window
    connect.SessionExpiryInterval = SESSION_EXPIRY_S
    subscribed = threading.Event()
    seq = iter(range(1, 1 << 62))

    def on_connect(c, userdata, flags, reason, properties):
        if not reason.is_failure:
            c.subscribe(topic, qos=1)

    def on_message(c, userdata, msg):
        inbox.put(Message(next(seq), msg.mid, msg.qos, msg.payload))

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
    return client


def _commit(lake: Lake, writer: BatchWriter, client: paho.Client, held: list[Message], index: int, tz: str, feed: str,
            key: bytes | None) -> None:
    window = time_window()  # the live feed checks against now, message by message
    rows = _as_rows(held, FEEDS[feed], withhold=feed == "pings")
    if feed == "pings":
        chunk = validate_pings(rows, writer.source, key=key, cell_res=lake.cell_res, mapping={}, tz=tz, window=window)
    else:
        chunk = validate_readings(rows, writer.source, known=sensor_cells(lake), mapping={}, tz=tz, window=window)
    writer.commit(index, chunk)
    for message in held:  # only now may the broker forget them
        if message.qos:
            client.ack(message.mid, message.qos)


def _as_rows(held: list[Message], fields: tuple[str, ...], *, withhold: bool = False) -> RawChunk:
    """Messages as text rows (one per record); unreadable messages rejected with their sequence number (their text
    withheld when it may hold a device id)."""
    rows: dict[str, list] = {c: [] for c in fields}
    positions, rejected = [], []
    for message in held:
        text = WITHHELD if withhold else message.payload.decode("utf-8", "replace")
        try:
            body = json.loads(message.payload)
        except ValueError:
            rejected.append((message.seq, text[:10_000], "message is not valid JSON", "not JSON"))
            continue
        for record in body if isinstance(body, list) else [body]:
            if not isinstance(record, dict):
                rejected.append((message.seq, text[:10_000], "message is not a JSON object or list of objects", "not a JSON object"))
                continue
            for column in fields:
                value = record.get(column)
                rows[column].append(None if value is None else value if isinstance(value, str) else json.dumps(value))
            positions.append(message.seq)
    table = pa.table({c: pa.array(v, pa.string()) for c, v in rows.items()})
    return RawChunk(table, np.asarray(positions, dtype=np.int64), rejected, delimiter=None)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    return stop

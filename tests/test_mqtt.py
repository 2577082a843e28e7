"""The live MQTT feed against a real Mosquitto broker."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho
import polars as pl
import pytest
from conftest import TEST_KEY, make_pings, with_key

from citylake.ingestion.iot import ingest_sensors
from citylake.ingestion.mqtt import ingest_mqtt
from citylake.lake import duckdb_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def publisher(broker: str, topic: str) -> Iterator[Callable[[list], None]]:
    """One publishing connection for a stream of messages: ``send(payloads)`` publishes each with QoS 1 and waits for it."""
    host, port = broker.removeprefix("mqtt://").split(":")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(host, int(port))
    client.loop_start()

    def send(payloads: list) -> None:
        for payload in payloads:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            client.publish(topic, body, qos=1).wait_for_publish(timeout=10)

    try:
        yield send
    finally:
        client.loop_stop()
        client.disconnect()


def publish(broker: str, topic: str, payloads: list) -> None:
    with publisher(broker, topic) as send:
        send(payloads)


def reading(sensor: str, minute: int, value: float = 1.0) -> dict:
    return {"sensor_id": sensor, "ts": f"2026-11-01T00:{minute:02d}:00Z", "metric": "laeq", "value": value}


@pytest.fixture
def sensor_lake(lake, tmp_path):
    (tmp_path / "s.csv").write_text("sensor_id,kind,unit,lat,lon\nS1,noise,dB,31.2,121.4\nS2,noise,dB,31.3,121.5\n")
    ingest_sensors(lake, tmp_path / "s.csv")
    return lake


def start_ingester(lake, broker: str, topic: str, client_id: str, *, feed: str = "readings", commit_messages: int = 5000,
                   commit_seconds: int = 3600, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`citylake ingest mqtt` in its own process (by default committing only when stopped, or killed)."""
    env = {**os.environ, "CITYLAKE_MQTT_COMMIT_MESSAGES": str(commit_messages), "CITYLAKE_MQTT_COMMIT_SECONDS": str(commit_seconds),
           "CITYLAKE_PSEUDONYM_KEY": TEST_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "mqtt", "--broker", broker,
         "--topic", topic, "--client-id", client_id, "--feed", feed],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
    )


def subscribe_once(lake, broker: str, topic: str, client_id: str, *, feed: str = "readings") -> None:
    """Open the persistent session so the broker queues what is published next."""
    ingest_mqtt(lake, broker, topic, client_id=client_id, max_seconds=0.3, feed=feed, key=KEY if feed == "pings" else None)


def test_messages_land_in_micro_batches_and_bad_ones_are_quarantined(sensor_lake, mosquitto):
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}/sensors"
    subscribe_once(sensor_lake, mosquitto, f"{topic}/#", client_id)
    good = [reading("S1", m) for m in range(30)] + [[reading("S2", 1), reading("S2", 2)]]
    bad = [b"not json", reading("S9", 1), {**reading("S1", 59), "value": "loud"}]
    publish(mosquitto, f"{topic}/noise", good + bad)
    report = ingest_mqtt(sensor_lake, mosquitto, f"{topic}/#", client_id=client_id, commit_messages=10, commit_seconds=60,
                         max_messages=len(good) + len(bad), max_seconds=30)
    assert (report.accepted, report.rejected) == (32, 3)
    assert sensor_lake.rows("readings") == 32
    reasons = [r[0] for r in duckdb_for(sensor_lake).execute("SELECT reason FROM quarantine ORDER BY row_number").fetchall()]
    assert "not valid JSON" in reasons[0] and "S9 is not in the registry" in reasons[1] and "value loud" in reasons[2]
    sizes = duckdb_for(sensor_lake).execute(
        "SELECT rows_in FROM batches WHERE table_name = 'readings' ORDER BY started_at").fetchall()
    assert [n for (n,) in sizes] == [10, 10, 10, 5]  # 34 messages, a commit every 10; message 31 held two readings


def test_sigterm_flushes_what_is_held(sensor_lake, mosquitto):
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(sensor_lake, mosquitto, topic, client_id)
    publish(mosquitto, topic, [reading("S1", m) for m in range(25)])
    proc = start_ingester(sensor_lake, mosquitto, topic, client_id)
    time.sleep(3)  # connected and holding 25 messages, far from a commit
    assert sensor_lake.rows("readings") == 0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "25 accepted" in out
    assert sensor_lake.rows("readings") == 25


def test_a_killed_ingester_loses_nothing(sensor_lake, mosquitto):
    """Messages are acknowledged only after their commit: a SIGKILL before it means redelivery."""
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(sensor_lake, mosquitto, topic, client_id)
    publish(mosquitto, topic, [reading("S1", m) for m in range(40)])
    proc = start_ingester(sensor_lake, mosquitto, topic, client_id)
    time.sleep(3)
    proc.kill()
    proc.wait()
    assert sensor_lake.rows("readings") == 0
    report = ingest_mqtt(sensor_lake, mosquitto, topic, client_id=client_id, max_messages=40, max_seconds=30)
    assert report.accepted == 40 and sensor_lake.rows("readings") == 40


def test_unreachable_broker_is_one_clear_error(lake):
    from citylake.ingestion.errors import UnreadableInput

    with pytest.raises(UnreadableInput, match="cannot connect to the broker"):
        ingest_mqtt(lake, "mqtt://127.0.0.1:1", "x", max_seconds=1)


def test_each_bad_record_of_a_list_message_is_quarantined_and_a_lone_surrogate_stops_nothing(sensor_lake, mosquitto):
    """Each record has a quarantine row of its own, not one per message (the key is the batch and the row number); a
    message with a lone surrogate escape (valid JSON, no text) is quarantined instead of failing the micro-batch."""
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(sensor_lake, mosquitto, topic, client_id)
    surrogate = json.dumps(reading("S1", 4)).replace('"S1"', '"S1\\ud800"').encode()
    publish(mosquitto, topic, [[reading("S9", 1), reading("S1", 2), {**reading("S1", 3), "value": "loud"}], surrogate])
    report = ingest_mqtt(sensor_lake, mosquitto, topic, client_id=client_id, max_messages=2, max_seconds=30)
    assert (report.accepted, report.rejected) == (1, 3)
    reasons = [r for (r,) in duckdb_for(sensor_lake).execute("SELECT reason FROM quarantine ORDER BY row_number").fetchall()]
    assert len(reasons) == 3 and "lone surrogate" in reasons[2]


# --- pings: pseudonymised before anything is written, nothing lost, nothing twice ------------------------------------

KEY = TEST_KEY.encode()
RAW = "dev-secret-"  # every raw device id of these tests starts so: none may be found in the lake


@pytest.fixture
def ping_lake(lake):
    return with_key(lake)


def ping(device: int, second: int) -> dict:
    """A ping whose key (device, ts, lat, lon) no other ping of a test shares; stored as sent (whole seconds, 5 decimals)."""
    return {"device_id": f"{RAW}{device}", "ts": f"2026-11-01T08:{second // 60 % 60:02d}:{second % 60:02d}Z",
            "lat": round(31.2 + second * 1e-4, 5), "lon": round(121.4 + device * 1e-4, 5), "accuracy_m": 5.0}


def as_messages(pings: list[dict]) -> list:
    """Pings as messages: mostly one ping each, every fourth message a list of three."""
    messages, i = [], 0
    while i < len(pings):
        if len(messages) % 4 == 3:
            messages.append(pings[i:i + 3])
            i += 3
        else:
            messages.append(pings[i])
            i += 1
    return messages


def expected_rows(pings: list[dict]) -> list[tuple]:
    """What ``pings`` must land as, worked out without citylake: HMAC-SHA256 of the raw id under the lake's key, its
    first 8 bytes as a signed big-endian integer."""
    import datetime as dt

    def pseudonym(raw: str) -> int:
        return int.from_bytes(hmac.new(KEY, raw.encode(), hashlib.sha256).digest()[:8], "big", signed=True)

    return sorted((pseudonym(p["device_id"]), dt.datetime.fromisoformat(p["ts"]), p["lat"], p["lon"]) for p in pings)


def landed_rows(lake) -> list[tuple]:
    return duckdb_for(lake).execute("SELECT device_id, ts, lat, lon FROM pings ORDER BY ALL").fetchall()


def no_raw_id_in(lake) -> None:
    """No raw device id anywhere under the lake: not in any file's bytes (Delta logs, uncompressed pings files) and not
    in any text value of any table (compressed files read back)."""
    for path in (p for p in lake.root.rglob("*") if p.is_file()):
        assert RAW.encode() not in path.read_bytes(), f"a raw device id in {path}"
    con = duckdb_for(lake)
    for table in lake.names:
        text = [c for c, kind in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})").fetchall() if kind == "VARCHAR"]
        for column in text:
            found = con.execute(f'SELECT count(*) FROM {table} WHERE "{column}" LIKE \'%{RAW}%\'').fetchone()[0]
            assert not found, f"a raw device id in {table}.{column}"


def wait_for(condition, *, seconds: float = 60, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            said = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the ingester exited ({proc.returncode}) while waiting for {what}: {said}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in (err or "")
    return out


def ledger_agrees(lake) -> None:
    from citylake import api

    assert api.check_ledger(lake) == []


def test_pings_land_pseudonymised_and_bad_ones_are_quarantined_with_reasons(ping_lake, mosquitto):
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}/pings"
    subscribe_once(ping_lake, mosquitto, topic, client_id, feed="pings")
    good = [ping(d, s) for d in range(3) for s in range(10)]
    bad = [
        b'{"device_id": "dev-secret-90", "ts": ',  # no JSON: withheld whole, it holds a raw id
        ["dev-secret-91"],  # a list member that is no object
        {**ping(92, 1), "lat": 95.0},
        {**ping(93, 2), "ts": "dev-secret-93"},  # the id where the time should be
        [{**ping(94, 3), "lon": None}, {**ping(95, 4), "accuracy_m": -3}],  # two bad records in one message
        json.dumps(ping(96, 5)).replace('Z"', '\\udc00"').encode(),  # a lone surrogate: JSON, but no text
    ]
    messages = [*as_messages(good), *bad, good[0]]  # and a repeat
    publish(mosquitto, topic, messages)
    report = ingest_mqtt(ping_lake, mosquitto, topic, feed="pings", key=KEY, client_id=client_id, commit_messages=8,
                         max_messages=len(messages), max_seconds=30)
    assert (report.accepted, report.rejected, report.duplicates) == (30, 7, 1)
    assert landed_rows(ping_lake) == expected_rows(good)
    quarantined = duckdb_for(ping_lake).execute("SELECT raw, reason FROM quarantine ORDER BY row_number").fetchall()
    assert len(quarantined) == 7
    (raw0, why0), (raw1, why1), (_, why2), (raw3, why3), (_, why4), (_, why5), (raw6, why6) = quarantined
    assert raw0.startswith("[line withheld") and "not valid JSON" in why0
    assert raw1.startswith("[line withheld") and "not a JSON object" in why1
    assert "lat 95.0 is out of range" in why2
    assert "not a timestamp" in why3 and "withheld" in raw3 and "pseudonym:" in raw3
    assert "lon is missing" in why4 and "accuracy_m -3 is negative" in why5
    assert raw6.startswith("[line withheld") and "lone surrogate" in why6
    no_raw_id_in(ping_lake)
    ledger_agrees(ping_lake)


def test_pings_need_the_lakes_own_key(ping_lake, mosquitto):
    from citylake.ingestion.errors import BadOption

    with pytest.raises(BadOption, match="pseudonymised with the lake's key"):
        ingest_mqtt(ping_lake, mosquitto, "x", feed="pings", max_seconds=1)
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": "another-key-0123456789abcdef-0123456789abcdef"}
    done = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(ping_lake.root), "ingest", "mqtt", "--broker",
                           mosquitto, "--topic", "x", "--feed", "pings", "--max-seconds", "1"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "not this lake's pseudonym key" in done.stderr


def test_pings_survive_a_broker_restart_mid_stream(ping_lake, restartable_mosquitto):
    broker = restartable_mosquitto.url
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(ping_lake, broker, topic, client_id, feed="pings")
    sent = [ping(d, s) for d in range(4) for s in range(30)]
    first, second = as_messages(sent[:60]), as_messages(sent[60:])
    proc = start_ingester(ping_lake, broker, topic, client_id, feed="pings", commit_messages=1000, commit_seconds=2)
    publish(broker, topic, first)
    time.sleep(0.5)  # the ingester holds the first messages, unacknowledged, and commits them while the broker is down:
    restartable_mosquitto.restart(down_s=1.5)  # its acknowledgements go nowhere, so the broker sends them all again
    publish(broker, topic, second)
    wait_for(lambda: ping_lake.rows("pings") >= len(sent), proc=proc, what="every ping")
    time.sleep(2.5)  # time for anything redelivered to be committed (and dropped) too
    assert f"{len(sent)} accepted" in stop(proc)  # redelivered messages (all the first ones, usually) as duplicates skipped
    assert landed_rows(ping_lake) == expected_rows(sent)
    ledger_agrees(ping_lake)


def test_a_killed_pings_ingester_restarted_loses_nothing_and_lands_nothing_twice(ping_lake, mosquitto):
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(ping_lake, mosquitto, topic, client_id, feed="pings")
    sent = [ping(d, s) for d in range(4) for s in range(40)]
    messages = as_messages(sent)

    def publish_slowly() -> None:  # a stream, not a burst: the kill falls between commits
        with publisher(mosquitto, topic) as send:
            for i in range(0, len(messages), 4):
                send(messages[i:i + 4])
                time.sleep(0.05)

    proc = start_ingester(ping_lake, mosquitto, topic, client_id, feed="pings", commit_messages=5, commit_seconds=1)
    stream = threading.Thread(target=publish_slowly)
    stream.start()
    wait_for(lambda: ping_lake.rows("pings") > 0, proc=proc, what="a first commit")
    proc.kill()
    proc.wait()
    assert 0 < ping_lake.rows("pings") < len(sent)
    restarted = start_ingester(ping_lake, mosquitto, topic, client_id, feed="pings", commit_messages=5, commit_seconds=1)
    stream.join()
    wait_for(lambda: ping_lake.rows("pings") >= len(sent), proc=restarted, what="every ping")
    time.sleep(1.5)
    stop(restarted)
    assert landed_rows(ping_lake) == expected_rows(sent)
    ledger_agrees(ping_lake)


def test_a_micro_batch_retried_after_its_batches_row_failed_lands_and_counts_once(ping_lake, monkeypatch):
    """The rows committed, the ledger row did not: the retry records the commit without offering its rows again."""
    from citylake.ingestion.batch import BatchWriter, Chunk
    from citylake.ingestion.validate import unreadable
    from citylake.lake import Lake

    real, fail = Lake.append_new, iter([True])

    def batches_row_fails_once(lake, name, data, **options):
        if name == "batches" and next(fail, False):
            raise OSError(28, "No space left on device")
        return real(lake, name, data, **options)

    monkeypatch.setattr(Lake, "append_new", batches_row_fails_once)
    writer = BatchWriter(ping_lake, "pings", "mqtt://broker/topic", "0" * 64)
    rows = make_pings(40, days=1)
    chunk = Chunk(rows, unreadable([]), rows.num_rows)
    with pytest.raises(OSError):
        writer.commit(0, chunk)
    writer.commit(0, chunk)
    assert (writer.report.rows_in, writer.report.accepted, writer.report.duplicates) == (40, 40, 0)
    assert ping_lake.rows("pings") == 40 and ping_lake.stats("pings").version == 1  # one data commit
    ledger_agrees(ping_lake)


@pytest.fixture
def briefly_unwritable(tmp_path):
    """A lake with a key, and a switch that makes every commit into it fail for real until switched back: as root (CI),
    the lake lives on a small tmpfs that a ballast file fills (DiskFull); otherwise the pings table is made read-only
    (NotWritable; root would write it all the same)."""
    from citylake.lake import Lake

    if os.geteuid() != 0:
        lake = with_key(Lake.init(tmp_path / "lake"))
        mode = lake.path("pings").stat().st_mode
        yield lake, lambda: os.chmod(lake.path("pings"), 0o500), lambda: os.chmod(lake.path("pings"), mode)
        return
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    lake, ballast = with_key(Lake.init(disk / "lake")), disk / "ballast"

    def fill() -> None:  # leave less room than any write asks for (lake.writers.HEADROOM_BYTES, 16 MB)
        import shutil

        ballast.write_bytes(b"\0" * (shutil.disk_usage(disk).free - (4 << 20)))

    try:
        yield lake, fill, lambda: ballast.unlink()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_briefly_unwritable_lake_holds_the_messages_until_it_can_commit(briefly_unwritable, mosquitto, tmp_path):
    lake, block, unblock = briefly_unwritable
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(lake, mosquitto, topic, client_id, feed="pings")
    before, during = [ping(1, s) for s in range(20)], [ping(2, s) for s in range(20)]
    notes = tmp_path / "stderr.txt"
    with notes.open("w") as stderr:
        proc = start_ingester(lake, mosquitto, topic, client_id, feed="pings", commit_messages=5, commit_seconds=1, stderr=stderr)
    publish(mosquitto, topic, as_messages(before))
    wait_for(lambda: lake.rows("pings") == len(before), proc=proc, what="the first pings")
    block()
    publish(mosquitto, topic, as_messages(during))
    wait_for(lambda: "commit failed" in notes.read_text(), proc=proc, what="a refused commit")
    time.sleep(1.5)  # a retry or two, still refused
    assert lake.rows("pings") == len(before)
    unblock()
    wait_for(lambda: lake.rows("pings") >= len(before) + len(during), proc=proc, what="the held pings")
    out = stop(proc)
    said = notes.read_text()
    assert "Traceback" not in said and "trying again" in said
    assert f"{len(before) + len(during)} accepted" in out
    assert landed_rows(lake) == expected_rows(before + during)
    ledger_agrees(lake)


def test_background_compaction_merges_files_while_the_feed_keeps_landing(ping_lake, mosquitto):
    from citylake.ingestion.compaction import CROWDED_FILES

    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(ping_lake, mosquitto, topic, client_id, feed="pings")
    sent = [ping(d, s) for d in range(2) for s in range(150)]
    messages = [sent[i:i + 2] for i in range(0, len(sent), 2)]
    reads, failures, done = [], [], threading.Event()

    def publish_slowly() -> None:
        with publisher(mosquitto, topic) as send:
            for i in range(0, len(messages), 3):
                send(messages[i:i + 3])
                time.sleep(0.05)

    def read_while_it_runs() -> None:  # readers read snapshots: never an error, never fewer rows than before
        while not done.is_set():
            try:
                reads.append(pl.scan_delta(str(ping_lake.path("pings"))).select(pl.len()).collect().item())
            except Exception as err:  # noqa: BLE001 - any failure to read is the finding
                failures.append(err)
            time.sleep(0.05)

    threads = [threading.Thread(target=publish_slowly), threading.Thread(target=read_while_it_runs)]
    for thread in threads:
        thread.start()
    compactions = []
    report = ingest_mqtt(ping_lake, mosquitto, topic, feed="pings", key=KEY, client_id=client_id, commit_messages=3,
                         commit_seconds=0.2, compact_seconds=0.7, retention_hours=0, max_messages=len(messages), max_seconds=60,
                         announce=compactions.append)
    done.set()
    for thread in threads:
        thread.join()
    assert not failures and reads == sorted(reads)
    assert report.accepted == len(sent) and landed_rows(ping_lake) == expected_rows(sent)
    operations = [c["operation"] for c in reversed(ping_lake.history("pings"))]
    writes, first_merge = operations.count("WRITE"), operations.index("OPTIMIZE")
    assert "WRITE" in operations[first_merge:], "the feed kept landing rows after the first merge"
    stats = ping_lake.stats("pings")
    assert writes >= 30 and stats.files < writes / 2, (writes, stats)  # without merging, every write leaves a file per partition
    assert stats.files <= stats.partitions * (CROWDED_FILES + 6)
    on_disk = [p for p in ping_lake.path("pings").rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(on_disk) == stats.files, "merged-away files past the retention window (0 h here) are vacuumed"
    assert any("compacted" in line for line in compactions) and "compacted" in report.line()
    ledger_agrees(ping_lake)


def test_a_message_nested_too_deeply_is_quarantined_not_fatal(sensor_lake, mosquitto):
    """A thousand nested brackets used to raise RecursionError in the ingester, which the broker then redelivered forever."""
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    subscribe_once(sensor_lake, mosquitto, topic, client_id)
    publish(mosquitto, topic, [b"[" * 5000 + b"]" * 5000, reading("S1", 1)])
    report = ingest_mqtt(sensor_lake, mosquitto, topic, client_id=client_id, max_messages=2, max_seconds=30)
    assert (report.accepted, report.rejected) == (1, 1)
    reasons = [r for (r,) in duckdb_for(sensor_lake).execute("SELECT reason FROM quarantine").fetchall()]
    assert any("nested too deeply" in r for r in reasons), reasons

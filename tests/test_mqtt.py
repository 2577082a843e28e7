"""The live MQTT feed against a real Mosquitto broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as paho
import pytest

from citylake.ingestion.iot import ingest_sensors
from citylake.ingestion.mqtt import ingest_mqtt
from citylake.lake import duckdb_for

pytestmark = pytest.mark.integration


def publish(broker: str, topic: str, payloads: list) -> None:
    host, port = broker.removeprefix("mqtt://").split(":")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(host, int(port))
    client.loop_start()
    for payload in payloads:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(topic, body, qos=1).wait_for_publish(timeout=10)
    client.loop_stop()
    client.disconnect()


def reading(sensor: str, minute: int, value: float = 1.0) -> dict:
    return {"sensor_id": sensor, "ts": f"2026-11-01T00:{minute:02d}:00Z", "metric": "laeq", "value": value}


@pytest.fixture
def sensor_lake(lake, tmp_path):
    (tmp_path / "s.csv").write_text("sensor_id,kind,unit,lat,lon\nS1,noise,dB,31.2,121.4\nS2,noise,dB,31.3,121.5\n")
    ingest_sensors(lake, tmp_path / "s.csv")
    return lake


def start_ingester(lake, broker: str, topic: str, client_id: str) -> subprocess.Popen:
    """`citylake ingest mqtt` in its own process, committing only when stopped (or killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "ingest", "mqtt", "--broker", broker,
         "--topic", topic, "--client-id", client_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "CITYLAKE_MQTT_COMMIT_SECONDS": "3600"},
    )


def subscribe_once(lake, broker: str, topic: str, client_id: str) -> None:
    """Open the persistent session so the broker queues what is published next."""
    ingest_mqtt(lake, broker, topic, client_id=client_id, max_seconds=0.3)


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


# -- live pings -----------------------------------------------------------------------------------
def ping(device: str, minute: int, lat: float = 31.2) -> dict:
    return {"device_id": device, "ts": f"2026-11-01T08:{minute:02d}:00Z", "lat": lat, "lon": 121.4}


@pytest.fixture
def keyed_lake(lake):
    from conftest import with_key

    return with_key(lake)


def test_live_pings_are_pseudonymised_checked_and_land_once(keyed_lake, mosquitto):
    from conftest import TEST_KEY

    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}/pings"
    subscribe_once(keyed_lake, mosquitto, topic, client_id)
    good = [ping("raw-device-alpha", m) for m in range(20)] + [[ping("raw-device-beta", 1), ping("raw-device-beta", 2)]]
    again = [ping("raw-device-alpha", 3)]  # a redelivery of a ping already sent
    bad = [b'{"device_id": "raw-device-gamma", broken', ping("raw-device-delta", 5, lat=123.0)]
    publish(mosquitto, topic, good + again + bad)
    report = ingest_mqtt(keyed_lake, mosquitto, topic, client_id=client_id, feed="pings", key=TEST_KEY.encode(), commit_messages=8,
                         max_messages=len(good) + len(again) + len(bad), max_seconds=30)
    assert (report.accepted, report.rejected, report.duplicates) == (22, 2, 1)
    assert keyed_lake.rows("pings") == 22
    reasons = sorted(r for (r,) in duckdb_for(keyed_lake).execute("SELECT reason FROM quarantine").fetchall())
    assert any("not valid JSON" in r for r in reasons) and any("lat 123" in r for r in reasons), reasons
    for path in keyed_lake.root.rglob("*"):  # no raw device id anywhere under the lake, quarantine included
        if path.is_file():
            assert b"raw-device" not in path.read_bytes(), path


def test_a_killed_pings_ingester_loses_nothing(keyed_lake, mosquitto):
    client_id, topic = f"t-{uuid.uuid4().hex[:8]}", f"city/{uuid.uuid4().hex[:6]}"
    from conftest import TEST_KEY

    subscribe_once(keyed_lake, mosquitto, topic, client_id)
    publish(mosquitto, topic, [ping(f"d{m % 7}", m) for m in range(40)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "citylake.cli", "--lake", str(keyed_lake.root), "ingest", "mqtt", "--feed", "pings", "--broker", mosquitto,
         "--topic", topic, "--client-id", client_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CITYLAKE_MQTT_COMMIT_SECONDS": "3600", "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    time.sleep(3)
    proc.kill()
    proc.wait()
    assert keyed_lake.rows("pings") == 0
    report = ingest_mqtt(keyed_lake, mosquitto, topic, client_id=client_id, feed="pings", key=TEST_KEY.encode(), max_messages=40,
                         max_seconds=30)
    assert report.accepted == 40 and keyed_lake.rows("pings") == 40

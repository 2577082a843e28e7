"""`citylake replay` against a real Mosquitto broker, checked by a subscriber of its own against the files themselves."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from citylake.ingestion.city import generate_city
from citylake.ingestion.replay import replay

pytestmark = pytest.mark.integration

NUMBERS = {"lat", "lon", "accuracy_m", "value"}


class Listener:
    """A subscriber to ``prefix/#`` that keeps each message's arrival time, topic and rows."""

    def __init__(self, broker: str, prefix: str) -> None:
        host, port = broker.removeprefix("mqtt://").split(":")
        self.messages: list[tuple[float, str, list[dict]]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"listen-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.messages.append((time.monotonic(), m.topic, json.loads(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe(f"{prefix}/#", qos=1)
        assert subscribed.wait(10)

    def rows(self, topic: str) -> list[dict]:
        return [row for _, t, rows in self.messages if t == topic for row in rows]

    def wait_for(self, rows: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while sum(len(r) for _, _, r in self.messages) < rows and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything more would be a row too many

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def listen(mosquitto):
    made = []

    def start(prefix: str) -> Listener:
        made.append(Listener(mosquitto, prefix))
        return made[-1]

    yield start
    for listener in made:
        listener.close()


def file_rows(path: Path, start: str, end: str) -> list[dict]:
    """The rows of a CSV whose ISO-Z time is in [start, end), read with nothing of citylake's."""
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if start <= row["ts"] < end]


def as_counted(rows: list[dict]) -> Counter:
    """Rows as comparable tuples: numbers as floats (the file's text, the message's JSON number), the rest as text."""
    def value(k, v):
        return float(v) if k in NUMBERS and v not in ("", None) else v
    return Counter(tuple(sorted((k, value(k, v)) for k, v in row.items())) for row in rows)


def citylake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", *args], capture_output=True, text=True, timeout=120)


def test_every_row_of_the_window_arrives_once_in_event_time_order(tmp_path, mosquitto, listen):
    city = tmp_path / "city"
    generate_city(city, devices=40, days=1, seed=7, mess=0.01)  # duplicate deliveries and swapped coordinates too
    prefix = f"t{uuid.uuid4().hex[:6]}"
    listener = listen(prefix)
    start, end = "2026-11-02T07:00:00Z", "2026-11-02T10:00:00Z"
    pings, readings = file_rows(city / "pings.csv", start, end), file_rows(city / "readings.csv", start, end)
    report = replay(mosquitto, pings=city / "pings.csv", pings_topic=f"{prefix}/pings", readings=city / "readings.csv",
                    readings_topic=f"{prefix}/sensors/readings", speed=0, start=dt.datetime.fromisoformat(start),
                    end=dt.datetime.fromisoformat(end), max_rows=50)
    listener.wait_for(len(pings) + len(readings))
    assert report.rows == {"pings": len(pings), "readings": len(readings)} and report.messages == len(listener.messages)
    assert as_counted(listener.rows(f"{prefix}/pings")) == as_counted(pings)
    assert as_counted(listener.rows(f"{prefix}/sensors/readings")) == as_counted(readings)
    assert all(len(rows) <= 50 for _, _, rows in listener.messages)
    for topic in (f"{prefix}/pings", f"{prefix}/sensors/readings"):  # within a topic, event time never goes back
        times = [row["ts"] for row in listener.rows(topic)]
        assert times == sorted(times)
    latest = ""  # across topics, by at most one slice of event time (a minute at full speed)
    for _, _, rows in listener.messages:
        earliest = dt.datetime.fromisoformat(min(r["ts"] for r in rows))
        assert not latest or earliest >= dt.datetime.fromisoformat(latest) - dt.timedelta(minutes=1)
        latest = max(latest, max(r["ts"] for r in rows))


def test_pacing_follows_event_time_at_the_chosen_speed(tmp_path, mosquitto, listen):
    """Ten minutes of readings at 600x take at least a second; the messages leave as the replay clock reaches them."""
    path = tmp_path / "readings.csv"
    minutes = [0, 2, 5, 7, 10]
    path.write_text("sensor_id,ts,metric,value\n" + "".join(f"S1,2026-11-02T08:{m:02d}:00Z,pm25,{m}\n" for m in minutes))
    prefix = f"t{uuid.uuid4().hex[:6]}"
    listener = listen(prefix)
    began = time.monotonic()
    report = replay(mosquitto, readings=path, readings_topic=f"{prefix}/r", speed=600, batch_seconds=0.1)
    took = time.monotonic() - began
    listener.wait_for(len(minutes))
    assert took >= 0.95 and report.seconds >= 0.95  # a lower bound only: the machine is shared
    arrived = {rows[0]["value"]: at for at, _, rows in listener.messages}
    assert [rows[0]["value"] for _, _, rows in listener.messages] == minutes  # one message per slice of 60 event seconds
    for m in minutes[1:]:
        assert arrived[m] - arrived[0] >= m * 60 / 600 - 0.05


def test_from_and_to_select_the_window_of_unsorted_files(tmp_path, mosquitto, listen):
    pings = tmp_path / "pings.csv"
    pings.write_text("device_id,ts,lat,lon\n"
                     "d2,2026-11-02T08:30:00,31.2,121.4\n"      # naive: read in --tz (UTC)
                     "d1,2026-11-02T08:00:00Z,31.1,121.3\n"     # at --from: in
                     "d3,2026-11-02T09:00:00Z,31.3,121.5\n"     # at --to: out
                     "d0,2026-11-02T07:59:59Z,31.0,121.2\n"     # before: out
                     "d4,not a time,31.4,121.6\n"               # no place in event time: skipped, and said
                     "d5,2026-11-02T08:59:59.5+00:00,north,121.7\n")  # not a number: published as the text it is
    readings = tmp_path / "readings.parquet"
    at = pa.array([dt.datetime(2026, 11, 2, 8, 45), dt.datetime(2026, 11, 2, 8, 15)], pa.timestamp("s"))  # typed, naive: UTC
    pq.write_table(pa.table({"sensor_id": ["S2", "S1"], "ts": at, "metric": ["pm25", "pm25"], "value": [2.5, 1.5]}), readings)
    prefix = f"t{uuid.uuid4().hex[:6]}"
    listener = listen(prefix)
    done = citylake("replay", "--broker", mosquitto, "--pings", str(pings), "--pings-topic", f"{prefix}/p", "--readings", str(readings),
                    "--readings-topic", f"{prefix}/r", "--speed", "max", "--from", "2026-11-02T08:00Z", "--to", "2026-11-02T09:00Z")
    assert done.returncode == 0, done.stderr
    listener.wait_for(5)
    assert [r["device_id"] for r in listener.rows(f"{prefix}/p")] == ["d1", "d2", "d5"]
    assert listener.rows(f"{prefix}/p")[2] == {"device_id": "d5", "ts": "2026-11-02T08:59:59.5+00:00", "lat": "north", "lon": 121.7}
    assert listener.rows(f"{prefix}/r") == [{"sensor_id": "S1", "ts": "2026-11-02T08:15:00Z", "metric": "pm25", "value": 1.5},
                                            {"sensor_id": "S2", "ts": "2026-11-02T08:45:00Z", "metric": "pm25", "value": 2.5}]
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1 and "replayed 5 rows (3 pings, 2 readings)" in summary[0]
    assert "1 rows skipped (no readable time or line)" in summary[0]
    assert "event time 2026-11-02T08:00:00Z to 2026-11-02T08:59:59.500000Z" in summary[0]


def one_line_error(done: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("citylake: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_one_line_with_the_fix(tmp_path, mosquitto):
    pings = tmp_path / "pings.csv"
    pings.write_text("device_id,ts,lat,lon\nd1,2026-11-02T08:00:00Z,31.1,121.3\n")
    (tmp_path / "readings.csv").write_text("sensor,ts,metric,value\nS1,2026-11-02T08:00:00Z,pm25,1\n")
    one_line_error(citylake("replay", "--broker", "mqtt://127.0.0.1:1", "--pings", str(pings)), 1, "cannot connect to the broker",
                   "is it running?")
    one_line_error(citylake("replay", "--broker", mosquitto, "--pings", str(tmp_path / "nope.csv")), 2, "does not exist")
    one_line_error(citylake("replay", "--broker", mosquitto, "--readings", str(tmp_path / "readings.csv")), 1,
                   "missing column(s) sensor_id", "found sensor, ts", "rename them in the file")
    one_line_error(citylake("replay", "--broker", mosquitto), 2, "--pings FILE, --readings FILE or both")
    one_line_error(citylake("replay", "--broker", mosquitto, "--pings", str(pings), "--speed", "fast"), 2, "'fast' is not a speed")
    one_line_error(citylake("replay", "--broker", mosquitto, "--pings", str(pings), "--from", "2030-01-01"), 1,
                   "no row falls in [2030-01-01T00:00:00Z", "run from 2026-11-02T08:00:00Z to 2026-11-02T08:00:00Z")
    one_line_error(citylake("replay", "--broker", "http://broker", "--pings", str(pings)), 1, "mqtt://HOST:PORT")


def test_ctrl_c_stops_with_one_line_saying_where_to_go_on(tmp_path, mosquitto):
    path = tmp_path / "readings.csv"
    path.write_text("sensor_id,ts,metric,value\n" + "".join(f"S1,2026-11-02T{h:02d}:00:00Z,pm25,{h}\n" for h in range(24)))
    proc = subprocess.Popen([sys.executable, "-m", "citylake.cli", "replay", "--broker", mosquitto, "--readings", str(path),
                             "--readings-topic", f"t{uuid.uuid4().hex[:6]}/r", "--speed", "1800"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    time.sleep(6)  # started, and a few hours of event time sent (one every 2 s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("citylake: interrupted; replay stopped after ") and "go on with --from 2026-11-02T" in line, err

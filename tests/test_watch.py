"""`citylake watch`: live alerts as data lands, checked against what was injected, against k, and across restarts."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import polars as pl
import pytest
from conftest import PLAZA, TEST_KEY, box_polygon, generated_city_lake, plaza_crowd, quiet_park_days, utc, with_key, write_pings_csv

from citylake.analytics.alerts import FAULT, SURGE, Episodes, alert_id, for_scoring
from citylake.analytics.truth import load_events, score
from citylake.analytics.watch import CHECKPOINT, WatchConfig, Watcher
from citylake.ingestion.iot import ingest_readings
from citylake.ingestion.location import ingest_pings
from citylake.ingestion.map import ingest_places
from citylake.lake import Lake, scan

KEY = TEST_KEY.encode()
NOW = dt.timedelta(0)
# Evidence may say how unusual in coarse bands (only over a usual of at least k), never how many: the k floor it cleared
SURGE_EVIDENCE = re.compile(r"(devices in 15 minutes over [235]x the usual for (weekday|weekend) \d\d:\d\d UTC \(at least 10\)"
                            r"|at least (10|50) devices in 15 minutes where there are usually fewer than 10 at (weekday|weekend) "
                            r"\d\d:\d\d UTC)")


# -- episodes -----------------------------------------------------------------------------------
def test_an_episode_keeps_its_id_as_it_grows_and_closes_after_quiet():
    episodes = Episodes()
    first = episodes.flag(SURGE, "places:a", place_id="places:a", start=utc(2026, 11, 6, 10), end=utc(2026, 11, 6, 10, 15),
                          severity="low", evidence="e1")
    grown = episodes.flag(SURGE, "places:a", place_id="places:a", start=utc(2026, 11, 6, 10, 5), end=utc(2026, 11, 6, 10, 20),
                          severity="high", evidence="e2")
    assert grown is first and first.alert_id == alert_id(SURGE, "places:a", utc(2026, 11, 6, 10))
    assert (first.revision, first.severity, first.end) == (2, "high", utc(2026, 11, 6, 10, 20))
    rows = episodes.take_changed(utc(2026, 11, 6, 10, 20))
    assert [r["status"] for r in rows] == ["open"] and episodes.take_changed(utc(2026, 11, 6, 10, 25)) == []
    episodes.close_quiet(utc(2026, 11, 6, 10, 30))  # 10 quiet minutes: a surge stays open
    assert episodes.take_changed(utc(2026, 11, 6, 10, 30)) == []
    episodes.close_quiet(utc(2026, 11, 6, 10, 35))
    assert [(r["status"], r["revision"]) for r in episodes.take_changed(utc(2026, 11, 6, 10, 35))] == [("closed", 3)]


def test_an_open_alert_read_back_grows_instead_of_starting_again():
    episodes = Episodes()
    episodes.flag(FAULT, "AQ1", place_id="places:p", sensors={"AQ1"}, start=utc(2026, 11, 6, 6), end=utc(2026, 11, 6, 7),
                  severity="medium", evidence="flat")
    saved = pl.DataFrame(episodes.take_changed(utc(2026, 11, 6, 7)))
    again = Episodes(saved)  # a restarted watcher
    episode = again.flag(FAULT, "AQ1", place_id="places:p", sensors={"AQ1"}, start=utc(2026, 11, 6, 7), end=utc(2026, 11, 6, 8),
                         severity="medium", evidence="flat")
    assert episode.alert_id == saved["alert_id"][0] and episode.start == utc(2026, 11, 6, 6) and episode.revision == 2


@pytest.mark.parametrize("crowd, alerts", [(40, 1), (8, 0)])
def test_a_crowd_is_an_alert_at_the_innermost_place_only_from_k_devices(park_lake, tmp_path, crowd, alerts):
    """40 devices in the plaza (usually 1) raise one surge there, not in the park around it; 8 (under k = 10) raise none,
    though 8 times the usual."""
    watcher = Watcher(park_lake, k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    friday = utc(2026, 11, 6, 10)
    live = quiet_park_days(np.random.default_rng(1), [friday.date()]) + plaza_crowd(friday, crowd)
    ingest_pings(park_lake, write_pings_csv(tmp_path / "live.csv", live), key=KEY)
    watcher.poll()
    found = scan(park_lake, "alerts").collect()
    assert found.height == alerts
    if alerts:
        alert = found.row(0, named=True)
        assert (alert["kind"], alert["place_id"], alert["status"]) == (SURGE, "places:plaza", "closed")
        assert friday - dt.timedelta(minutes=15) <= alert["start"] <= friday + dt.timedelta(minutes=5)
        assert alert["end"] <= friday + dt.timedelta(minutes=45)
        assert SURGE_EVIDENCE.fullmatch(alert["evidence"]), alert["evidence"]


def test_too_little_history_is_said_not_guessed(tmp_path):
    lake = with_key(Lake.init(tmp_path / "lake"))
    (tmp_path / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": box_polygon(*PLAZA), "properties": {"id": "plaza", "category": "park"}}]}))
    ingest_places(lake, tmp_path / "places.geojson")
    ingest_pings(lake, write_pings_csv(tmp_path / "h.csv", quiet_park_days(np.random.default_rng(0), [dt.date(2026, 11, 5)])), key=KEY)
    said = []
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=NOW), announce=said.append)
    ingest_pings(lake, write_pings_csv(tmp_path / "live.csv", plaza_crowd(utc(2026, 11, 6, 10), 60)), key=KEY)
    watcher.poll()
    assert scan(lake, "alerts").collect().is_empty()
    assert any("crowd surges need 2 more day(s) of history" in line for line in said), said


# -- a generated city, fed hour by hour ----------------------------------------------------------
LIVE_FROM, LIVE_HOURS = dt.timedelta(days=2, hours=5), 36  # from before the failing sensor and the jam to past the surge


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A generated city (6 days) with history up to day 2 05:00 in the lake, the rest cut into hourly files to feed live;
    a copy of the lake at the start of the live part for the restart test."""
    root = tmp_path_factory.mktemp("watch-city")
    lake = generated_city_lake(root, devices=800, days=6, seed=3, feeds=("places", "sensors"))
    start = utc(2026, 11, 2) + LIVE_FROM
    pings = pl.read_csv(root / "city" / "pings.csv", infer_schema=False)
    readings = pl.read_csv(root / "city" / "readings.csv", infer_schema=False)
    edges = [start + dt.timedelta(hours=h) for h in range(LIVE_HOURS + 1)]
    parts = [(None, edges[0])] + list(zip(edges, edges[1:]))
    hours = []
    for i, (lo, hi) in enumerate(parts):
        def cut(frame, name, lo=lo, hi=hi, i=i):
            before_hi = pl.col("ts") < pl.lit(_iso(hi))
            mask = before_hi if lo is None else pl.col("ts").is_between(pl.lit(_iso(lo)), pl.lit(_iso(hi)), closed="left")
            frame.filter(mask).write_csv(root / f"{name}-{i:03d}.csv")
            return root / f"{name}-{i:03d}.csv"
        hours.append((cut(pings, "pings"), cut(readings, "readings"), hi))
    feed(lake, hours[0])
    shutil.copytree(root / "lake", root / "lake-at-start")
    return {"root": root, "lake": lake, "hours": hours[1:], "events": load_events(root / "city" / "events.json")}


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def feed(lake: Lake, hour: tuple) -> None:
    ingest_pings(lake, hour[0], key=KEY)
    ingest_readings(lake, hour[1])


@pytest.fixture(scope="module")
def watched(city):
    """The city fed hour by hour with one watcher polling after each hour; its alerts."""
    watcher = Watcher(city["lake"], k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    for hour in city["hours"]:
        feed(city["lake"], hour)
        watcher.poll()
    return scan(city["lake"], "alerts").collect()


def test_live_alerts_find_every_injected_event_and_nothing_else(watched, city):
    found = score(for_scoring(watched), city["events"])
    assert (found["recall"], found["precision"]) == (1.0, 1.0), found
    assert watched["alert_id"].n_unique() == watched.height
    surge = watched.filter(pl.col("kind") == SURGE).row(0, named=True)
    assert surge["place_id"] == "places:expo" and SURGE_EVIDENCE.fullmatch(surge["evidence"])


def test_a_watcher_restarted_from_its_checkpoint_writes_the_same_alerts(watched, city, tmp_path):
    """Stopped after any hour (its object dropped) and started again, the alerts come out the same: no alert lost, none
    twice. Here it also loses its checkpoint file once, so it resumes from the alerts table's last commit."""
    lake = Lake.open(shutil.copytree(city["root"] / "lake-at-start", tmp_path / "lake"))
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    for i, hour in enumerate(city["hours"]):
        feed(lake, hour)
        watcher.poll()
        if i % 7 == 3:
            if i == 24:
                (lake.steward_dir / CHECKPOINT).unlink()
            watcher = Watcher(lake, k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    again = scan(lake, "alerts").collect()
    columns = ["alert_id", "kind", "place_id", "sensor_ids", "start", "end", "status"]
    assert again.select(columns).sort("alert_id").equals(watched.select(columns).sort("alert_id"))


@pytest.mark.integration
def test_a_killed_watcher_publishes_every_alert_once_per_state(watched, city, mosquitto, tmp_path):
    """`citylake watch` in its own process, SIGKILLed in the middle of the feed and started again: the broker's retained
    alerts and the table agree with the uninterrupted run."""
    import paho.mqtt.client as paho

    lake = Lake.open(shutil.copytree(city["root"] / "lake-at-start", tmp_path / "lake"))
    topic = f"alerts-{uuid.uuid4().hex[:6]}"
    seen: dict[str, dict] = {}
    host, port = mosquitto.removeprefix("mqtt://").split(":")
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"l-{uuid.uuid4().hex[:6]}")
    listener.on_message = lambda c, u, m: seen.__setitem__(m.topic.rsplit("/", 1)[1], json.loads(m.payload))
    listener.connect(host, int(port))
    listener.subscribe(f"{topic}/#", qos=1)
    listener.loop_start()
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "CITYLAKE_WATCH_POLL_SECONDS": "1", "CITYLAKE_WATCH_LATENESS_MINUTES": "0"}
    command = [sys.executable, "-m", "citylake.cli", "--lake", str(lake.root), "watch", "--broker", mosquitto, "--alerts-topic", topic]
    watcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for i, hour in enumerate(city["hours"]):
            feed(lake, hour)
            _wait_judged(lake, hour[2] - dt.timedelta(minutes=5), watcher)
            if i == len(city["hours"]) - 6:  # in the middle of the surge
                watcher.kill()
                watcher.wait()
                watcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=60)
        assert watcher.returncode == 0 and "Traceback" not in err, err
    finally:
        watcher.kill()
        listener.loop_stop()
        listener.disconnect()
    table = scan(lake, "alerts").collect()
    assert set(table["alert_id"]) == set(seen) == set(watched["alert_id"])
    for row in table.iter_rows(named=True):
        assert (seen[row["alert_id"]]["status"], seen[row["alert_id"]]["revision"]) == (row["status"], row["revision"])


def _wait_judged(lake: Lake, until: dt.datetime, process: subprocess.Popen, timeout: float = 90) -> None:
    """Until the watcher's checkpoint says it judged the step ``until``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the watcher stopped: {process.stderr.read()[-2000:]}")
        try:
            judged = json.loads((lake.steward_dir / CHECKPOINT).read_text())["evaluated"]
            if judged and dt.datetime.fromisoformat(judged) >= until:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the watcher did not judge {until} within {timeout}s")


def test_a_ping_from_the_future_does_not_make_the_watcher_skip_minutes(park_lake, tmp_path):
    """Pings timed now (valid to ingest) landing before a replayed past day: event time is the 20th newest timestamp, so
    three such pings do not make the watcher skip to now, and the crowd in the past is still judged and raised."""
    watcher = Watcher(park_lake, k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    friday = utc(2026, 11, 6, 10)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    ingest_pings(park_lake, write_pings_csv(tmp_path / "first.csv", [(f"from-now-{i}", now, 31.205, 121.405) for i in range(3)]), key=KEY)
    watcher.poll()  # three pings from the future land first
    live = quiet_park_days(np.random.default_rng(1), [friday.date()]) + plaza_crowd(friday, 40)
    ingest_pings(park_lake, write_pings_csv(tmp_path / "live.csv", live), key=KEY)
    watcher.poll()
    assert scan(park_lake, "alerts").collect()["place_id"].to_list() == ["places:plaza"]
    assert watcher.checkpoint.evaluated < now - dt.timedelta(hours=1)


def test_a_crowd_that_leaves_every_day_at_the_same_time_is_no_surge(tmp_path):
    """25 devices in the plaza every weekday from 11:00 to 12:30, none after: the window 12:25-12:40 is judged against the
    busier of its two quarter-hours, so the everyday crowd's last minutes are not a surge."""
    lake = with_key(Lake.init(tmp_path / "lake"))
    (tmp_path / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": box_polygon(*PLAZA), "properties": {"id": "plaza", "category": "park"}}]}))
    ingest_places(lake, tmp_path / "places.geojson")

    def everyday(day: dt.date) -> list[tuple]:
        start = dt.datetime.combine(day, dt.time(11), dt.timezone.utc)
        return [(f"regular-{d}", start + dt.timedelta(minutes=m), 31.2045 + 0.0001 * (d % 10), 121.4045 + 0.0001 * (d // 10))
                for d in range(25) for m in range(0, 90, 5)]
    history = [dt.date(2026, 11, 2) + dt.timedelta(days=d) for d in range(4)]
    ingest_pings(lake, write_pings_csv(tmp_path / "h.csv", [r for day in history for r in everyday(day)]), key=KEY)
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=NOW), announce=lambda _: None)
    live = everyday(dt.date(2026, 11, 6)) + [(f"late-walker-{i}", utc(2026, 11, 6, 14, m), 31.25, 121.45)  # not in the plaza
                                             for i in range(20) for m in range(0, 60, 3)]  # event time: the 20th newest device
    ingest_pings(lake, write_pings_csv(tmp_path / "live.csv", live), key=KEY)
    watcher.poll()
    assert watcher.checkpoint.evaluated >= utc(2026, 11, 6, 13)
    assert scan(lake, "alerts").collect().is_empty()

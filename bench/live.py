"""Figure live_alerts: `citylake watch` on generated cities fed hour by hour after their history, against the injected
truth and against the batch analysis (`report`'s) of the same lake and window; the detector's own latency in event
time (the step that first raised each event's alert, from the event's start).

Three city shapes: ``developed`` (2,000 devices, 8 days, seed 1: the thresholds were set on it), ``held_out`` (5,000
devices, 16 days, seed 11: generated after the work, with a longer history and more devices) and ``weekend_surge``
(1,200 devices, 10 days, seed 5: the surge falls on a Saturday after five weekdays, so no weekend usual exists and the
watcher must say so rather than alert).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import polars as pl

SHAPES = {"developed": (2_000, 8, 1), "held_out": (5_000, 16, 11), "weekend_surge": (1_200, 10, 5)}
KEY = b"bench-live-key-0123456789abcdef-0123456789abcdef"


def bench_live_alerts(work: Path) -> dict:
    out: dict = {"how": "history ingested from files up to 1 h before the first event; the rest fed as hourly files (pings, "
                        "readings) with the watcher polling after each; batch = analytics.analyse over the whole lake when fed; "
                        "both scored with analytics.truth.score on the events in the window; latency = the watcher's first "
                        "step raising a matching alert minus the event's start, in event minutes (no ingest lag: see "
                        "live_replay for lag through MQTT)",
                 "shapes": {name: {"devices": d, "days": n, "seed": s} for name, (d, n, s) in SHAPES.items()}}
    for name, (devices, days, seed) in SHAPES.items():
        out[name] = _one_city(work / name, devices=devices, days=days, seed=seed)
        shutil.rmtree(work / name, ignore_errors=True)
    return out


def _one_city(work: Path, *, devices: int, days: int, seed: int) -> dict:
    from citylake.analytics.alerts import for_scoring
    from citylake.analytics.detect import analyse
    from citylake.analytics.truth import load_events, matches, score
    from citylake.analytics.watch import WatchConfig, Watcher
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.iot import ingest_readings, ingest_sensors
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake, scan

    work.mkdir(parents=True, exist_ok=True)
    generate_city(work / "city", devices=devices, days=days, seed=seed)
    events = load_events(work / "city" / "events.json")
    lake = Lake.init(work / "lake")
    ingest_places(lake, work / "city" / "places.geojson")
    ingest_sensors(lake, work / "city" / "sensors.csv")
    start = min(e["start"] for e in events) - dt.timedelta(hours=1)
    end = max(e["end"] for e in events) + dt.timedelta(hours=2)
    pings = pl.read_csv(work / "city" / "pings.csv", infer_schema=False)
    readings = pl.read_csv(work / "city" / "readings.csv", infer_schema=False)

    def feed(lo: dt.datetime | None, hi: dt.datetime) -> None:
        for frame, name in ((pings, "pings"), (readings, "readings")):
            before_hi = pl.col("ts") < pl.lit(_iso(hi))
            mask = before_hi if lo is None else pl.col("ts").is_between(pl.lit(_iso(lo)), pl.lit(_iso(hi)), closed="left")
            frame.filter(mask).write_csv(work / f"{name}.csv")
        ingest_pings(lake, work / "pings.csv", key=KEY)
        ingest_readings(lake, work / "readings.csv")

    feed(None, start)
    publish_history(lake, start.date())
    said: list[str] = []
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=dt.timedelta(0), released_clock="event"), announce=said.append)
    hours, polls = int((end - start).total_seconds() // 3600), []
    for h in range(hours):
        feed(start + dt.timedelta(hours=h), start + dt.timedelta(hours=h + 1))
        began = time.perf_counter()
        watcher.poll()
        polls.append(time.perf_counter() - began)
    alerts = scan(lake, "alerts").collect()
    live = score(for_scoring(alerts), events)
    batch = score(analyse(lake).detections, events)  # the batch job over the whole lake, history included
    scored = for_scoring(alerts).with_columns(pl.Series("alert_id", alerts["alert_id"])).to_dicts()
    latency = {}
    for event in events:
        raised = [watcher.raised_at[a["alert_id"]] for a in scored if matches(a, event) and a["alert_id"] in watcher.raised_at]
        latency[event["kind"]] = round((min(raised) - event["start"]).total_seconds() / 60, 1) if raised else None
    if latency.get("crowd_surge") is not None:  # the generator's crowd arrives an hour after the event's start (its sensors jump
        latency["crowd_surge_from_crowd_arrival"] = latency["crowd_surge"] - 60  # at the start): ingestion.city._pings, hour >= 11
    released = scan(lake, "alerts_released").collect()
    return {"live_hours": hours, "pings": pings.height, "live": _brief(live), "batch": _brief(batch),
            "released": _released_figures(released, events),
            "latency_event_minutes": latency, "alerts": alerts.height, "said": said,
            "poll_seconds_median": round(sorted(polls)[len(polls) // 2], 3), "poll_seconds_max": round(max(polls), 3)}


def publish_history(lake, before: dt.date) -> None:
    """The lake's default policy and the release of every day before ``before`` (what analysts' crowd alerts are judged
    against), spending the default share (the budget less what live crowd alerts keep)."""
    from citylake.lake import scan
    from citylake.privacy import Policy, key_check, write_policy
    from citylake.queries.release import publish

    policy = Policy().with_epoch(key_check(KEY))
    write_policy(lake, policy)
    days = sorted({d for d in scan(lake, "pings").select(pl.col("date").unique()).collect()["date"] if d < before})
    publish(lake, policy=policy, epsilon=policy.release_epsilon, delta=policy.delta_per_day, days=days)


def _released_figures(released: pl.DataFrame, events: list[dict]) -> dict:
    """What analysts and planners saw: every kind scored as the steward's are; crowd surges (the private test) apart,
    with the detector latency of each surge found (when the test said yes — its window's end plus the settling time —
    from the event's start)."""
    from citylake.analytics.alerts import SURGE, for_scoring
    from citylake.analytics.released_alerts import RELEASED_SETTLE
    from citylake.analytics.truth import matches, score

    surges = released.filter(pl.col("kind") == SURGE)
    crowd_events = [e for e in events if e["kind"] == "crowd_surge"]
    found = [min((a["end"] for a in for_scoring(surges).to_dicts() if matches(a, e)), default=None) for e in crowd_events]
    return {"all_kinds": _brief(score(for_scoring(released), events)), "crowd_surges_raised": surges.height,
            "crowd_surges_found": sum(f is not None for f in found), "crowd_surges_injected": len(crowd_events),
            "crowd_surge_latency_event_minutes": [round((f + RELEASED_SETTLE - e["start"]).total_seconds() / 60, 1) if f else None
                                                  for f, e in zip(found, crowd_events)]}


def _brief(result: dict) -> dict:
    return {k: result[k] for k in ("precision", "recall", "detections", "events_found", "missed", "false")}


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- through a real Mosquitto ------------------------------------------------------------------------
def bench_live_mqtt(work: Path) -> dict:
    """Live pings through a real Mosquitto on loopback: sustained messages/s and publish → queryable lag; files per
    partition after a stream with and without background compaction; and crowd-surge alert latency with the whole chain
    (replay at 60× → `ingest mqtt` pings and readings → `watch` → alert published) on two city shapes."""
    broker, process = _mosquitto(work)
    try:
        out: dict = {"ingest": _sustained_pings(work / "sustained", broker)}
        out["files"] = {name: _stream_files(work / f"files-{name}", broker, compact_seconds=seconds)
                        for name, seconds in (("with_compaction", 30), ("without_compaction", 0))}
        out["alert_latency"] = {name: _replayed_surge(work / f"replay-{name}", broker, *SHAPES[name])
                                for name in ("developed", "held_out")}
        return out
    finally:
        process.terminate()
        process.wait(timeout=10)


def _mosquitto(work: Path):
    import socket
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n"
                    "max_inflight_messages 0\n")
    process = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"mqtt://127.0.0.1:{port}", process


def _keyed_lake(root: Path):
    from citylake.lake import Lake
    from citylake.privacy import Policy, key_check, write_policy

    lake = Lake.init(root)
    write_policy(lake, Policy().with_epoch(key_check(KEY)))
    return lake


def _publisher(broker: str):
    import uuid

    import paho.mqtt.client as paho

    host, port = broker.removeprefix("mqtt://").split(":")
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect(host, int(port))
    client.loop_start()
    return client


def _ingester(lake, broker: str, topic: str, feed: str, *, client_id: str, **options):
    """`ingest_mqtt` on a thread, its session opened first so nothing published after this returns is missed."""
    import threading

    from citylake.ingestion.mqtt import ingest_mqtt

    key = KEY if feed == "pings" else None
    ingest_mqtt(lake, broker, topic, feed=feed, key=key, client_id=client_id, max_seconds=0.3, compact_seconds=0)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("report", ingest_mqtt(
        lake, broker, topic, feed=feed, key=key, client_id=client_id, **options)), daemon=True)
    thread.start()
    return thread, box


def _sustained_pings(work: Path, broker: str, messages: int = 3_000, per_message: int = 100) -> dict:
    """``messages`` messages of ``per_message`` pings published as fast as QoS 1 allows; each message's devices are its own,
    so the first commit holding a message is seen by its pseudonyms appearing in the table."""
    import json

    import numpy as np

    from citylake.lake import added_since, read_added
    from citylake.privacy import pseudonym

    lake = _keyed_lake(work / "lake")
    thread, box = _ingester(lake, broker, "bench/pings", "pings", client_id="bench-sustained", commit_seconds=1,
                            max_messages=messages, max_seconds=600, compact_seconds=0)
    owner = {pseudonym(f"m{m}-d0", KEY): m for m in range(messages)}
    client = _publisher(broker)
    published, seen = np.zeros(messages), np.full(messages, np.nan)
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)
    started = time.perf_counter()
    sent = []
    for m in range(messages):
        body = [{"device_id": f"m{m}-d{d}", "ts": (base + dt.timedelta(seconds=m % 3600)).isoformat(), "lat": 31.2 + d * 1e-4,
                 "lon": 121.4} for d in range(per_message)]
        published[m] = time.perf_counter()
        sent.append(client.publish("bench/pings", json.dumps(body), qos=1))
    for message in sent:
        message.wait_for_publish(60)
    publishing = time.perf_counter() - started
    version = None
    while thread.is_alive() or np.isnan(seen).any():
        added = added_since(lake, "pings", version)
        version = added.version
        rows = read_added(added, ["device_id"])
        if rows is not None:
            now = time.perf_counter()
            for device in rows["device_id"].unique():
                if device in owner and np.isnan(seen[owner[device]]):
                    seen[owner[device]] = now
        if not thread.is_alive() and np.isnan(seen).any() and time.perf_counter() - started > 600:
            break
        time.sleep(0.1)
    client.loop_stop()
    landed = time.perf_counter() - started
    lag = seen - published
    return {"messages": messages, "pings_per_message": per_message, "commit_seconds": 1,
            "publish_seconds": round(publishing, 2), "all_queryable_seconds": round(landed, 2),
            "messages_per_s": round(messages / landed, 1), "pings_per_s": round(messages * per_message / landed),
            "lag_p50_s": round(float(np.nanpercentile(lag, 50)), 2), "lag_p95_s": round(float(np.nanpercentile(lag, 95)), 2),
            "accepted": box["report"].accepted if "report" in box else None, "missing": int(np.isnan(seen).sum())}


def _stream_files(work: Path, broker: str, *, compact_seconds: float, seconds: int = 120) -> dict:
    """A steady stream (10 messages a second, pings over 4 partitions) committed every second for ``seconds``: the
    commits of 20 minutes at the default 10-second commits. Files per partition at the end."""
    import json

    lake = _keyed_lake(work / "lake")
    topic = f"bench/stream-{compact_seconds:g}"
    thread, box = _ingester(lake, broker, topic, "pings", client_id=f"bench-stream-{compact_seconds:g}", commit_seconds=1,
                            max_seconds=seconds, compact_seconds=compact_seconds)
    client = _publisher(broker)
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
    started, m = time.perf_counter(), 0
    while time.perf_counter() - started < seconds - 2:
        body = [{"device_id": f"s{m}-{d}", "ts": (base + dt.timedelta(seconds=m)).isoformat(), "lat": 31.2 + (d % 2) * 0.5,
                 "lon": 121.4 + (d // 2 % 2) * 0.5} for d in range(40)]
        client.publish(topic, json.dumps(body), qos=1)
        m += 1
        time.sleep(0.1)
    thread.join(timeout=120)
    client.loop_stop()
    stats = lake.stats("pings")
    return {"seconds": seconds, "messages": m, "compact_seconds": compact_seconds, "partitions": stats.partitions,
            "files": stats.files, "files_per_partition": round(stats.files / max(stats.partitions, 1), 1),
            "rows": lake.rows("pings"), "commits": lake.table("pings").version()}


def _replayed_surge(work: Path, broker: str, devices: int, days: int, seed: int, speed: float = 60.0) -> dict:
    """History from files up to 10:30 of the surge day; then 10:30-12:30 replayed at ``speed`` through the broker into two
    live ingesters (commits every 2 s) while `watch` polls every second; the surge alert's publish time, in event time."""
    import json
    import threading
    import uuid

    from citylake.analytics.watch import WatchConfig, Watcher
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.iot import ingest_readings, ingest_sensors
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.ingestion.replay import replay
    from citylake.live import AlertPublisher

    work.mkdir(parents=True, exist_ok=True)
    generate_city(work / "city", devices=devices, days=days, seed=seed)
    from citylake.analytics.truth import load_events

    surge = next(e for e in load_events(work / "city" / "events.json") if e["kind"] == "crowd_surge")
    live_from, live_to = surge["start"] + dt.timedelta(minutes=30), surge["start"] + dt.timedelta(hours=2, minutes=30)
    lake = _keyed_lake(work / "lake")
    ingest_places(lake, work / "city" / "places.geojson")
    ingest_sensors(lake, work / "city" / "sensors.csv")
    for name in ("pings", "readings"):
        frame = pl.read_csv(work / "city" / f"{name}.csv", infer_schema=False).filter(pl.col("ts") < pl.lit(_iso(live_from)))
        frame.write_csv(work / f"history-{name}.csv")
    ingest_pings(lake, work / "history-pings.csv", key=KEY)
    ingest_readings(lake, work / "history-readings.csv")
    tag = uuid.uuid4().hex[:6]
    ingesters = [_ingester(lake, broker, f"{tag}/{feed}", feed, client_id=f"{tag}-{feed}", commit_seconds=2,
                           max_seconds=(live_to - live_from).total_seconds() / speed + 20, compact_seconds=0)
                 for feed in ("pings", "readings")]
    heard: dict[str, float] = {}
    first_ping: list[float] = []  # when the replay's first message arrived
    listener = _publisher(broker)
    def on_message(client, userdata, msg) -> None:
        if msg.topic.startswith(f"{tag}/alerts/"):
            heard.setdefault(json.loads(msg.payload)["alert_id"], time.perf_counter())
        elif not first_ping:
            first_ping.append(time.perf_counter())

    listener.on_message = on_message
    listener.subscribe([(f"{tag}/pings", 0), (f"{tag}/readings", 0), (f"{tag}/alerts/#", 1)])
    publisher = AlertPublisher(broker, f"{tag}/alerts")
    replayed = WatchConfig(poll_seconds=1, lateness=dt.timedelta(0), released_clock="event")  # a replay: the data's clock
    watcher = Watcher(lake, k=10, config=replayed, publish=publisher.send,
                      announce=lambda _: None)
    stop = threading.Event()
    watching = threading.Thread(target=lambda: watcher.run(stop=stop), daemon=True)
    watching.start()
    report = replay(broker, pings=work / "city" / "pings.csv", pings_topic=f"{tag}/pings", readings=work / "city" / "readings.csv",
                    readings_topic=f"{tag}/readings", speed=speed, start=live_from, end=live_to)
    for thread, _ in ingesters:
        thread.join(timeout=120)
    time.sleep(5)
    stop.set()
    watching.join(timeout=60)
    publisher.close()
    listener.loop_stop()
    from citylake.lake import scan

    alerts = scan(lake, "alerts").collect().filter((pl.col("kind") == "crowd surge") & (pl.col("place_id") == "places:expo"))
    crowd = surge["start"] + dt.timedelta(hours=1)  # the generator's crowd arrives at 11:00 (ingestion.city._pings)
    out = {"devices": devices, "days": days, "seed": seed, "speed": speed, "window": [_iso(live_from), _iso(live_to)],
           "commit_seconds": 2, "poll_seconds": 1, "replayed_rows": report.rows, "messages": report.messages}
    if alerts.is_empty() or not first_ping or alerts["alert_id"][0] not in heard:
        return {**out, "alert": None}
    # the first message left when the replay clock reached the end of its slice (one second of wall clock after the first row)
    event_at = report.first + dt.timedelta(seconds=(heard[alerts["alert_id"][0]] - first_ping[0] + 1) * speed)
    return {**out, "alert_published_event_time": _iso(event_at),
            "latency_from_crowd_arrival_event_minutes": round((event_at - crowd).total_seconds() / 60, 1),
            "latency_from_event_start_event_minutes": round((event_at - surge["start"]).total_seconds() / 60, 1),
            "detector_step": _iso(watcher.raised_at.get(alerts["alert_id"][0], live_from))}


# -- a 3x surge ------------------------------------------------------------------------------------------
SURGE_SHAPES = {"small_square": (20, 5, 31), "busy_square": (200, 10, 32)}  # usual devices per 15 min at midday, weekdays of history, seed


def bench_three_times_surge(work: Path) -> dict:
    """The issue's latency goal: a surge to 3x the usual at one square, fed in 5-minute files to a watcher polling after
    each; event minutes from the surge's start to the step that raised it, and alerts raised outside it. Two squares: ~20
    devices per 15 minutes at midday with 5 weekdays of history, and ~200 with 10. Generated here, not by the sample city."""
    out: dict = {"shapes": {n: {"midday_devices_per_15min": b, "history_days": d, "seed": s} for n, (b, d, s) in SURGE_SHAPES.items()}}
    for name, (base, days, seed) in SURGE_SHAPES.items():
        out[name] = _three_times(work / name, base=base, days=days, seed=seed)
        shutil.rmtree(work / name, ignore_errors=True)
    return out


def _three_times(work: Path, *, base: int, days: int, seed: int) -> dict:
    import json

    import numpy as np

    from citylake.analytics.watch import WatchConfig, Watcher
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import scan

    rng = np.random.default_rng(seed)
    work.mkdir(parents=True, exist_ok=True)
    square = (121.400, 31.200, 121.405, 31.205)
    box = {"type": "Polygon", "coordinates": [[[square[0], square[1]], [square[2], square[1]], [square[2], square[3]],
                                               [square[0], square[3]], [square[0], square[1]]]]}
    (work / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": box, "properties": {"id": "square", "category": "square"}}]}))
    lake = _keyed_lake(work / "lake")
    ingest_places(lake, work / "places.geojson")
    first = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)  # a Monday; history runs on weekdays only
    history = [first + dt.timedelta(days=d) for d in range(14) if (first + dt.timedelta(days=d)).weekday() < 5][:days]
    live_day = history[-1] + dt.timedelta(days=1 if history[-1].weekday() < 4 else 3)
    surge_from, surge_to = live_day + dt.timedelta(hours=11), live_day + dt.timedelta(hours=12)

    def quarter(at: dt.datetime, factor: float = 1.0) -> list[tuple]:
        hour = at.hour + at.minute / 60
        usual = base * (0.15 + 0.85 * max(0.0, np.sin((hour - 6) / 14 * np.pi)))  # quiet at night, busiest mid-afternoon
        n = rng.poisson(usual * factor)
        devices = rng.integers(0, 50 * base, n)
        seconds = rng.uniform(0, 900, n)
        lat, lon = rng.uniform(square[1], square[3], n), rng.uniform(square[0], square[2], n)
        return [(f"d{d}", at + dt.timedelta(seconds=float(s)), float(y), float(x)) for d, s, y, x in zip(devices, seconds, lat, lon)]

    def write(rows: list[tuple], path: Path) -> Path:
        pl.DataFrame(rows, schema=["device_id", "ts", "lat", "lon"], orient="row").with_columns(
            pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(path)
        return path

    rows = [r for day in history for q in range(96) for r in quarter(day + dt.timedelta(minutes=15 * q))]
    ingest_pings(lake, write(rows, work / "history.csv"), key=KEY)
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=dt.timedelta(0), released_clock="event"), announce=lambda _: None)
    live = [r for q in range(96) for r in quarter(live_day + dt.timedelta(minutes=15 * q),
                                                  3.0 if surge_from <= live_day + dt.timedelta(minutes=15 * q) < surge_to else 1.0)]
    live.sort(key=lambda r: r[1])
    times = pl.Series([r[1] for r in live])
    for step in range(8 * 12, 15 * 12):  # 08:00-15:00 in 5-minute files
        lo, hi = live_day + dt.timedelta(minutes=5 * step), live_day + dt.timedelta(minutes=5 * step + 5)
        chunk = [r for r, t in zip(live, times) if lo <= t < hi]
        if chunk:
            ingest_pings(lake, write(chunk, work / "live.csv"), key=KEY)
        watcher.poll()
    alerts = scan(lake, "alerts").collect()
    inside = alerts.filter((pl.col("start") < surge_to) & (pl.col("end") > surge_from))
    raised = [watcher.raised_at[a] for a in inside["alert_id"] if a in watcher.raised_at]
    return {"history_days": len(history), "live_day": live_day.date().isoformat(), "history_pings": len(rows),
            "surge_found": bool(raised),
            "latency_event_minutes": round((min(raised) - surge_from).total_seconds() / 60, 1) if raised else None,
            "alerts_outside_surge": alerts.height - inside.height, "evidence": inside["evidence"].to_list()[:1]}

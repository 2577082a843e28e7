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
            mask = pl.col("ts") < pl.lit(_iso(hi)) if lo is None else pl.col("ts").is_between(pl.lit(_iso(lo)), pl.lit(_iso(hi)), closed="left")
            frame.filter(mask).write_csv(work / f"{name}.csv")
        ingest_pings(lake, work / "pings.csv", key=KEY)
        ingest_readings(lake, work / "readings.csv")

    feed(None, start)
    said: list[str] = []
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=dt.timedelta(0)), announce=said.append)
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
    return {"live_hours": hours, "pings": pings.height, "live": _brief(live), "batch": _brief(batch),
            "latency_event_minutes": latency, "alerts": alerts.height, "said": said,
            "poll_seconds_median": round(sorted(polls)[len(polls) // 2], 3), "poll_seconds_max": round(max(polls), 3)}


def _brief(result: dict) -> dict:
    return {k: result[k] for k in ("precision", "recall", "detections", "events_found", "missed", "false")}


def _iso(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")

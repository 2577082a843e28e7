"""Figures detection_scenarios and detection_scenarios_held_out: the batch detector on the generated family of
``bench/scenarios.py`` — precision and recall per scenario and over the family, false alarms per 100 place-weeks on the
null cities, how often "high" was right, and what it said where the history was too short."""

from __future__ import annotations

import datetime as dt
import shutil
import time
import zoneinfo
from pathlib import Path

from bench.scenarios import FAMILY, HELD_OUT, K, Scenario, generate
from citylake.lake import Lake

GOALS = "precision >= 0.9 and recall >= 0.9 over the family; <= 1 false alarm per 100 place-weeks on null cities (issue 21)"


def bench_detection_scenarios(work: Path, scenarios: tuple[Scenario, ...] = FAMILY) -> dict:
    per, started = {}, time.perf_counter()
    for scenario in scenarios:
        per[scenario.name] = run_scenario(scenario, work)
    return {**family_totals(per), "per_scenario": per, "seconds": round(time.perf_counter() - started, 1), "goals": GOALS}


def bench_held_out(work: Path) -> dict:
    out = bench_detection_scenarios(work, HELD_OUT)
    out["note"] = "settings kept out of development: scored once, at the end of the work on issue 21"
    return out


def run_scenario(scenario: Scenario, work: Path) -> dict:
    """Generate, ingest (the ingestion functions), analyse and score one scenario."""
    from citylake.analytics.detect import analyse
    from citylake.analytics.truth import load_events, score
    from citylake.ingestion.iot import ingest_readings, ingest_sensors
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places

    city = work / f"{scenario.name}-city"
    manifest = generate(scenario, city)
    lake = Lake.init(work / f"{scenario.name}-lake", timezone=scenario.timezone)
    ingest_places(lake, city / "places.geojson")
    ingest_sensors(lake, city / "sensors.parquet")
    ingest_readings(lake, city / "readings.parquet")
    ingest_pings(lake, city / "pings.parquet", key=b"bench-scenarios")
    result = analyse(lake, k=K)
    events = load_events(city / "events.json")
    judgeable = [e for e in events if _judgeable(e, scenario)]
    found = score(result.detections, judgeable)
    high = result.detections.filter(result.detections["severity"] == "high")
    out = {"pings": manifest["pings"], "days": scenario.days, "places": scenario.places, "timezone": scenario.timezone,
           "events": len(events), "judgeable_events": len(judgeable), **{k: found[k] for k in (
               "detections", "true_detections", "events_found", "precision", "recall", "missed", "false")},
           "high": high.height, "high_true": score(high, judgeable)["true_detections"] if high.height else 0,
           "place_weeks": round(scenario.places * scenario.days / 7, 1)}
    if scenario.null:
        out["false_alarms_per_100_place_weeks"] = round(100 * found["detections"] / out["place_weeks"], 2)
    if len(judgeable) < len(events) or scenario.days < 5:
        out["history_said"] = result.history_needed(result.place_scores["place_id"].unique().to_list())
    shutil.rmtree(lake.root, ignore_errors=True)
    shutil.rmtree(city, ignore_errors=True)
    return out


def _judgeable(event: dict, scenario: Scenario) -> bool:
    """Whether the detector's rule lets it judge the event's first hour: 2 other days of its kind (weekday / weekend, in the
    city's time zone) and 3 other days in all. Sensor faults and drops need no usual of people."""
    if event["kind"] != "crowd_surge":
        return True
    from citylake.analytics.baselines import MIN_HISTORY_DAYS, MIN_KIND_DAYS

    zone = zoneinfo.ZoneInfo(scenario.timezone)
    first = dt.datetime.fromisoformat(scenario.start).date()
    days = [first + dt.timedelta(days=d) for d in range(scenario.days)]
    day = event["start"].astimezone(zone).date()
    others = [d for d in days if d != day]
    kind = [d for d in others if (d.weekday() >= 5) == (day.weekday() >= 5)]
    return len(kind) >= MIN_KIND_DAYS and len(others) >= MIN_HISTORY_DAYS


def family_totals(per: dict[str, dict]) -> dict:
    events = [r for r in per.values() if r["judgeable_events"]]
    nulls = [r for r in per.values() if "false_alarms_per_100_place_weeks" in r]
    detections = sum(r["detections"] for r in events)
    high = sum(r["high"] for r in per.values())
    totals = {
        "precision": round(sum(r["true_detections"] for r in events) / max(detections, 1), 3),
        "recall": round(sum(r["events_found"] for r in events) / max(sum(r["judgeable_events"] for r in events), 1), 3),
        "detections": detections, "events": sum(r["events"] for r in per.values()),
        "judgeable_events": sum(r["judgeable_events"] for r in per.values()),
        "high_precision": round(sum(r["high_true"] for r in per.values()) / high, 3) if high else None, "high": high,
    }
    if nulls:
        weeks = sum(r["place_weeks"] for r in nulls)
        totals["null_false_alarms_per_100_place_weeks"] = round(100 * sum(r["detections"] for r in nulls) / weeks, 2)
        totals["null_place_weeks"] = round(weeks, 1)
    return totals

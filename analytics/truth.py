"""Check detections against the injected events a generated city writes beside its data (events.json)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl


def load_events(path: str | Path) -> list[dict]:
    events = json.loads(Path(path).read_text())
    for e in events:
        e["start"], e["end"] = (dt.datetime.fromisoformat(e[k].replace("Z", "+00:00")) for k in ("start", "end"))
    return events


def _entities(event: dict) -> set[str]:
    return {v for v in (event.get("place_id"), event.get("sensor_id"), *event.get("sensors", ())) if v}


def matches(detection: dict, event: dict) -> bool:
    """Same place or sensor, overlapping time, and the right kind (a failing sensor is a fault, the rest are events)."""
    kind_ok = (detection["kind"] == "sensor fault") == (event["kind"] == "sensor_failure")
    where = {detection.get("place_id"), *(detection.get("sensor_ids") or [])} - {None}
    return kind_ok and bool(where & _entities(event)) and detection["start"] < event["end"] and detection["end"] > event["start"]


def score(detections: pl.DataFrame, events: list[dict]) -> dict:
    """Precision (detections that match an injected event) and recall (events matched by some detection)."""
    rows = detections.to_dicts()
    hit = [any(matches(d, e) for e in events) for d in rows]
    found = [any(matches(d, e) for d in rows) for e in events]
    return {"detections": len(rows), "true_detections": int(sum(hit)), "events": len(events), "events_found": int(sum(found)),
            "precision": round(sum(hit) / len(rows), 3) if rows else 0.0, "recall": round(sum(found) / len(events), 3) if events else 1.0,
            "missed": [e["kind"] for e, f in zip(events, found) if not f],
            "false": [{k: str(d[k]) for k in ("kind", "place_id", "start", "evidence")} for d, h in zip(rows, hit) if not h][:10]}

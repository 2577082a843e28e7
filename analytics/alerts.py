"""Alerts as episodes: one alert per kind, place (or sensor) and stretch of unusual time, updated as it grows and closed
when it has been quiet for a while. An alert's id is a hash of its kind, where and when it started, so the watcher
recomputing the same episode after a restart writes the same row, never a second one."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import polars as pl

from citylake.analytics.scoring import DROP, FAULT, SEVERITY_RANK, SURGE

KINDS = (SURGE, FAULT, DROP)  # the live watcher's kinds (the batch detector also has ``scoring.READINGS``)
QUIET = {SURGE: dt.timedelta(minutes=15), FAULT: dt.timedelta(hours=1), DROP: dt.timedelta(minutes=30)}  # closes after this


def alert_id(kind: str, where: str, start: dt.datetime) -> str:
    return hashlib.sha256(f"{kind}|{where}|{start.isoformat()}".encode()).hexdigest()[:16]


@dataclass
class Episode:
    alert_id: str
    kind: str
    where: str  # the place (surges, traffic drops) or the sensor (faults) it is about
    place_id: str | None
    sensor_ids: set[str]
    start: dt.datetime
    end: dt.datetime
    severity: str
    evidence: str
    revision: int = 1
    status: str = "open"
    changed: bool = True

    def row(self, now: dt.datetime) -> dict:
        return {"alert_id": self.alert_id, "kind": self.kind, "place_id": self.place_id,
                "sensor_ids": ",".join(sorted(self.sensor_ids)) or None, "start": self.start, "end": self.end,
                "status": self.status, "severity": self.severity, "evidence": self.evidence, "revision": self.revision,
                "updated_at": now}


class Episodes:
    """The open episodes, by kind and where; what changed since the last ``take_changed``."""

    def __init__(self, open_alerts: pl.DataFrame | None = None, *, quiet: dict[str, dt.timedelta] | None = None) -> None:
        self.quiet = quiet or QUIET
        self.open: dict[tuple[str, str], Episode] = {}
        self._closed: list[Episode] = []
        for row in (open_alerts.to_dicts() if open_alerts is not None else []):
            sensors = set((row["sensor_ids"] or "").split(",")) - {""}
            # as the watcher keys it: a fault by its sensor; a surge or drop by its place, a drop without one by its sensor
            where = row["place_id"] if row["kind"] != FAULT and row["place_id"] else next(iter(sorted(sensors)), row["place_id"])
            self.open[(row["kind"], where)] = Episode(row["alert_id"], row["kind"], where, row["place_id"], sensors, row["start"],
                                                      row["end"], row["severity"], row["evidence"], row["revision"], changed=False)

    def flag(self, kind: str, where: str, *, start: dt.datetime, end: dt.datetime, severity: str, evidence: str,
             place_id: str | None = None, sensors: set[str] = frozenset()) -> Episode:
        """Unusual from ``start`` to ``end``: a new episode, or the open one of this kind and place grown."""
        episode = self.open.get((kind, where))
        if episode is None:
            episode = Episode(alert_id(kind, where, start), kind, where, place_id, set(sensors), start, end, severity, evidence)
            self.open[(kind, where)] = episode
            return episode
        grown = end > episode.end or not set(sensors) <= episode.sensor_ids
        worse = SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(episode.severity, 0)
        if grown or worse:
            episode.end = max(episode.end, end)
            episode.sensor_ids |= set(sensors)
            if worse:
                episode.severity, episode.evidence = severity, evidence
            episode.revision += 1
            episode.changed = True
        return episode

    def close_quiet(self, now: dt.datetime) -> None:
        """Close every episode that has seen nothing unusual for its kind's quiet time."""
        for key, episode in list(self.open.items()):
            if now - episode.end >= self.quiet[episode.kind]:
                episode.status, episode.revision, episode.changed = "closed", episode.revision + 1, True
                self._closed.append(self.open.pop(key))

    def take_changed(self, now: dt.datetime) -> list[dict]:
        """Rows of the episodes that changed (opened, grew, closed) since the last call."""
        changed = [e for e in (*self._closed, *self.open.values()) if e.changed]
        for episode in changed:
            episode.changed = False
        self._closed = []
        return [e.row(now) for e in changed]


def for_scoring(alerts: pl.DataFrame) -> pl.DataFrame:
    """Alerts in the shape ``analytics.truth.score`` reads: a fault is a sensor fault, a surge or a drop an event."""
    return alerts.select(pl.when(pl.col("kind") == FAULT).then(pl.lit(FAULT)).otherwise(pl.lit("event")).alias("kind"), "place_id",
                         pl.col("sensor_ids").fill_null("").str.split(",").list.eval(pl.element().filter(pl.element() != ""))
                         .alias("sensor_ids"), "start", "end", "evidence")

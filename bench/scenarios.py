"""A family of generated cities to judge the batch detector on, made differently from the sample city
(``ingestion/city.py``): square places on a grid, each with its own volume and weekly pattern in the city's own time zone,
day-to-day and hour-to-hour noise beyond Poisson, ordinary busier hours that are no event, and injected events of several
sizes, lengths and kinds — or none at all (null cities).

Per place: a base volume (devices in its busiest hour) from a few to thousands, drawn log-uniformly; a weekly pattern
(office, leisure, transit, flat, night); a day factor (lognormal) and an hour factor (gamma: negative binomial counts).
Ordinary bumps: a few place-hours 1.2-1.6x busier, as weekends and weather make them; they are not events.

Events (the truth, ``events.json`` in ``analytics.truth``'s shape):
- ``crowd_surge``: devices at a place for 1-8 hours raised to 2.5-8x the usual at the peak (4-8x when it lasts an hour),
  or by a crowd of 3-8 times the lake's k where the usual is small; shoulders at half the excess.
- ``traffic_drop``: a traffic counter at 10-30% of its level for 2-4 daytime hours.
- ``sensor_failure``: stuck (the same value for 3-12 hours), spikes (a few readings at 50x), dropout (silent for 2-6
  hours), negative values.

Each device pings once in each hour it is counted, somewhere inside its place, so the hourly distinct devices are the
drawn counts. A scenario is ``Scenario``; ``FAMILY`` is what development looked at, ``HELD_OUT`` is scored only at the end
(``bench/detection_scenarios.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

K = 10  # the lake's k floor: no crowd under it is detected (nor shown to anyone)
PATTERNS = ("office", "leisure", "transit", "flat", "night")
CENTRE = (47.0, 8.0)  # lat, lon of the grid's corner (nowhere in particular)
SIDE_DEG = 0.002  # a place's side, ~150-220 m
STEP_DEG = 0.004  # grid spacing: places never touch


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    days: int  # days of data, event days included
    places: int
    base: tuple[float, float]  # devices in a place's busiest hour: drawn log-uniformly between these
    surges: int = 0
    surge_hours: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    drops: int = 0
    faults: tuple[str, ...] = ()  # stuck, spikes, dropout, negative
    patterns: tuple[str, ...] = PATTERNS
    timezone: str = "UTC"
    start: str = "2026-03-02"  # a Monday
    day_spread: float = 0.12  # sd of the log day factor
    hour_alpha: float = 0.02  # negative binomial overdispersion of an hour's count
    bumps: int = 6  # ordinary busier place-hours (not events)

    @property
    def null(self) -> bool:
        return not (self.surges or self.drops or self.faults)


def _shape(pattern: str, hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """Share of the busiest hour, by local hour of day and kind of day."""
    def bump(centre: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(hour - centre), 24 - np.abs(hour - centre))
        return np.exp(-(distance ** 2) / (2 * width ** 2))

    if pattern == "office":
        return np.where(weekend, 0.08 + 0.12 * bump(13, 3), 0.05 + 0.95 * bump(12.5, 3.2))
    if pattern == "leisure":
        return np.where(weekend, 0.1 + 0.9 * bump(15, 3.5), 0.1 + 0.45 * bump(19, 2))
    if pattern == "transit":
        return np.where(weekend, 0.1 + 0.45 * bump(14, 4), 0.08 + 0.92 * np.maximum(bump(8, 1.2), bump(18, 1.4)))
    if pattern == "night":
        return np.where(weekend, 0.05 + 0.95 * bump(23.5, 2.2), 0.05 + 0.6 * bump(22.5, 2))
    return 0.55 + 0.3 * bump(14, 5) + 0.15 * weekend


def generate(scenario: Scenario, out: Path, /) -> dict:
    """Write the scenario's places, sensors, readings and pings (Parquet) and its truth into ``out``; returns its manifest."""
    rng = np.random.default_rng(scenario.seed)
    out.mkdir(parents=True, exist_ok=True)
    zone = zoneinfo.ZoneInfo(scenario.timezone)
    t0 = dt.datetime.fromisoformat(scenario.start).replace(tzinfo=zone).astimezone(dt.timezone.utc)  # local midnight
    hours = scenario.days * 24
    utc_hours = np.array([t0 + dt.timedelta(hours=h) for h in range(hours)])
    local = [t.astimezone(zone) for t in utc_hours]
    local_hour = np.array([t.hour for t in local], float)
    weekend = np.array([t.weekday() >= 5 for t in local])
    day_of = np.arange(hours) // 24

    places = [f"p{i:02d}" for i in range(scenario.places)]
    base = np.exp(rng.uniform(*np.log(scenario.base), scenario.places))
    patterns = rng.choice(scenario.patterns, scenario.places)
    usual = np.array([b * _shape(p, local_hour, weekend) for b, p in zip(base, patterns)])  # place x hour
    day_factor = np.exp(rng.normal(0, scenario.day_spread, (scenario.places, scenario.days)))[:, day_of]
    mean = usual * day_factor
    for _ in range(scenario.bumps):  # ordinary busier hours: a warm evening, a market day
        p, h = rng.integers(scenario.places), rng.integers(hours)
        mean[p, h:h + rng.integers(1, 4)] *= rng.uniform(1.2, 1.6)

    events: list[dict] = []
    busy = usual > 0.5 * usual.max(axis=1, keepdims=True)  # surges happen when a place is open
    for _ in range(scenario.surges):
        p = int(rng.integers(scenario.places))
        length = int(rng.choice(scenario.surge_hours))
        starts = np.flatnonzero(busy[p, : hours - length] & (day_of[: hours - length] >= 1))
        if not starts.size:
            continue
        h = int(rng.choice(starts))
        factor = rng.uniform(4.0, 8.0) if length == 1 else rng.uniform(2.5, 8.0)
        peak = mean[p, h:h + length].max()
        excess = max((factor - 1) * peak, rng.uniform(3, 8) * K)
        profile = np.ones(length)
        if length >= 3:
            profile[0] = profile[-1] = 0.5
        mean[p, h:h + length] += excess * profile
        events.append({"kind": "crowd_surge", "place_id": f"places:{places[p]}", "start": _iso(utc_hours[h]),
                       "end": _iso(utc_hours[h] + dt.timedelta(hours=length)), "factor": round(float(factor), 1), "hours": length,
                       "usual_at_peak": round(float(peak), 1)})

    devices = rng.poisson(mean * (rng.gamma(1 / scenario.hour_alpha, scenario.hour_alpha, mean.shape)
                                  if scenario.hour_alpha else 1.0))
    _write_places(out / "places.geojson", places)
    sensors, readings = _sensors_and_readings(rng, scenario, places, patterns, utc_hours, local_hour, weekend, events)
    pq.write_table(sensors, out / "sensors.parquet")
    pq.write_table(readings, out / "readings.parquet")
    pings = _pings(rng, devices, utc_hours, len(places))
    pq.write_table(pings, out / "pings.parquet")
    (out / "events.json").write_text(json.dumps(events, indent=1) + "\n")
    manifest = {"scenario": scenario.name, "seed": scenario.seed, "days": scenario.days, "places": scenario.places,
                "timezone": scenario.timezone, "pings": pings.num_rows, "readings": readings.num_rows, "events": len(events),
                "base": [round(float(b), 1) for b in base], "patterns": patterns.tolist()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _sensors_and_readings(rng, scenario: Scenario, places, patterns, utc_hours, local_hour, weekend, events) -> tuple[pa.Table, pa.Table]:
    """A traffic counter at every transit or office place (at least two), an air sensor at two places, a noise sensor at
    one; readings every 15 minutes, with the scenario's drops and faults injected."""
    steps = len(utc_hours) * 4
    hour_of_step = np.repeat(np.arange(len(utc_hours)), 4)
    traffic_places = [i for i, p in enumerate(patterns) if p in ("transit", "office")] or [0]
    traffic_places = (traffic_places + [i for i in range(len(places)) if i not in traffic_places])[:max(2, len(traffic_places))]
    rows = [(f"TR-{places[i]}", "traffic", "vehicles/15min", i) for i in traffic_places]
    rows += [(f"AQ-{places[i]}", "air_quality", "ug/m3", int(i)) for i in rng.choice(len(places), min(2, len(places)), replace=False)]
    noisy = int(rng.integers(len(places)))
    rows.append((f"NS-{places[noisy]}", "noise", "dB(A)", noisy))
    values = np.empty((len(rows), steps))
    metrics = []
    for s, (_, kind, _, i) in enumerate(rows):
        shape = _shape(patterns[i], local_hour, weekend)[hour_of_step]
        if kind == "traffic":
            values[s], metric = rng.poisson(rng.uniform(40, 200) * (0.15 + shape)), "vehicle_count"
        elif kind == "air_quality":
            drift = np.cumsum(rng.normal(0, 0.3, steps)) * 0.2  # weather: air quality wanders over days
            values[s], metric = rng.uniform(10, 30) * (1 + 0.4 * shape) + drift + rng.normal(0, 1, steps), "pm25"
        else:
            values[s], metric = rng.uniform(45, 55) + 10 * shape + rng.normal(0, 1.2, steps), "laeq"
        metrics.append(metric)
    keep = np.ones((len(rows), steps), bool)
    step_times = np.array([utc_hours[0] + dt.timedelta(minutes=15 * q) for q in range(steps)])
    traffic_rows = [s for s, r in enumerate(rows) if r[1] == "traffic"]
    for _ in range(scenario.drops):
        s = int(rng.choice(traffic_rows))
        length = int(rng.integers(2, 5)) * 4
        daytime = np.flatnonzero((local_hour[hour_of_step] >= 8) & (local_hour[hour_of_step] < 19) & (hour_of_step >= 24))
        q = int(rng.choice(daytime[daytime < steps - length]))
        q -= q % 4
        values[s, q:q + length] *= rng.uniform(0.1, 0.3)
        events.append({"kind": "traffic_drop", "place_id": f"places:{places[rows[s][3]]}", "sensors": [rows[s][0]],
                       "start": _iso(step_times[q]), "end": _iso(step_times[q] + dt.timedelta(minutes=15 * length))})
    for fault in scenario.faults:
        s = int(rng.integers(len(rows)))
        q = int(rng.integers(96, steps - 60))
        if fault == "stuck":
            length = int(rng.integers(12, 49))
            values[s, q:q + length] = values[s, q]
        elif fault == "spikes":
            length = int(rng.integers(1, 4))
            values[s, q:q + length] = np.abs(values[s]).max() * 50
        elif fault == "dropout":
            length = int(rng.integers(8, 25))
            keep[s, q:q + length] = False
        else:  # negative
            length = 2
            values[s, q:q + length] = -abs(values[s, q]) - 1
        events.append({"kind": "sensor_failure", "sensor_id": rows[s][0], "mode": fault, "start": _iso(step_times[q]),
                       "end": _iso(step_times[q] + dt.timedelta(minutes=15 * length))})
    sensors = pa.table({"sensor_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "unit": [r[2] for r in rows],
                        "lat": [_centre(r[3])[0] for r in rows], "lon": [_centre(r[3])[1] for r in rows],
                        "place_id": [f"places:{places[r[3]]}" for r in rows]})
    sensor_ids = np.repeat([r[0] for r in rows], steps)[keep.ravel()]
    readings = pa.table({"sensor_id": sensor_ids, "ts": pa.array(np.tile(_stamps(step_times), len(rows))[keep.ravel()]),
                         "metric": np.repeat(metrics, steps)[keep.ravel()], "value": np.round(values.ravel()[keep.ravel()], 2)})
    return sensors, readings


def _pings(rng, devices: np.ndarray, utc_hours, places: int) -> pa.Table:
    """One ping per counted device and hour, at a random point inside its place and a random second of the hour."""
    counts = devices.ravel()
    total = int(counts.sum())
    place = np.repeat(np.repeat(np.arange(places), devices.shape[1]), counts)
    hour = np.repeat(np.tile(np.arange(devices.shape[1]), places), counts)
    lat0, lon0 = np.array([_centre(p) for p in range(places)]).T
    lat = lat0[place] + rng.uniform(-0.45, 0.45, total) * SIDE_DEG
    lon = lon0[place] + rng.uniform(-0.45, 0.45, total) * SIDE_DEG
    seconds = rng.integers(0, 3600, total)
    ts = _stamps(utc_hours)[hour] + seconds.astype("timedelta64[s]")
    return pa.table({"device_id": pc.cast(pa.array(np.arange(total)), pa.string()), "ts": pa.array(ts).cast(pa.timestamp("us", "UTC")),
                     "lat": np.round(lat, 6), "lon": np.round(lon, 6)})


def _centre(index: int) -> tuple[float, float]:
    row, col = divmod(index, 8)
    return CENTRE[0] + row * STEP_DEG, CENTRE[1] + col * STEP_DEG


def _write_places(path: Path, places: list[str]) -> None:
    features = []
    for i, place in enumerate(places):
        lat, lon = _centre(i)
        h = SIDE_DEG / 2
        ring = [[lon - h, lat - h], [lon + h, lat - h], [lon + h, lat + h], [lon - h, lat + h], [lon - h, lat - h]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"id": place, "name": f"Place {place}", "category": "block"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def _stamps(times) -> np.ndarray:
    return np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[us]")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the family ---------------------------------------------------------------------------------------------------------
FAULTS = ("stuck", "spikes", "dropout", "negative")
FAMILY = (
    Scenario("few_devices", 11, days=14, places=12, base=(3, 25), surges=4, faults=("stuck",)),
    Scenario("tens_to_hundreds", 12, days=14, places=10, base=(30, 300), surges=4, drops=1, faults=("spikes",)),
    Scenario("thousands", 13, days=10, places=4, base=(1000, 3000), surges=3, drops=1),
    Scenario("mixed_28_days", 14, days=28, places=12, base=(5, 1500), surges=5, drops=1, faults=("dropout", "negative")),
    Scenario("five_days", 15, days=5, places=8, base=(20, 400), surges=2, faults=("stuck",)),
    Scenario("shanghai_leisure", 16, days=14, places=10, base=(10, 600), surges=4, patterns=("leisure", "night"),
             timezone="Asia/Shanghai", start="2026-11-02"),
    Scenario("faults_of_every_kind", 17, days=10, places=6, base=(20, 200), surges=1, drops=1, faults=FAULTS),
    Scenario("long_surges", 18, days=14, places=8, base=(15, 500), surges=4, surge_hours=(6, 8)),
    Scenario("short_surges", 19, days=14, places=8, base=(40, 800), surges=4, surge_hours=(1, 2)),
    Scenario("noisy_days", 20, days=21, places=10, base=(10, 1000), surges=4, day_spread=0.25, hour_alpha=0.05),
    Scenario("thin_three_days", 21, days=3, places=6, base=(30, 300), surges=2),
    Scenario("null_small", 31, days=28, places=20, base=(3, 60), bumps=12),
    Scenario("null_mixed_berlin", 32, days=21, places=14, base=(10, 2000), timezone="Europe/Berlin", bumps=10),
    Scenario("null_short_noisy", 33, days=7, places=14, base=(5, 300), day_spread=0.25, hour_alpha=0.05, bumps=10),
)
# Scored only at the end of the work (issue 21): settings never run while the detector was tuned.
HELD_OUT = (
    Scenario("held_out_sao_paulo", 9001, days=18, places=12, base=(4, 1200), surges=4, drops=1, faults=("stuck", "spikes"),
             timezone="America/Sao_Paulo", start="2026-05-06"),
    Scenario("held_out_few_devices_9_days", 9002, days=9, places=10, base=(2, 20), surges=3, faults=("dropout",)),
    Scenario("held_out_null", 9003, days=28, places=25, base=(3, 800), day_spread=0.18, hour_alpha=0.03, bumps=15),
)

"""A realistic sample city, written as the feed files a city would deliver.

``generate_city(out, devices=…, days=…, seed=…)`` writes, deterministically per seed:

- ``places.geojson``: districts, parks, a business district, an expo hall, roads, POIs;
- ``sensors.csv``: air quality, noise, traffic counters on roads, footfall counters at places;
- ``readings.csv``: a reading every 15 minutes with daily and weekly cycles;
- ``pings.csv`` (or ``.parquet``): devices that live in homes, commute to work, visit parks and
  shops and dwell there, with GPS noise;
- ``events.json``: the injected truth (a crowd surge at the expo, a failing sensor, a traffic
  jam) so later analysis can be checked against it.

A small share of rows carry the mess real feeds have (duplicate deliveries, swapped lat/lon,
empty values), so the quarantine has something to show.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import shapely

CENTRE = (31.20, 121.45)  # lat, lon of the city centre
DISTRICT_GRID = 4  # districts form a 4 x 4 grid
DISTRICT_DEG = 0.04  # ~4 km per district: a 16 km city
GPS_NOISE_M = 15.0
METRES_PER_DEG = 111_320.0
STEP_MIN = 15  # sensors report every 15 minutes
UTC = dt.timezone.utc


@dataclass
class Place:
    id: str
    name: str
    category: str
    geometry: shapely.Geometry
    capacity: int | None = None


def _blob(rng: np.random.Generator, lat: float, lon: float, radius_deg: float, vertices: int = 36) -> shapely.Polygon:
    """An irregular polygon with tens of vertices, like a surveyed park outline."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    r = radius_deg * rng.uniform(0.65, 1.0, vertices)
    return shapely.make_valid(shapely.Polygon(np.c_[lon + r * np.cos(angles) / np.cos(np.radians(lat)), lat + r * np.sin(angles)]))


def city_places(rng: np.random.Generator) -> list[Place]:
    lat0 = CENTRE[0] - DISTRICT_GRID * DISTRICT_DEG / 2
    lon0 = CENTRE[1] - DISTRICT_GRID * DISTRICT_DEG / 2
    places = [
        Place(f"district-{i}-{j}", f"District {chr(65 + i)}{j + 1}", "district",
              shapely.box(lon0 + j * DISTRICT_DEG, lat0 + i * DISTRICT_DEG, lon0 + (j + 1) * DISTRICT_DEG, lat0 + (i + 1) * DISTRICT_DEG))
        for i in range(DISTRICT_GRID) for j in range(DISTRICT_GRID)
    ]
    places.append(Place("cbd", "Central Business District", "business_district", _blob(rng, CENTRE[0], CENTRE[1], 0.008, 48)))
    places.append(Place("expo", "Expo Hall", "expo", shapely.box(CENTRE[1] + 0.03, CENTRE[0] - 0.025, CENTRE[1] + 0.034, CENTRE[0] - 0.022),
                        capacity=20_000))
    for k in range(8):
        lat, lon = CENTRE[0] + rng.uniform(-0.065, 0.065), CENTRE[1] + rng.uniform(-0.065, 0.065)
        places.append(Place(f"park-{k}", f"Park {k + 1}", "park", _blob(rng, lat, lon, rng.uniform(0.002, 0.005)), capacity=3_000))
    span = DISTRICT_GRID * DISTRICT_DEG / 2
    for k, angle in enumerate(np.linspace(0, np.pi, 4, endpoint=False)):  # four avenues through the centre
        dx, dy = np.cos(angle) * span, np.sin(angle) * span
        line = shapely.LineString([(CENTRE[1] - dx, CENTRE[0] - dy), (CENTRE[1], CENTRE[0]), (CENTRE[1] + dx, CENTRE[0] + dy)])
        places.append(Place(f"road-{k}", f"Avenue {k + 1}", "road", line))
    kinds = ["restaurant", "cafe", "shop", "school", "hospital", "museum", "gym"]
    for k in range(200):
        lat, lon = CENTRE[0] + rng.normal(0, 0.03), CENTRE[1] + rng.normal(0, 0.03)
        places.append(Place(f"poi-{k}", f"POI {k}", f"poi:{kinds[k % len(kinds)]}", shapely.Point(lon, lat)))
    return places


def _sensors(rng: np.random.Generator, places: list[Place]) -> dict[str, np.ndarray]:
    by_id = {p.id: p for p in places}
    rows: list[tuple[str, str, str, float, float]] = []
    for k in range(60):
        rows.append((f"AQ{k:03d}", "air_quality", "ug/m3", CENTRE[0] + rng.uniform(-0.07, 0.07), CENTRE[1] + rng.uniform(-0.07, 0.07)))
    for k in range(40):
        rows.append((f"NS{k:03d}", "noise", "dB(A)", CENTRE[0] + rng.uniform(-0.07, 0.07), CENTRE[1] + rng.uniform(-0.07, 0.07)))
    for k in range(4):
        for m, frac in enumerate((0.25, 0.75)):
            point = by_id[f"road-{k}"].geometry.interpolate(frac, normalized=True)
            rows.append((f"TR{k}{m}", "traffic", "vehicles/15min", point.y, point.x))
    for place in [by_id["cbd"], by_id["expo"], *(by_id[f"park-{k}"] for k in range(8))]:
        point = place.geometry.representative_point()
        rows.append((f"FF-{place.id}", "footfall", "people/15min", point.y, point.x))
    near_expo = by_id["expo"].geometry.centroid
    rows.append(("NS-expo", "noise", "dB(A)", near_expo.y + 0.001, near_expo.x + 0.001))
    ids, kinds, units, lat, lon = map(np.array, zip(*rows))
    return {"sensor_id": ids, "kind": kinds, "unit": units, "lat": lat.astype(float), "lon": lon.astype(float)}


def _events(rng: np.random.Generator, start: dt.datetime, days: int, sensors: dict[str, np.ndarray]) -> list[dict]:
    surge_day = min(days - 1, max(1, days // 2))
    failing = str(rng.choice(sensors["sensor_id"][sensors["kind"] == "air_quality"]))
    jam_day = min(days - 1, max(0, surge_day - 1))
    at = lambda d, h: (start + dt.timedelta(days=d, hours=h)).isoformat().replace("+00:00", "Z")  # noqa: E731
    return [
        {"kind": "crowd_surge", "place_id": "places:expo", "sensors": ["FF-expo", "NS-expo"],
         "start": at(surge_day, 10), "end": at(surge_day, 16)},
        {"kind": "sensor_failure", "sensor_id": failing, "mode": "flatline then jumps", "start": at(jam_day, 6), "end": at(jam_day + 1, 6)},
        {"kind": "traffic_jam", "place_id": "places:road-1", "sensors": ["TR10", "TR11"], "start": at(jam_day, 17), "end": at(jam_day, 19)},
    ]


def _in_window(ts: np.ndarray, event: dict) -> np.ndarray:
    start = np.datetime64(event["start"].rstrip("Z"), "us")
    end = np.datetime64(event["end"].rstrip("Z"), "us")
    return (ts >= start) & (ts < end)


def _readings(rng: np.random.Generator, start: dt.datetime, days: int, sensors: dict[str, np.ndarray], events: list[dict]) -> pa.Table:
    steps = days * 24 * 60 // STEP_MIN
    ts = np.datetime64(start.replace(tzinfo=None), "us") + (np.arange(steps) * STEP_MIN * 60 * 10**6).astype("timedelta64[us]")
    hour = (np.arange(steps) * STEP_MIN / 60) % 24
    weekday = ((np.arange(steps) * STEP_MIN // (24 * 60)) + start.weekday()) % 7
    daily = np.exp(-((hour - 8.5) ** 2) / 6) + np.exp(-((hour - 18) ** 2) / 6)  # two rush hours
    daytime = np.clip(np.sin((hour - 6) / 16 * np.pi), 0, None)
    weekend = weekday >= 5
    n = sensors["sensor_id"].size
    base = {"air_quality": 25.0, "noise": 50.0, "traffic": 60.0, "footfall": 20.0}
    values = np.empty((n, steps))
    metric = np.empty(n, dtype=object)
    for i, kind in enumerate(sensors["kind"]):
        level = base[kind] * rng.uniform(0.7, 1.3)
        if kind == "air_quality":
            values[i], metric[i] = level * (1 + 0.6 * daily * ~weekend) + rng.normal(0, 2, steps), "pm25"
        elif kind == "noise":
            values[i], metric[i] = level + 12 * daytime - 3 * weekend + rng.normal(0, 1.5, steps), "laeq"
        elif kind == "traffic":
            values[i], metric[i] = level * (0.2 + 2.5 * daily * np.where(weekend, 0.5, 1.0)) + rng.normal(0, 5, steps), "vehicle_count"
        else:
            values[i], metric[i] = level * (0.1 + 2 * daytime * np.where(weekend, 1.6, 1.0)) + rng.normal(0, 3, steps), "people_count"
    _inject(values, sensors, ts, events, rng)
    values = np.round(np.clip(values, 0, None), 2)
    return pa.table({
        "sensor_id": np.repeat(sensors["sensor_id"], steps), "ts": np.tile(_iso(ts), n),
        "metric": np.repeat(metric.astype(str), steps), "value": values.ravel(),
    })


def _inject(values: np.ndarray, sensors: dict[str, np.ndarray], ts: np.ndarray, events: list[dict], rng: np.random.Generator) -> None:
    row = {s: i for i, s in enumerate(sensors["sensor_id"])}
    for event in events:
        window = _in_window(ts, event)
        if event["kind"] == "crowd_surge":
            values[row["FF-expo"], window] *= 6
            values[row["NS-expo"], window] += 15
        elif event["kind"] == "traffic_jam":
            for sensor in event["sensors"]:
                values[row[sensor], window] *= 0.15  # vehicles stand still: the counters barely tick
        elif event["kind"] == "sensor_failure":
            i = row[event["sensor_id"]]
            first = np.flatnonzero(window)
            half = first[: first.size // 2]
            values[i, half] = values[i, half[0]] if half.size else 0  # stuck at one value
            values[i, first[first.size // 2:]] = rng.choice([0.0, 999.0], first.size - half.size)  # impossible jumps


def _pings(rng: np.random.Generator, start: dt.datetime, days: int, devices: int, places: list[Place], events: list[dict]) -> pa.Table:
    by_cat = lambda c: [p for p in places if p.category == c]  # noqa: E731
    districts, parks, pois = by_cat("district"), by_cat("park"), [p for p in places if p.category.startswith("poi:")]
    cbd, expo = by_cat("business_district")[0], by_cat("expo")[0]
    home = _points_in(rng, [d.geometry for d in districts], devices)
    works_in_cbd = rng.random(devices) < 0.4
    in_cbd, elsewhere = _points_in(rng, [cbd.geometry], devices), _points_in(rng, [d.geometry for d in districts], devices)
    work = np.where(works_in_cbd[:, None], in_cbd, elsewhere)
    per_day = rng.integers(30, 90, devices)  # pings per device per day
    total = int(per_day.sum() * days)
    dev = np.repeat(np.repeat(np.arange(devices), per_day), days)
    day = np.concatenate([np.repeat(np.arange(days), k) for k in per_day])
    seconds = rng.uniform(0, 86400, total)
    hour = seconds / 3600
    weekend = ((day + start.weekday()) % 7) >= 5
    position = home[dev].copy()
    # weekday work hours at work, commutes in between (moving along the way)
    at_work = ~weekend & (hour >= 9) & (hour < 17)
    position[at_work] = work[dev[at_work]]
    for lo, hi, a, b in ((7, 9, home, work), (17, 19, work, home)):
        moving = ~weekend & (hour >= lo) & (hour < hi)
        f = ((hour[moving] - lo) / (hi - lo))[:, None]
        position[moving] = a[dev[moving]] * (1 - f) + b[dev[moving]] * f
    # visits: each device-day may visit one park or POI and dwell there 30 min to 3 h
    visit_place = rng.integers(0, len(parks) + len(pois), (devices, days))
    visits = rng.random((devices, days)) < np.where(((np.arange(days) + start.weekday()) % 7) >= 5, 0.6, 0.25)
    visit_start = np.where(((np.arange(days) + start.weekday()) % 7 >= 5)[None, :], rng.uniform(10, 16, (devices, days)),
                           rng.uniform(12, 13.5, (devices, days)))
    visit_end = visit_start + rng.uniform(0.5, 3.0, (devices, days))
    targets = _points_in(rng, [p.geometry.buffer(0) for p in parks], devices * days, per_shape=True)
    poi_xy = np.array([[p.geometry.y, p.geometry.x] for p in pois])
    at_poi = poi_xy[np.clip(visit_place - len(parks), 0, None)]
    spot = np.where((visit_place < len(parks))[..., None], targets.reshape(devices, days, 2), at_poi)
    visiting = visits[dev, day] & (hour >= visit_start[dev, day]) & (hour < visit_end[dev, day])
    position[visiting] = spot[dev[visiting], day[visiting]]
    ts = np.datetime64(start.replace(tzinfo=None), "us") + ((day * 86400 + seconds) * 1e6).astype("timedelta64[us]")
    surge = next(e for e in events if e["kind"] == "crowd_surge")
    crowd = (rng.random(devices) < 0.3)[dev] & _in_window(ts, surge) & (hour >= 11) & (hour < 15)
    position[crowd] = _points_in(rng, [expo.geometry], int(crowd.sum()))
    noise = rng.normal(0, GPS_NOISE_M / METRES_PER_DEG, position.shape)
    position += noise
    order = np.lexsort((ts, dev))
    return pa.table({
        "device_id": np.char.add("dev-", dev[order].astype(str)), "ts": _iso(ts[order]),
        "lat": np.round(position[order, 0], 6), "lon": np.round(position[order, 1], 6),
        "accuracy_m": np.round(rng.uniform(5, 30, total), 1),
    })


def _points_in(rng: np.random.Generator, shapes: list, n: int, *, per_shape: bool = False) -> np.ndarray:
    """n random (lat, lon) points inside the shapes (a random shape for each point)."""
    which = rng.integers(0, len(shapes), n)
    out = np.empty((n, 2))
    for k, shape in enumerate(shapes):
        idx = np.flatnonzero(which == k)
        xmin, ymin, xmax, ymax = shape.bounds
        got = np.empty((0, 2))
        while got.shape[0] < idx.size:
            cand = np.c_[rng.uniform(ymin, ymax, idx.size * 2 + 8), rng.uniform(xmin, xmax, idx.size * 2 + 8)]
            got = np.vstack([got, cand[shapely.contains_xy(shape, cand[:, 1], cand[:, 0])]])
        out[idx] = got[: idx.size]
    return out


def _iso(ts: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(ts, unit="s").astype(str), "Z")


def _add_mess(rng: np.random.Generator, table: pa.Table, rate: float, swap: tuple[str, str] | None = None) -> tuple[pa.Table, dict]:
    """Duplicate deliveries, swapped coordinates and empty values, as real feeds have."""
    n = table.num_rows
    dupes = rng.choice(n, int(n * rate), replace=False)
    table = pa.concat_tables([table, table.take(np.sort(dupes))])
    counts = {"duplicated_rows": int(dupes.size)}
    if swap:
        a, b = swap
        flip = np.zeros(table.num_rows, bool)
        flip[rng.choice(table.num_rows, int(n * rate), replace=False)] = True
        la, lo = table.column(a).to_numpy(), table.column(b).to_numpy()
        table = table.set_column(table.schema.get_field_index(a), a, pa.array(np.where(flip, lo, la)))
        table = table.set_column(table.schema.get_field_index(b), b, pa.array(np.where(flip, la, lo)))
        counts["swapped_coordinates"] = int(flip.sum())
    return table, counts


def generate_city(
    out: str | Path, /, *, devices: int = 2_000, days: int = 7, seed: int = 0, start: str = "2026-11-02",
    pings_format: str = "csv", mess: float = 0.001,
) -> dict:
    """Write the sample city's feed files into ``out``; return what was written (also in manifest.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = dt.datetime.fromisoformat(start).replace(tzinfo=UTC)
    places = city_places(rng)
    sensors = _sensors(rng, places)
    events = _events(rng, t0, days, sensors)
    _write_places(out / "places.geojson", places)
    pcsv.write_csv(pa.table(sensors), out / "sensors.csv")
    readings, readings_mess = _add_mess(rng, _readings(rng, t0, days, sensors, events), mess)
    pcsv.write_csv(readings, out / "readings.csv")
    pings, pings_mess = _add_mess(rng, _pings(rng, t0, days, devices, places, events), mess, swap=("lat", "lon"))
    pings_file = out / f"pings.{pings_format}"
    pq.write_table(pings, pings_file) if pings_format == "parquet" else pcsv.write_csv(pings, pings_file)
    (out / "events.json").write_text(json.dumps(events, indent=2) + "\n")
    manifest = {
        "seed": seed, "devices": devices, "days": days, "start": start,
        "files": {"places": "places.geojson", "sensors": "sensors.csv", "readings": "readings.csv", "pings": pings_file.name,
                  "events": "events.json"},
        "rows": {"places": len(places), "sensors": int(sensors["sensor_id"].size), "readings": readings.num_rows, "pings": pings.num_rows},
        "mess": {"readings": readings_mess, "pings": pings_mess},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_places(path: Path, places: list[Place]) -> None:
    features = [
        {"type": "Feature", "geometry": shapely.geometry.mapping(p.geometry),
         "properties": {"id": p.id, "name": p.name, "category": p.category, **({"capacity": p.capacity} if p.capacity else {})}}
        for p in places
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))

"""Stays and dwell: both engines, against a plain-Python oracle with shapely and no H3."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import shapely

from citylake.h3_index import latlng_to_cells
from citylake.ingestion.map import ingest_places
from citylake.lake import Lake, scan
from citylake.queries import ENGINES, BadFilter, Filters, dwell, od, save_stays, stays, visits

PLAZA = shapely.Polygon([(121.400, 31.200), (121.406, 31.2005), (121.4065, 31.206), (121.4, 31.2058)])
T0 = dt.datetime(2026, 11, 2, 8, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def track_lake(tmp_path_factory):
    """40 devices wandering in and out of a plaza, some with long silences."""
    root = tmp_path_factory.mktemp("stays")
    (root / "p.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": shapely.geometry.mapping(PLAZA), "properties": {"id": "plaza", "category": "plaza"}}]}))
    lake = Lake.init(root / "lake")
    ingest_places(lake, root / "p.geojson")
    rng = np.random.default_rng(21)
    rows = []
    for device in range(40):
        t = T0 + dt.timedelta(minutes=int(rng.integers(0, 60)))
        for _ in range(60):
            t += dt.timedelta(minutes=int(rng.choice([3, 5, 8, 45], p=[0.4, 0.3, 0.25, 0.05])))
            near = rng.random() < 0.7
            lat = 31.203 + rng.normal(0, 0.002 if near else 0.01)
            lon = 121.403 + rng.normal(0, 0.002 if near else 0.01)
            rows.append((device, t, lat, lon))
    device, ts, lat, lon = map(list, zip(*rows))
    lake.write("pings", pa.table({"device_id": device, "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "lat": lat, "lon": lon,
                                  "h3_cell": latlng_to_cells(lat, lon, lake.cell_res)}))
    return lake


def oracle_stays(lake: Lake, max_gap_s: int, min_dwell_s: int) -> list[tuple]:
    pings = scan(lake, "pings").select("device_id", "ts", "lat", "lon").collect().sort("device_id", "ts", "lat", "lon")
    found = []
    for (device,), rows in pings.partition_by("device_id", as_dict=True).items():
        run: list = []
        for ts, lat, lon in rows.select("ts", "lat", "lon").iter_rows():
            inside = PLAZA.contains(shapely.Point(lon, lat))
            if inside and run and (ts - run[-1]).total_seconds() <= max_gap_s:
                run.append(ts)
                continue
            if run and (run[-1] - run[0]).total_seconds() >= min_dwell_s:
                found.append((device, run[0], run[-1], len(run)))
            run = [ts] if inside else []
        if run and (run[-1] - run[0]).total_seconds() >= min_dwell_s:
            found.append((device, run[0], run[-1], len(run)))
    return sorted(found)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("max_gap_min, min_dwell_min", [(30, 5), (10, 0), (60, 20)])
def test_stays_match_the_oracle(track_lake, engine, max_gap_min, min_dwell_min):
    got = stays(track_lake, max_gap_s=max_gap_min * 60, min_dwell_s=min_dwell_min * 60, engine_name=engine)
    want = oracle_stays(track_lake, max_gap_min * 60, min_dwell_min * 60)
    assert len(want) > 20
    assert sorted(got.select("device_id", "start", "end", "pings").iter_rows()) == want
    assert (got["duration_s"] == (got["end"] - got["start"]).dt.total_seconds()).all()
    assert set(got["place_id"]) == {"p:plaza"}


def test_both_engines_agree_with_a_time_window(track_lake):
    window = Filters(start=T0 + dt.timedelta(hours=2), end=T0 + dt.timedelta(hours=5))
    a, b = (stays(track_lake, filters=window, engine_name=e) for e in ENGINES)
    assert a.height > 5 and a.equals(b)
    assert a["start"].min() >= window.start and a["end"].max() < window.end


def test_dwell_and_visits_are_k_anonymous(track_lake):
    found = stays(track_lake)
    safe = pl.from_arrow(dwell(found, k=10).table)
    assert safe.to_dicts()[0]["visits"] == found.height and safe["devices"][0] == found["device_id"].n_unique() >= 10
    assert safe["median_min"][0] == round(found["duration_s"].median() / 60, 1)
    hidden = dwell(found, k=1000)
    assert hidden.table.num_rows == 0 and hidden.suppressed == 1
    per_hour = visits(found, freq="1h", k=1)
    assert sum(per_hour.table.column("visits").to_pylist()) == found.height
    assert visits(found, freq="1h", k=5).suppressed > 0


def test_stays_are_saved_with_their_parameters(track_lake):
    found = stays(track_lake, max_gap_s=600, min_dwell_s=0)
    save_stays(track_lake, found, max_gap_s=600, min_dwell_s=0)
    saved = scan(track_lake, "stays").collect()
    assert saved.height == found.height and set(saved["max_gap_s"]) == {600} and set(saved["min_dwell_s"]) == {0}


def test_bad_parameters_are_named(track_lake):
    with pytest.raises(BadFilter, match="gap must be positive"):
        stays(track_lake, max_gap_s=0)


def stay(device: int, place: str, start_h: float, end_h: float) -> dict:
    return {"device_id": device, "place_id": place, "start": T0 + dt.timedelta(hours=start_h), "end": T0 + dt.timedelta(hours=end_h),
            "duration_s": (end_h - start_h) * 3600.0, "pings": 3}


def test_od_counts_trips_between_consecutive_stays():
    frame = pl.DataFrame([
        stay(1, "home", 0, 1), stay(1, "work", 2, 9), stay(1, "work", 9.5, 10), stay(1, "park", 11, 12),
        stay(2, "home", 0, 1.5), stay(2, "work", 2, 8),
        stay(3, "park", 20, 21),  # one stay, no trip
    ])
    flows = pl.from_arrow(od(frame, freq="1d", k=1).table)
    got = {(r["origin"], r["destination"]): (r["trips"], r["devices"]) for r in flows.to_dicts()}
    assert got == {("home", "work"): (2, 2), ("work", "park"): (1, 1)}  # work → work is a pause, not a trip
    safe = od(frame, freq="1d", k=2)
    assert pl.from_arrow(safe.table)["origin"].to_list() == ["home"] and safe.suppressed == 1


def test_od_between_districts_is_the_same_on_both_engines(tmp_path):
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.location import ingest_pings

    generate_city(tmp_path / "city", devices=120, days=2, seed=6)
    lake = Lake.init(tmp_path / "lake")
    ingest_places(lake, tmp_path / "city" / "places.geojson")
    ingest_pings(lake, tmp_path / "city" / "pings.csv", key=b"k")
    zones = Filters(categories=("district",))
    a, b = (od(stays(lake, filters=zones, engine_name=e), k=1) for e in ENGINES)
    assert a.table.num_rows > 10 and a.table.equals(b.table)
    flows = pl.from_arrow(a.table)
    assert (flows["origin"] != flows["destination"]).all() and flows["origin"].str.starts_with("places:district").all()

"""Sensors and readings: registry with places, readings with unknown sensors quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from citylake.ingestion.iot import ingest_readings, ingest_sensors
from citylake.ingestion.map import ingest_places
from citylake.lake import duckdb_for, scan

PARK = shapely.Polygon([(121.40, 31.20), (121.42, 31.20), (121.42, 31.22), (121.40, 31.22)])
SQUARE = shapely.Polygon([(121.405, 31.205), (121.41, 31.205), (121.41, 31.21), (121.405, 31.21)])  # inside the park


@pytest.fixture
def places_lake(lake, tmp_path):
    features = [{"type": "Feature", "geometry": shapely.geometry.mapping(g), "properties": {"id": i, "name": i, "category": c}}
                for i, g, c in (("park", PARK, "park"), ("square", SQUARE, "plaza"))]
    (tmp_path / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    ingest_places(lake, tmp_path / "places.geojson")
    return lake


def write_sensors(path: Path) -> Path:
    path.write_text(
        "sensor_id,kind,unit,lat,lon,height_m\n"
        "S1,noise,dB,31.207,121.407,3\n"   # in the square (and the park): the smaller place wins
        "S2,air_quality,ug/m3,31.215,121.415,\n"  # in the park only
        "S3,air_quality,ug/m3,31.2230,121.41,\n"  # ~330 m north of the park: nearest within 500 m
        "S4,traffic,count,31.30,121.60,\n"  # far from everything
        "S5,noise,dB,95,121.4,\n"  # bad latitude
    )
    return path


def test_sensors_get_cells_and_places(places_lake, tmp_path):
    report = ingest_sensors(places_lake, write_sensors(tmp_path / "sensors.csv"))
    assert (report.accepted, report.rejected) == (4, 1)
    rows = {r["sensor_id"]: r for r in scan(places_lake, "sensors").collect().to_dicts()}
    assert rows["S1"]["place_id"] == "places:square" and rows["S2"]["place_id"] == "places:park"
    assert rows["S3"]["place_id"] == "places:park" and rows["S4"]["place_id"] is None
    for r in rows.values():  # shapely oracle for the containing places
        inside = [n for n, g in (("places:square", SQUARE), ("places:park", PARK)) if g.contains(shapely.Point(r["lon"], r["lat"]))]
        if inside:
            assert r["place_id"] == inside[0]
    assert json.loads(rows["S1"]["attributes"]) == {"height_m": "3"}


def test_sensor_registry_updates_by_id(places_lake, tmp_path):
    ingest_sensors(places_lake, write_sensors(tmp_path / "sensors.csv"))
    (tmp_path / "moved.csv").write_text("sensor_id,kind,unit,lat,lon\nS2,air_quality,ug/m3,31.30,121.60\n")
    report = ingest_sensors(places_lake, tmp_path / "moved.csv")
    assert (report.accepted, report.updated) == (1, 1) and places_lake.rows("sensors") == 4  # accepted, replacing S2
    moved = scan(places_lake, "sensors").filter(pl.col("sensor_id") == "S2").collect().to_dicts()[0]
    assert (moved["lat"], moved["place_id"]) == (31.30, None)


def test_sensors_from_geojson(lake, tmp_path):
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [121.4, 31.2]},
                 "properties": {"sensor_id": "G1", "kind": "noise", "unit": "dB"}},
                {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "properties": {"sensor_id": "G2"}}]
    (tmp_path / "s.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    report = ingest_sensors(lake, tmp_path / "s.geojson")
    assert (report.accepted, report.rejected) == (1, 1)
    assert "not a Point" in duckdb_for(lake).execute("SELECT reason FROM quarantine").fetchone()[0]


def test_readings_of_unknown_sensors_are_quarantined_then_land_after_registration(places_lake, tmp_path):
    ingest_sensors(places_lake, write_sensors(tmp_path / "sensors.csv"))
    readings = tmp_path / "r.csv"
    readings.write_text(
        "sensor_id,ts,metric,value\n"
        "S1,2026-11-01T00:00:00Z,laeq,55.5\n"
        "S9,2026-11-01T00:00:00Z,laeq,60\n"
        "S1,2026-11-01T00:15:00Z,laeq,NaN\n"
        "S2,2026-11-01T00:15:00Z,pm25,12\n"
    )
    report = ingest_readings(places_lake, readings)
    assert (report.accepted, report.rejected) == (2, 2)
    reasons = dict(duckdb_for(places_lake).execute("SELECT row_number, reason FROM quarantine WHERE table_name = 'readings'").fetchall())
    assert "sensor S9 is not in the registry" in reasons[3] and "value NaN is not finite" in reasons[4]
    (tmp_path / "more.csv").write_text("sensor_id,kind,unit,lat,lon\nS9,noise,dB,31.21,121.41\n")
    ingest_sensors(places_lake, tmp_path / "more.csv")
    again = ingest_readings(places_lake, readings)
    assert (again.accepted, again.duplicates) == (1, 2)
    cells = dict(scan(places_lake, "readings").select("sensor_id", "h3_cell").unique().collect().iter_rows())
    sensors = dict(scan(places_lake, "sensors").select("sensor_id", "h3_cell").collect().iter_rows())
    assert all(cells[s] == sensors[s] for s in cells)


def test_readings_from_json_lines_and_parquet(places_lake, tmp_path):
    ingest_sensors(places_lake, write_sensors(tmp_path / "sensors.csv"))
    (tmp_path / "r.jsonl").write_text(
        '{"sensor_id": "S1", "ts": "2026-11-01T00:00:00Z", "metric": "laeq", "value": 50}\n'
        'not json\n'
        '[1, 2]\n'
        '{"sensor_id": "S2", "ts": 1793491200, "metric": "pm25", "value": "7.5"}\n'
    )
    report = ingest_readings(places_lake, tmp_path / "r.jsonl")
    assert (report.accepted, report.rejected) == (2, 2)
    pq.write_table(pa.table({"sensor_id": ["S1", "S2"], "ts": ["2026-11-02T00:00:00Z"] * 2, "metric": ["laeq", "pm25"],
                             "value": [1.0, np.nan]}), tmp_path / "r.parquet")
    report = ingest_readings(places_lake, tmp_path / "r.parquet")
    assert (report.accepted, report.rejected) == (1, 1)
    assert places_lake.rows("readings") == 3


def test_read_sensors_without_a_lake(tmp_path):
    from citylake.ingestion.iot import read_sensors

    good, bad = read_sensors(write_sensors(tmp_path / "sensors.csv"))
    assert good.num_rows == 4 and set(good.column("place_id").to_pylist()) == {None}
    assert bad.height == 1 and "lat 95" in bad["reason"][0]


def test_jsonl_objects_lacking_a_key_in_a_later_chunk_are_quarantined_not_an_error(places_lake, tmp_path):
    """A JSON Lines file's columns are its first objects' keys; a chunk whose objects all lack one has missing values."""
    ingest_sensors(places_lake, write_sensors(tmp_path / "sensors.csv"))
    full = [{"sensor_id": "S1", "ts": f"2026-11-01T00:0{i}:00Z", "metric": "noise", "value": 50 + i} for i in range(4)]
    partial = [{"sensor_id": "S1", "ts": f"2026-11-01T01:0{i}:00Z", "metric": "noise"} for i in range(4)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in full + partial))
    report = ingest_readings(places_lake, tmp_path / "r.jsonl", batch_rows=2)
    assert (report.accepted, report.rejected) == (4, 4) and report.reasons == {"value missing": 4}
    lines = duckdb_for(places_lake).execute("SELECT row_number FROM quarantine WHERE table_name = 'readings' ORDER BY 1").fetchall()
    assert [line for (line,) in lines] == [5, 6, 7, 8]

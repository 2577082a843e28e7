"""The sample city: deterministic per seed, injected events present, place joins exact."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import shapely

from citylake.ingestion.city import generate_city
from citylake.ingestion.iot import ingest_readings, ingest_sensors
from citylake.ingestion.location import ingest_pings
from citylake.ingestion.map import ingest_places
from citylake.lake import Lake, duckdb_for, scan

FOOTFALL_SQL = """
SELECT place_id, count(*) AS pings
FROM pings JOIN place_cells c USING (h3_cell) JOIN places p USING (place_id)
WHERE p.category IN ('park', 'expo', 'business_district')
  AND (c.interior OR ST_Contains(ST_GeomFromWKB(p.geometry), ST_Point(pings.lon, pings.lat)))
GROUP BY 1
"""


def test_same_seed_same_city(tmp_path):
    a = generate_city(tmp_path / "a", devices=50, days=2, seed=4)
    b = generate_city(tmp_path / "b", devices=50, days=2, seed=4)
    generate_city(tmp_path / "c", devices=50, days=2, seed=5)
    assert a == b
    assert (tmp_path / "c" / "pings.csv").read_bytes() != (tmp_path / "a" / "pings.csv").read_bytes()  # seed 5 differs
    for name in ("places.geojson", "sensors.csv", "readings.csv", "pings.csv", "events.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_city_lands_and_the_place_join_matches_shapely(tmp_path):
    city = generate_city(tmp_path / "city", devices=150, days=3, seed=2)
    lake = Lake.init(tmp_path / "lake")
    ingest_places(lake, tmp_path / "city" / "places.geojson")
    ingest_sensors(lake, tmp_path / "city" / "sensors.csv")
    assert ingest_readings(lake, tmp_path / "city" / "readings.csv").rejected == 0
    report = ingest_pings(lake, tmp_path / "city" / "pings.csv", key=b"k")
    mess = city["mess"]["pings"]
    assert (report.rejected, report.duplicates) == (mess["swapped_coordinates"], mess["duplicated_rows"])
    got = dict(duckdb_for(lake).execute(FOOTFALL_SQL).fetchall())
    pings = scan(lake, "pings").select("lat", "lon").collect()
    places = scan(lake, "places").filter(pl.col("category").is_in(["park", "expo", "business_district"])).collect()
    want = {}
    for place_id, wkb in places.select("place_id", "geometry").iter_rows():
        inside = int(shapely.contains_xy(shapely.from_wkb(wkb), pings["lon"].to_numpy(), pings["lat"].to_numpy()).sum())
        if inside:
            want[place_id] = inside
    assert got == want and len(want) >= 5


def test_injected_events_show_in_the_data(tmp_path):
    generate_city(tmp_path / "city", devices=300, days=5, seed=3)
    events = {e["kind"]: e for e in json.loads((tmp_path / "city" / "events.json").read_text())}
    readings = pl.read_csv(tmp_path / "city" / "readings.csv").with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))

    def mean(sensor: str, event: dict, inside: bool = True) -> float:
        """Mean value in the event window, or in the same hours of the other days."""
        start, end = (dt.datetime.fromisoformat(event[k].replace("Z", "+00:00")) for k in ("start", "end"))
        rows = readings.filter(pl.col("sensor_id") == sensor)
        window = pl.col("ts").is_between(pl.lit(start), pl.lit(end), closed="left")
        same_hours = pl.col("ts").dt.hour().is_between(start.hour, end.hour - 1) & (pl.col("ts").dt.date() != start.date())
        return rows.filter(window if inside else same_hours)["value"].mean()

    surge, jam = events["crowd_surge"], events["traffic_jam"]
    assert mean("FF-expo", surge) > 3 * mean("FF-expo", surge, inside=False)
    assert mean("TR10", jam) < 0.5 * mean("TR10", jam, inside=False)
    failure = events["sensor_failure"]
    start, end = (dt.datetime.fromisoformat(failure[k].replace("Z", "+00:00")) for k in ("start", "end"))
    during = readings.filter((pl.col("sensor_id") == failure["sensor_id"]) & pl.col("ts").is_between(start, end, closed="left"))
    during = during.sort("ts")["value"].to_numpy()
    assert np.unique(during[: during.size // 2]).size == 1 and set(during[during.size // 2:]) <= {0.0, 999.0}

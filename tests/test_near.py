"""Things near places, k nearest, readings during busy hours, and the people–things–places profile:
both engines agree, and distances match an independent oracle (shapely in a UTM projection, haversine)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import polars as pl
import pytest
import shapely
from conftest import generated_city_lake

from citylake.h3_index.distance import haversine_m
from citylake.lake import Lake, scan
from citylake.queries import ENGINES, BadFilter, Filters, conditions, correlations, footfall, profile
from citylake.queries.near import busy_hours, near, nearest_things, readings_near, things


@pytest.fixture(scope="module")
def city_lake(tmp_path_factory):
    return generated_city_lake(tmp_path_factory.mktemp("near"), devices=300, days=3, seed=21)


def oracle_distances(lake: Lake, place_filter: pl.Expr, what: str) -> pl.DataFrame:
    """Every (place, thing) distance, measured in the city's UTM zone with shapely: no H3, no sphere."""
    places = scan(lake, "places").filter(place_filter).collect()
    found = things(lake, what)
    shapes = gpd.GeoSeries(shapely.from_wkb(places["geometry"].to_numpy()), crs=4326)
    utm = shapes.estimate_utm_crs()
    outlines = shapes.to_crs(utm).to_numpy()
    points = gpd.GeoSeries(shapely.points(found["lon"].to_numpy(), found["lat"].to_numpy()), crs=4326).to_crs(utm).to_numpy()
    rows = [{"place_id": pid, "thing_id": tid, "distance_m": float(d)}
            for pid, outline in zip(places["place_id"], outlines)
            for tid, d in zip(found["thing_id"], shapely.distance(outline, points))]
    return pl.DataFrame(rows)


@pytest.mark.parametrize("what, radius", [("sensors", 300.0), ("sensors", 1200.0), ("pois", 150.0)])
def test_near_matches_the_utm_oracle(city_lake, what, radius):
    got = near(city_lake, what=what, radius_m=radius, filters=Filters(categories=("park", "expo", "business_district")))
    want = oracle_distances(city_lake, pl.col("category").is_in(["park", "expo", "business_district"]), what)
    # UTM and the sphere differ by well under 1%: things that close to the radius could go either way
    clear = want.filter((pl.col("distance_m") - radius).abs() > 0.01 * radius)
    inside = set(clear.filter(pl.col("distance_m") <= radius).select("place_id", "thing_id").iter_rows())
    outside = set(clear.filter(pl.col("distance_m") > radius).select("place_id", "thing_id").iter_rows())
    pairs = set(got.select("place_id", "thing_id").iter_rows())
    assert len(inside) > 5 and inside <= pairs and not (pairs & outside)
    both = got.join(want, on=["place_id", "thing_id"], suffix="_oracle")
    assert np.allclose(both["distance_m"], both["distance_m_oracle"], rtol=0.01, atol=0.5)


def test_k_nearest_pois_of_places_match_the_oracle(city_lake):
    got = nearest_things(city_lake, of="places", what="pois", k=4, filters=Filters(categories=("park",)))
    want = (oracle_distances(city_lake, pl.col("category") == "park", "pois")
            .filter(pl.col("place_id") != pl.col("thing_id")).sort("place_id", "distance_m")
            .group_by("place_id", maintain_order=True).head(4))
    assert got.height == want.height == 4 * 8
    assert np.allclose(got.sort("place_id", "rank")["distance_m"], want["distance_m"], rtol=0.01, atol=0.5)


def test_k_nearest_of_sensors_are_exact(city_lake):
    got = nearest_things(city_lake, of="sensors", what="sensors", k=3)
    sensors = things(city_lake, "sensors")
    lat, lon = sensors["lat"].to_numpy(), sensors["lon"].to_numpy()
    d = haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    np.fill_diagonal(d, np.inf)  # a sensor is not its own neighbour
    want = np.sort(d, axis=1)[:, :3]
    order = {sid: i for i, sid in enumerate(sensors["thing_id"])}
    got_d = got.sort("sensor_id", "rank").group_by("sensor_id", maintain_order=True).agg("distance_m")
    for sid, dists in got_d.iter_rows():
        np.testing.assert_allclose(dists, want[order[sid]], rtol=1e-9)
    assert set(got["sensor_id"]) == set(sensors["thing_id"]) and (got["sensor_id"] != got["thing_id"]).all()


def test_readings_near_agree_on_both_engines_and_with_a_direct_computation(city_lake):
    filters = Filters(categories=("expo", "park"))
    results = [readings_near(city_lake, radius_m=400, freq="1h", filters=filters, engine_name=e) for e in ENGINES]
    assert results[0].height > 0 and results[0].equals(results[1])
    # direct: readings of the sensors the oracle puts within 400 m, averaged per place, metric and hour
    pairs = oracle_distances(city_lake, pl.col("category").is_in(["expo", "park"]), "sensors").filter(pl.col("distance_m") <= 390)
    readings = scan(city_lake, "readings").collect()
    direct = (pairs.join(readings, left_on="thing_id", right_on="sensor_id")
              .group_by("place_id", "metric", pl.col("ts").dt.truncate("1h").alias("bucket")).agg(pl.col("value").mean().alias("v")))
    both = results[0].join(direct, on=["place_id", "metric", "bucket"])
    assert both.height > 0.9 * direct.height  # near-radius pairs aside, the same groups …
    same_sensors = both.join(pairs.group_by("place_id").len(), on="place_id")
    assert np.allclose(same_sensors.filter(pl.col("sensors") == pl.col("len"))["mean"],
                       same_sensors.filter(pl.col("sensors") == pl.col("len"))["v"], rtol=1e-6)  # … and the same means


def test_conditions_use_busy_hours_from_k_anonymous_footfall(city_lake):
    filters = Filters(place_ids=("places:expo",))
    got = [conditions(city_lake, radius_m=300, filters=filters, k=3, engine_name=e) for e in ENGINES]
    assert got[0].height > 0 and got[0].equals(got[1])
    hourly = pl.from_arrow(footfall(city_lake, freq="1h", filters=filters, k=3).table)
    busy = busy_hours(hourly)["hour"].to_list()
    peak = hourly.group_by(pl.col("bucket").dt.hour()).agg(pl.col("devices").mean()).sort("devices")["bucket"][-1]
    assert peak in busy and got[0]["busy_hours"][0] == ",".join(map(str, busy))
    shanghai = conditions(city_lake, radius_m=300, filters=Filters(place_ids=("places:expo",), tz="Asia/Shanghai"), k=3)
    assert shanghai["busy_hours"][0] == ",".join(map(str, sorted((hour + 8) % 24 for hour in busy)))  # UTC+8, no summer time
    assert shanghai.drop("busy_hours").equals(got[0].drop("busy_hours"))  # the same hours, named on the city's clock


def test_profile_joins_footfall_and_readings_and_stays_k_anonymous(city_lake):
    filters = Filters(categories=("expo", "business_district"))
    results = [profile(city_lake, radius_m=300, freq="1h", filters=filters, k=5, engine_name=e) for e in ENGINES]
    assert results[0].table.equals(results[1].table) and results[0].suppressed == results[1].suppressed
    table = pl.from_arrow(results[0].table)
    assert (table["devices"] >= 5).all() and results[0].suppressed > 0
    people = pl.from_arrow(footfall(city_lake, freq="1h", filters=filters, k=5).table)
    assert table.select(people.columns).equals(people)  # footfall exactly as the footfall query gives it
    metrics = set(table.columns) - set(people.columns)
    assert metrics and metrics <= set(scan(city_lake, "readings").select("metric").unique().collect()["metric"])
    assert correlations(table).height > 0


def test_bad_arguments_say_what_to_do(city_lake):
    with pytest.raises(BadFilter, match="no place matches"):
        near(city_lake, filters=Filters(place_ids=("nowhere",)))
    with pytest.raises(BadFilter, match="radius"):
        near(city_lake, radius_m=0)
    with pytest.raises(BadFilter, match="use one of"):
        near(city_lake, what="trees")

"""Footfall on both engines: the same answers, shapely's answers, k-anonymous."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import h3
import polars as pl
import pyarrow.parquet as pq
import pytest
import shapely
from conftest import TEST_KEY, generated_city_lake

from citylake.lake import Lake, scan
from citylake.queries import ENGINES, BadFilter, Filters, UnknownEngine, footfall, footfalls

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def city_lake(tmp_path_factory):
    return generated_city_lake(tmp_path_factory.mktemp("queries"), devices=400, days=4, seed=9, feeds=("places", "sensors", "pings"))


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def oracle_footfall(lake: Lake, filters: Filters, freq_us: int) -> pl.DataFrame:
    """Brute force: every ping against every polygonal place with shapely, no H3 at all."""
    pings = scan(lake, "pings").filter(filters.ping_expr()).select("device_id", "ts", "lat", "lon").collect()
    places = scan(lake, "places").filter(filters.place_expr()).collect()
    rows = []
    for place in places.iter_rows(named=True):
        shape = shapely.from_wkb(place["geometry"])
        if shape.geom_type not in ("Polygon", "MultiPolygon"):
            continue
        inside = pings.filter(pl.Series(shapely.contains_xy(shape, pings["lon"].to_numpy(), pings["lat"].to_numpy())))
        rows.append(inside.with_columns(pl.lit(place["place_id"]).alias("place_id")))
    hits = pl.concat(rows)
    micros = hits["ts"].dt.epoch("us")
    hits = hits.with_columns(pl.Series("bucket", (micros - micros % freq_us)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return (hits.group_by("place_id", "bucket").agg(pl.len().cast(pl.Int64).alias("pings"),
                                                     pl.col("device_id").n_unique().cast(pl.Int64).alias("devices"))
            .sort("place_id", "bucket"))


def test_footfall_matches_the_shapely_oracle(city_lake, engine):
    got = pl.from_arrow(footfall(city_lake, freq="1h", k=1, engine_name=engine).table).select("place_id", "bucket", "pings", "devices")
    want = oracle_footfall(city_lake, Filters(), 3600 * 10**6)
    assert got.height > 100 and got.equals(want)


@pytest.mark.parametrize("by, res", [("place", None), ("category", None), ("cell", 8), ("cell", None)])
def test_both_engines_give_the_same_answer(city_lake, by, res):
    filters = Filters(start=dt.datetime(2026, 11, 3, tzinfo=UTC), end=dt.datetime(2026, 11, 5, 12, tzinfo=UTC), hours=tuple(range(8, 20)))
    results = [footfall(city_lake, by=by, res=res, freq="15min", filters=filters, k=3, engine_name=e) for e in ENGINES]
    assert results[0].table.num_rows > 0
    assert results[0].table.equals(results[1].table)
    assert results[0].suppressed == results[1].suppressed


def test_cells_match_h3_parents(city_lake, engine):
    got = pl.from_arrow(footfall(city_lake, by="cell", res=7, freq="1d", k=1, engine_name=engine).table)
    pings = scan(city_lake, "pings").select("h3_cell", "ts").collect()
    parents = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(c), 7)) for c in pings["h3_cell"].to_list()]
    want = pings.with_columns(pl.Series("parent", parents), pl.col("ts").dt.truncate("1d").alias("bucket"))
    want = want.group_by("parent", "bucket").len().sort("parent", "bucket")
    assert got.select("h3_cell", "bucket", pl.col("pings").cast(pl.UInt32)).rows() == want.rows()


def test_k_anonymity_withholds_small_groups_and_says_how_many(city_lake, engine):
    everything = pl.from_arrow(footfall(city_lake, freq="15min", k=1, engine_name=engine).table)
    safe = footfall(city_lake, freq="15min", k=10, engine_name=engine)
    table = pl.from_arrow(safe.table)
    assert table["devices"].min() >= 10
    assert safe.suppressed == everything.filter(pl.col("devices") < 10).height > 0
    assert table.height + safe.suppressed == everything.height


def test_filters_agree_with_the_oracle(city_lake, engine):
    filters = Filters(start=dt.datetime(2026, 11, 3, 6, tzinfo=UTC), end=dt.datetime(2026, 11, 5, tzinfo=UTC),
                      hours=tuple(range(10, 16)), weekdays=(1, 2, 3), categories=("park", "expo"),
                      bbox=(121.38, 31.14, 121.52, 31.26))
    got = pl.from_arrow(footfall(city_lake, freq="1h", filters=filters, k=1, engine_name=engine).table)
    want = oracle_footfall(city_lake, filters, 3600 * 10**6)
    assert got.height > 5 and got.select("place_id", "bucket", "pings", "devices").equals(want)
    assert set(got["category"]) <= {"park", "expo"}
    assert all(10 <= b.hour < 16 and b.weekday() in (1, 2, 3) for b in got["bucket"])


def test_a_ping_in_two_places_of_a_category_counts_once(city_lake, engine):
    by_place = pl.from_arrow(footfall(city_lake, by="place", freq="1d", k=1, engine_name=engine,
                                      filters=Filters(categories=("district",))).table)
    by_category = pl.from_arrow(footfall(city_lake, by="category", freq="1d", k=1, engine_name=engine,
                                         filters=Filters(categories=("district",))).table)
    # districts tile the city and share edges: a ping is inside at most one of them
    assert by_category["pings"].sum() == by_place["pings"].sum() > 0


def test_several_views_of_one_window_equal_one_query_each(city_lake, engine):
    window = Filters(start=dt.datetime(2026, 11, 3, tzinfo=UTC), end=dt.datetime(2026, 11, 3, 12, tzinfo=UTC))
    views = [("place", None), ("cell", 9), ("category", None)]
    together = footfalls(city_lake, views=views, freq="1h", filters=window, k=2, engine_name=engine)
    for (by, res), got in zip(views, together):
        alone = footfall(city_lake, by=by, res=res, freq="1h", filters=window, k=2, engine_name=engine)
        assert got.table.num_rows > 0 and got.table.equals(alone.table) and got.suppressed == alone.suppressed


@pytest.mark.parametrize("views", [[("place", None, "15min"), ("cell", 8, "1h"), ("category", None, "1h")],
                                   [("place", None, "1d"), ("cell", 8, "1h")]], ids=["parts-of-days", "whole-days"])
@pytest.mark.parametrize("window", [Filters(), Filters(start=dt.datetime(2026, 11, 2, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
                                                       end=dt.datetime(2026, 11, 4, 7, 45, tzinfo=UTC), hours=(8, 9, 17))],
                         ids=["whole-lake", "mid-day-edges"])
def test_a_window_of_more_pings_than_one_read_is_cut_into_windows_with_the_same_answer(city_lake, engine, views, window,
                                                                                       monkeypatch):
    """A footfall over more than ``ONE_WINDOW_PINGS`` pings runs window by window (``queries.windows``) so its memory is a
    window's: the answer, suppressed groups included, is the uncut one for every view and bucket."""
    import citylake.queries as queries
    from citylake.queries.windows import days_of

    whole = footfalls(city_lake, views=views, filters=window, k=3, engine_name=engine)
    days = days_of(city_lake, window.start and window.start.astimezone(UTC), window.end)
    monkeypatch.setattr(queries, "ONE_WINDOW_PINGS", min(days.values()) // 5)  # every day too large for one read
    runner, reads = queries.engine(engine, city_lake), []
    read = runner.footfalls

    def counted(*, views, filters):
        reads.append(filters)
        return read(views=views, filters=filters)

    monkeypatch.setattr(runner, "footfalls", counted)
    monkeypatch.setattr(queries, "engine", lambda name, lake: runner)
    cut = footfalls(city_lake, views=views, filters=window, k=3, engine_name=engine)
    daily = any(freq == "1d" for _, _, freq in views)
    assert len(reads) == len(days) if daily else len(reads) > len(days)  # a day bucket is never cut
    assert all(window.start <= read.start < read.end <= window.end for read in reads if window.start)
    for got, want in zip(cut, whole):
        assert want.table.num_rows > 0 and got.table.equals(want.table) and got.suppressed == want.suppressed


@pytest.mark.parametrize("call, error", [
    (lambda lk: footfall(lk, res=12), BadFilter), (lambda lk: footfall(lk, freq="2h"), BadFilter),
    (lambda lk: footfall(lk, engine_name="spark"), UnknownEngine), (lambda lk: footfall(lk, k=0), BadFilter),
    (lambda lk: footfalls(lk, views=[("place", None), ("street", None)]), BadFilter),
    (lambda lk: Filters(hours=(25,)), BadFilter),
    (lambda lk: Filters(start=dt.datetime(2026, 1, 2), end=dt.datetime(2026, 1, 1)), BadFilter),
])
def test_bad_requests_are_named(city_lake, call, error):
    with pytest.raises(error):
        call(city_lake)


def test_cli_footfall_formats(city_lake, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city_lake.root), "query", "footfall",  # noqa: E731
                                     "--role", "steward", *a], capture_output=True, text=True, timeout=300,
                                    env={**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})
    as_json = run("--category", "park", "--freq", "1d", "--format", "json", "--engine", "polars")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert rows and all(r["devices"] >= 10 and r["category"] == "park" for r in rows)
    assert "withheld (fewer than 10 devices)" in as_json.stderr
    out = run("--by", "cell", "--res", "7", "--format", "parquet", "--out", str(tmp_path / "f.parquet"))
    assert out.returncode == 0, out.stderr
    cells = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert cells and all(h3.str_to_int(r["cell"]) == r["h3_cell"] for r in cells[:50])
    bad = run("--weekdays", "funday")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("citylake: error: filter weekdays")


def test_hours_and_weekdays_are_read_on_the_city_clock(city_lake, engine):
    """Hours 18-22 of Tuesdays and Wednesdays in Shanghai: the buckets the standard library's zone database puts there."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    local = Filters(hours=tuple(range(18, 23)), weekdays=(1, 2), tz="Asia/Shanghai")
    got = pl.from_arrow(footfall(city_lake, freq="1h", filters=local, k=1, engine_name=engine).table).sort("place_id", "bucket")
    everything = pl.from_arrow(footfall(city_lake, freq="1h", k=1, engine_name=engine).table).sort("place_id", "bucket")
    on_the_clock = [b.astimezone(zone).hour in range(18, 23) and b.astimezone(zone).weekday() in (1, 2) for b in everything["bucket"]]
    want = everything.filter(pl.Series(on_the_clock))
    assert got.height > 5 and got.equals(want)
    with pytest.raises(BadFilter, match="IANA"):
        Filters(hours=(1,), tz="Mars/Olympus")


@pytest.mark.parametrize("freq", ["5min", "1h", "1d"])
def test_one_key_per_place_and_bucket_keeps_every_bucket_apart(freq):
    """The Polars engine groups on one integer (place number and bucket number together): places far apart in number,
    times on either side of 1970 and of a bucket's edge, each group its own, with its bucket's start (oracle: grouping on
    the pair with Polars' own truncate)."""
    from citylake.h3_index.buckets import bucket_width_us
    from citylake.queries.polars import counts_per

    width = bucket_width_us(freq)
    edges = [dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC),
             dt.datetime(2026, 10, 1, 8, 59, 59, 999999, tzinfo=UTC), dt.datetime(2026, 10, 1, 9, tzinfo=UTC),
             dt.datetime(1901, 3, 1, 12, 7, tzinfo=UTC), dt.datetime(2099, 12, 31, 23, 58, tzinfo=UTC)]
    hits = pl.DataFrame({"_n": [n for n in (0, 1, 7, 2**32 - 1) for _ in edges for _ in range(2)],
                         "ts": [t for _ in range(4) for t in edges for _ in range(2)],
                         "device_id": [d for _ in range(4) for _ in edges for d in (1, 2)]},
                        schema={"_n": pl.UInt32, "ts": pl.Datetime("us", "UTC"), "device_id": pl.Int64})
    got = counts_per(hits.lazy(), "_n", freq)
    want = (hits.group_by("_n", pl.col("ts").dt.truncate(f"{width}us").alias("bucket"))
            .agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices")).sort("_n", "bucket"))
    assert got.equals(want)
    assert got.height == want.height > 4 * 4


@pytest.mark.parametrize("freq", ["5min", "1h"])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_compiled_counts_equal_polars_group_by(freq, threads, monkeypatch):
    """The compiled dense count gives Polars' pings and distinct devices per (number, bucket) over the kept rows: rows
    in several chunks, times either side of 1970, devices repeated within a group, one group longer than the distinct
    table (its sorted path), threads 1 to 3; and declines a grid far larger than the rows (1901 to 2099 in 5 min)."""
    import numpy as np

    from citylake.h3_index.buckets import bucket_width_us
    from citylake.h3_index.threads import THREADS_ENV
    from citylake.queries.group_counts import dense_counts

    monkeypatch.setenv(THREADS_ENV, threads)
    rng = np.random.default_rng(7)
    start = -86_460 * 10**6  # 1969-12-30 23:59 in µs since 1970
    pieces = []
    for rows in (5_000, 1, 20_000, 333):
        pieces.append(pl.DataFrame({"_n": rng.integers(0, 40, rows), "ts": start + rng.integers(0, 4 * 86_400 * 10**6, rows),
                                    "device_id": rng.integers(-50, 50, rows) * 2**40}))
    crowd = 6_000  # one group longer than the table's half: distinct devices counted by sorting
    pieces.append(pl.DataFrame({"_n": [39] * crowd, "ts": [start] * crowd, "device_id": rng.integers(0, 5_000, crowd)}))
    frame = pl.concat([piece.cast({"_n": pl.UInt32, "ts": pl.Datetime("us", "UTC"), "device_id": pl.Int64}) for piece in pieces],
                      rechunk=False)
    assert frame["ts"].n_chunks() > 1
    keep = rng.random(frame.height) < 0.8
    got = dense_counts(frame, keep, number="_n", numbers=40, freq=freq)
    width = bucket_width_us(freq)
    want = (frame.filter(pl.Series(keep)).group_by("_n", pl.col("ts").dt.truncate(f"{width}us").alias("bucket"))
            .agg(pl.len().alias("pings"), pl.col("device_id").n_unique().alias("devices")).sort("_n", "bucket"))
    assert got is not None and got.equals(want)
    assert want["pings"].max() > 2_048 and want.height > 1_000
    far = pl.DataFrame({"_n": [0, 1], "ts": [dt.datetime(1901, 1, 1, tzinfo=UTC), dt.datetime(2099, 1, 1, tzinfo=UTC)],
                        "device_id": [1, 2]}, schema=frame.schema)
    assert dense_counts(far, np.ones(2, bool), number="_n", numbers=2, freq="5min") is None


@pytest.mark.parametrize("of", [1, 2, 7])
def test_shares_of_devices_take_each_device_once_on_either_engine(of):
    """A cluster task's share of the devices (``Filters.devices``): over r = 0 … of-1 every pseudonym, negative ones
    included, falls in exactly one share — in Polars and in DuckDB, whose % keeps the dividend's sign."""
    import duckdb
    import numpy as np

    ids = np.random.default_rng(of).integers(-2**63, 2**63 - 1, 3_000, dtype=np.int64)
    pings = pl.DataFrame({"device_id": np.concatenate([ids, [-1, 0, 1, -2**63, 2**63 - 1]])})
    shares = [Filters(devices=(r, of)) for r in range(of)]
    in_polars = [pings.filter(share.ping_expr())["device_id"] for share in shares]
    with duckdb.connect() as con:
        con.register("pings", pings.to_arrow())
        in_duckdb = [con.execute(f"SELECT device_id FROM pings p WHERE {share.ping_sql('p')}").pl()["device_id"] for share in shares]
    for taken in (in_polars, in_duckdb):
        assert sorted(pl.concat(taken).to_list()) == sorted(pings["device_id"].to_list())
    assert [sorted(a.to_list()) for a in in_polars] == [sorted(b.to_list()) for b in in_duckdb]
    with pytest.raises(BadFilter, match="0 <= r < of"):
        Filters(devices=(of, of))


def test_a_release_refuses_a_share_of_devices(city_lake):
    """A release counts everyone: asked for a share of the devices it says so rather than ignore the filter."""
    from citylake.queries import released

    for ask in (released.footfall, released.od):
        with pytest.raises(BadFilter, match="every device"):
            ask(city_lake, filters=Filters(devices=(0, 2)))

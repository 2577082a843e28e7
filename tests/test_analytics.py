"""Situational analysis: Gi* against a plain-Python reading of the formula with h3's own neighbours,
baselines and episodes on series with known anomalies, sensor faults, detections against the
injected truth of a generated city, and reports and the pilot through the CLI."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys

import geopandas as gpd
import h3
import numpy as np
import polars as pl
import pytest
import shapely
from conftest import TEST_KEY, generated_city_lake

from citylake.analytics.anomalies import episodes, robust_z, sensor_faults
from citylake.analytics.detect import TASK_PINGS, analyse, task_hours
from citylake.analytics.hotspots import _mann_kendall_s, emerging, getis_ord
from citylake.analytics.truth import load_events, score
from citylake.lake import scan

UTC = dt.timezone.utc


def gi_star_oracle(values: dict[str, float]) -> dict[str, float]:
    """Getis-Ord Gi* with binary weights over h3.grid_disk(cell, 1), written out term by term."""
    area = set(values)
    for cell in list(values):
        area |= set(h3.grid_disk(cell, 1))
    x = {c: values.get(c, 0.0) for c in area}
    n = len(x)
    mean = sum(x.values()) / n
    s = math.sqrt(sum(v * v for v in x.values()) / n - mean * mean)
    z = {}
    for cell in area:
        near = [c for c in h3.grid_disk(cell, 1) if c in x]
        w = len(near)
        z[cell] = (sum(x[c] for c in near) - mean * w) / (s * math.sqrt((n * w - w * w) / (n - 1)))
    return z


def test_gi_star_matches_the_formula_with_h3_neighbours():
    rng = np.random.default_rng(2)
    cells = {h3.latlng_to_cell(31.2 + rng.normal(0, 0.01), 121.45 + rng.normal(0, 0.01), 9) for _ in range(150)}
    values = {c: float(rng.poisson(20)) for c in cells}
    hot = h3.latlng_to_cell(31.2, 121.45, 9)
    for c in h3.grid_disk(hot, 1):
        values[c] = 400.0  # a hot cluster
    got = getis_ord(pl.DataFrame({"h3_cell": [h3.str_to_int(c) for c in values], "v": list(values.values())}), value="v")
    want = gi_star_oracle(values)
    assert got.height == len(want)
    for cell, z in zip(got["h3_cell"], got["z"]):
        assert z == pytest.approx(want[h3.int_to_str(cell)], rel=1e-9, abs=1e-9)
    assert got.filter(pl.col("h3_cell") == h3.str_to_int(hot))["class"][0] == "hot"


def test_emerging_and_fading_patterns():
    cells = [h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(31.2, 121.45, 9), 6)]
    new, old = cells[0], cells[-1]
    rows = []
    for day in range(8):
        for c in cells:
            busy = (c == new and day == 7) or (c == old and day < 3)
            rows.append({"h3_cell": c, "bucket": dt.datetime(2026, 11, 1 + day, tzinfo=UTC), "v": 500.0 if busy else 10.0 + (c % 7)})
    patterns = dict(emerging(pl.DataFrame(rows), value="v").select("h3_cell", "pattern").iter_rows())
    assert patterns[new] == "emerging" and patterns[old] == "fading"


def test_trend_is_mann_kendall_over_the_buckets_a_cell_was_scored_in():
    rng = np.random.default_rng(11)
    rows = [{"h3_cell": cell, "bucket": dt.datetime(2026, 11, 1, tzinfo=UTC) + dt.timedelta(days=day), "z": float(rng.integers(-3, 4))}
            for cell in range(40) for day in range(9) if rng.random() > 0.3]  # gaps, ties and cells with one bucket
    rows += [{"h3_cell": 99, "bucket": dt.datetime(2026, 11, 5, tzinfo=UTC), "z": 1.0}]
    got = dict(_mann_kendall_s(pl.DataFrame(rows)).iter_rows())
    for cell in {r["h3_cell"] for r in rows}:
        z = [r["z"] for r in sorted(rows, key=lambda r: r["bucket"]) if r["h3_cell"] == cell]
        signs = [(b > a) - (b < a) for i, a in enumerate(z) for b in z[i + 1:]]  # every later-minus-earlier pair
        assert got[cell] == pytest.approx(sum(signs) / len(signs) if signs else 0.0)


def test_tasks_are_days_unless_too_few_or_too_large():
    assert task_hours(days=30, busiest_day=500_000) == 24  # many ordinary days: a day per task
    assert task_hours(days=4, busiest_day=500_000) == 12  # too few days to keep a cluster busy: halves
    assert task_hours(days=1, busiest_day=500_000) == 3  # one day: eight parts
    assert task_hours(days=30, busiest_day=10 * TASK_PINGS) == 2  # a crowded day: parts small enough for a worker
    assert task_hours(days=1, busiest_day=100 * TASK_PINGS) == 1  # never less than an hour


def test_baseline_z_scores_and_episodes():
    hours = pl.datetime_range(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 9, tzinfo=UTC), "1h", eager=True,
                              closed="left")
    rng = np.random.default_rng(4)
    daily = 50 + 30 * np.sin(hours.dt.hour().to_numpy() / 24 * 2 * np.pi) + rng.normal(0, 2, hours.len())
    surge = (hours >= dt.datetime(2026, 11, 5, 10, tzinfo=UTC)) & (hours < dt.datetime(2026, 11, 5, 14, tzinfo=UTC))
    series = pl.DataFrame({"place_id": "p", "bucket": hours, "value": np.where(surge.to_numpy(), daily * 4, daily)})
    found = episodes(robust_z(series, entity=["place_id"]), entity=["place_id"])
    assert found.height == 1
    assert found["start"][0] == dt.datetime(2026, 11, 5, 10, tzinfo=UTC) and found["end"][0] == dt.datetime(2026, 11, 5, 14, tzinfo=UTC)
    quiet = episodes(robust_z(series.with_columns(pl.lit(daily).alias("value")), entity=["place_id"]), entity=["place_id"])
    assert quiet.is_empty()


def test_sensor_faults():
    ts = pl.datetime_range(dt.datetime(2026, 11, 2, tzinfo=UTC), dt.datetime(2026, 11, 3, tzinfo=UTC), "15m", eager=True, closed="left")
    rng = np.random.default_rng(5)
    ok = 25 + rng.normal(0, 2, ts.len())
    bad = ok.copy()
    bad[10:30] = 31.5  # stuck
    bad[50:53] = 999.0  # impossible
    keep = np.ones(ts.len(), bool)
    keep[70:80] = False  # silent for 2.5 hours
    frame = pl.concat([pl.DataFrame({"sensor_id": "ok", "ts": ts, "metric": "pm25", "value": ok}),
                       pl.DataFrame({"sensor_id": "bad", "ts": ts, "metric": "pm25", "value": bad}).filter(pl.Series(keep))])
    faults = sensor_faults(frame)
    assert set(faults["sensor_id"]) == {"bad"}
    assert set(faults["fault"]) == {"flat line", "impossible values", "silence"}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("analytics")
    return root, generated_city_lake(root, devices=300, days=5, seed=13)


def test_the_injected_events_are_found(city):
    root, lake = city
    result = analyse(lake)
    truth = score(result.detections, load_events(root / "city" / "events.json"))
    assert truth["recall"] == 1.0, truth
    assert truth["precision"] >= 0.75, truth
    expo = result.detections.filter(pl.col("place_id") == "places:expo")
    assert expo.height == 1 and expo["kind"][0] == "crowd surge" and "FF-expo" in expo["sensor_ids"][0]


def test_the_analysis_does_not_depend_on_how_the_days_are_cut_into_tasks(city, monkeypatch):
    """Tasks of whole days, half days or three hours: the same scores, hotspots, trends and detections (what tasks send
    back must combine exactly: counts add up, the most devices in an hour is a maximum)."""
    import citylake.analytics.detect as detect
    _, lake = city
    results = {}
    for hours in (24, 12, 3):
        monkeypatch.setattr(detect, "task_hours", lambda days, busiest_day, hours=hours: hours)
        results[hours] = analyse(lake)
    for hours in (12, 3):
        for part in ("place_scores", "sensor_scores", "hotspots", "trends", "detections"):
            whole, cut = (getattr(results[h], part) for h in (24, hours))
            key = [c for c in ("place_id", "sensor_id", "metric", "bucket", "h3_cell", "start") if c in whole.columns]
            assert whole.sort(key).equals(cut.sort(key)), f"{part} differ with {hours}-hour tasks"
    assert results[3].hotspots["most_devices_in_an_hour"].max() > 0


def test_a_report_says_the_same_on_either_engine(city):
    """Reports run on Polars by default (faster); DuckDB must give every section and headline figure the same."""
    from citylake.analytics.report import build

    _, lake = city
    analysis = analyse(lake)
    for place_id in ("places:expo", "places:cbd"):
        fast, other = (build(lake, analysis, place_id, k=5, engine_name=name) for name in ("polars", "duckdb"))
        assert fast.headline == other.headline and fast.headline["pings"] > 0
        for (title, table, _), (_, same, _) in zip(fast.sections, other.sections, strict=True):
            assert table.equals(same), f"{place_id}: {title} differs between the engines"


def test_a_report_computes_footfall_stays_and_flows_once(city, monkeypatch, tmp_path):
    """A report hands one footfall, one set of stays and one set of flows to every section and figure."""
    import citylake.analytics.report as report_module
    from citylake.lake import Lake
    from citylake.queries.polars import PolarsEngine
    from citylake.reports import write

    _, lake = city
    analysis = analyse(lake)
    calls = {"footfalls": 0, "stays": 0, "od": 0}

    def counted(name, inner):
        def call(*args, **kwargs):
            calls[name] += 1
            return inner(*args, **kwargs)
        return call

    monkeypatch.setattr(PolarsEngine, "footfalls", counted("footfalls", PolarsEngine.footfalls))
    monkeypatch.setattr(PolarsEngine, "stays", counted("stays", PolarsEngine.stays))
    monkeypatch.setattr(report_module, "od", counted("od", report_module.od))
    made = report_module.build(lake, analysis, "places:cbd", k=5)
    write(Lake.open(lake.root), made, tmp_path / "cbd.html")
    assert calls == {"footfalls": 1, "stays": 1, "od": 1}
    assert made.headline["pings"] > 0 and made.cells.table.num_rows > 0


def test_the_local_cluster_lets_in_no_other_local_user():
    """The steward's workers hold the key and raw pings: a process without the run's TLS credentials gets no connection."""
    import asyncio

    from distributed.core import rpc
    from distributed.security import Security

    from citylake.analytics import dask_client

    async def identity(address: str, **options) -> dict:
        peer = rpc(address, **options)
        try:
            return await asyncio.wait_for(peer.identity(), 10)
        finally:
            await peer.close_rpc()

    with dask_client(workers=1, announce=lambda _: None) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        for address in (client.scheduler.address, *client.scheduler_info()["workers"]):
            assert address.startswith("tls://")
            for options in ({"connection_args": Security.temporary().get_connection_args("client")}, {}):
                target = address if options else address.replace("tls://", "tcp://")
                with pytest.raises(Exception, match="(?i)comm"):
                    asyncio.run(identity(target, **options))


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", "CITYLAKE_PSEUDONYM_KEY": TEST_KEY})


@pytest.mark.integration
def test_reports_render_for_every_park_and_stay_k_anonymous(city, tmp_path):
    root, lake = city
    done = run_cli("--lake", str(lake.root), "report", "--category", "park", "--workers", "1", "--k", "5", "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert "dashboard at http" in done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())["reports"]
    parks = scan(lake, "places").filter(pl.col("category") == "park").collect()["place_id"].sort().to_list()
    assert [r["place_id"] for r in summary] == parks
    page = (tmp_path / "r" / "places_park-0.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "What is unusual" in page and "k-anonymity k = 5" in page
    single = run_cli("--lake", str(lake.root), "report", "--district", "places:expo", "--workers", "1", "--k", "5",
                     "--from", "2026-11-01", "--to", "2026-12-01", "--out", str(tmp_path / "expo.md"))  # dates without a time: UTC
    assert single.returncode == 0, single.stderr
    text = (tmp_path / "expo.md").read_text()
    assert "| crowd surge | high | places:expo" in text and (tmp_path / "expo-figure-1.png").stat().st_size > 1000
    kept = scan(lake, "detections").collect()  # the report's detections are the batch jobs' list too
    assert kept.filter((pl.col("kind") == "crowd surge") & (pl.col("place_id") == "places:expo")).height >= 1
    hours = text.split("## Footfall by hour", 1)[1].split("##", 1)[0]
    assert all(int(line.split("|")[3]) >= 5 for line in hours.splitlines() if line.startswith("| 2026"))


@pytest.mark.integration
def test_pilot_loads_an_area_and_writes_its_first_report(city, tmp_path):
    root, lake = city
    places = gpd.read_file(root / "city" / "places.geojson")
    park = places[places["category"] == "park"].iloc[[0]]
    park[["geometry"]].to_file(tmp_path / "park.geojson", driver="GeoJSON")
    pois = places[places["category"].str.startswith("poi:")].head(20)
    pd_pois = pois.assign(lat=shapely.get_y(pois.geometry.values), lon=shapely.get_x(pois.geometry.values))
    pd_pois[["id", "name", "category", "lat", "lon"]].to_csv(tmp_path / "pois.csv", index=False)
    done = run_cli("--lake", str(tmp_path / "pilot-lake"), "pilot", "--boundary", str(tmp_path / "park.geojson"), "--pois",
                   str(tmp_path / "pois.csv"), "--sensors", str(root / "city" / "sensors.csv"), "--pings", str(root / "city" / "pings.csv"),
                   "--name", "Riverside Park", "--workers", "1", "--k", "5", "--out", str(tmp_path / "pilot.html"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "pilot.html").read_text()
    assert "Riverside Park" in page and "pilot:riverside-park" in page
    assert "pilot: first report at" in done.stderr


def test_the_hourly_grid_follows_the_days_with_data_not_the_span():
    """Two rows decades apart complete to two days of hours, not to every hour between them."""
    from citylake.analytics.detect import _complete

    series = pl.DataFrame({"place_id": ["a", "b"], "bucket": [dt.datetime(2001, 3, 4, 5, tzinfo=dt.timezone.utc),
                                                            dt.datetime(2026, 11, 1, 7, tzinfo=dt.timezone.utc)],
                           "devices": [3.0, 4.0]})
    grid = _complete(series, ["place_id"], "devices")
    assert grid.height == 2 * (19 + 8)  # each place: 05:00..23:00 on the first day, 00:00..07:00 on the last
    assert grid["devices"].sum() == 7.0


def test_detections_are_kept_for_the_steward_and_a_rerun_replaces_them(city):
    from citylake.analytics import detections
    from citylake.analytics.scoring import KINDS

    _, lake = city
    first = detections.save(lake, analyse(lake))
    again = detections.save(lake, analyse(lake))
    stored = detections.read(lake)
    assert stored.height == first.height == again.height > 0
    assert sorted(stored["detection_id"]) == sorted(first["detection_id"])
    assert set(stored["kind"]) <= set(KINDS) and stored["peak"].is_between(stored["start"], stored["end"]).all()
    assert lake.spec("detections").zone == "steward" and lake.path("detections").parent.stat().st_mode & 0o077 == 0


def test_an_analyst_cannot_read_detections(city, tmp_path, monkeypatch):
    """Detections are learned from exact counts: not in the analyst's workspace, and no frame of them without the key."""
    from citylake import api
    from citylake import settings as S
    from citylake.privacy import PrivacyError
    from citylake.queries.sandbox import Refused, Workspace

    _, lake = city
    monkeypatch.delenv("CITYLAKE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(Refused, match="not visible to analysts"):
        Workspace(lake).sql("SELECT * FROM detections")
    analyst = S.load(env={"CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "no.key")})
    with pytest.raises(PrivacyError):
        api.frame(lake, "detections", settings=analyst)


@pytest.mark.integration
def test_detect_writes_machine_readable_detections(city, tmp_path):
    root, lake = city
    done = run_cli("--lake", str(lake.root), "detect", "--workers", "1", "--format", "json", "--out", str(tmp_path / "d.json"))
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "d.json").read_text())
    assert {r["kind"] for r in rows} >= {"crowd surge", "sensor fault"}
    assert set(rows[0]) == {"detection_id", "kind", "place_id", "sensor_ids", "start", "end", "peak", "peak_z", "severity", "evidence",
                            "computed_at"}
    expo = [r for r in rows if r["place_id"] == "places:expo"]
    assert len(expo) == 1 and expo[0]["severity"] == "high" and "FF-expo" in expo[0]["sensor_ids"]
    refused = run_cli("--lake", str(lake.root), "detect", "--format", "parquet")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "--out" in refused.stderr


def test_a_report_on_two_days_says_what_history_it_needs(tmp_path):
    """Two days of pings cannot make a usual: the report says how many more days it needs, never just "no events"."""
    from citylake.analytics.report import build
    from citylake.reports.render import to_markdown

    lake = generated_city_lake(tmp_path, devices=150, days=2, seed=21, feeds=("places", "pings"))
    made = build(lake, analyse(lake), "places:expo", k=5)
    assert made.headline["events"] is None and made.headline["history"].startswith("needs 2 more days of history for places like")
    text = to_markdown(made, {}, tmp_path / "r.md")
    assert "| events | not judged: needs 2 more days of history" in text and "| events | None |" not in text

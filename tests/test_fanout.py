"""Footfall and stays on a Dask cluster, one task per span of days: the same answer as one process, on a local lake and an
s3:// one."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys

import polars as pl
import pytest
from conftest import generated_city_lake, utc

from citylake.analytics import fanout
from citylake.analytics.cluster import dask_client
from citylake.analytics.fanout import days_in, footfall_on_cluster, stays_on_cluster
from citylake.queries import Filters, footfall, stays, windows
from citylake.queries.errors import BadFilter

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    with dask_client(workers=2, announce=lambda _: None) as client:
        yield client


@pytest.fixture(scope="module")
def city_lake(tmp_path_factory):
    return generated_city_lake(tmp_path_factory.mktemp("fanout"), devices=150, days=4, seed=12, feeds=("places", "pings"))


VIEWS = [dict(by="place", freq="1h"), dict(by="category", freq="15min"), dict(by="cell", res=9, freq="1d"),
         dict(by="place", freq="1h", filters=Filters(start=utc(2026, 11, 3, 7, 30), end=utc(2026, 11, 4, 13))),
         dict(by="place", freq="1d", filters=Filters(categories=("park",)), k=3)]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: f"{v['by']}-{v['freq']}")
def test_a_day_per_task_answers_as_one_process(cluster, city_lake, view):
    one = footfall(city_lake, **view)
    fanned = footfall_on_cluster(city_lake, cluster, **view)
    assert fanned.table.num_rows > 0 and fanned.table.equals(one.table) and fanned.suppressed == one.suppressed


def test_spans_of_several_days_answer_as_one_process(cluster, city_lake, monkeypatch):
    monkeypatch.setattr(fanout, "MIN_TASKS", 2)  # this small lake's four days in two tasks of two days
    view = dict(by="place", freq="1h", filters=Filters(start=utc(2026, 11, 2, 7, 30)))
    fanned = footfall_on_cluster(city_lake, cluster, **view)
    assert "(2 tasks)" in fanned.engine or "(3 tasks)" in fanned.engine, fanned.engine
    assert fanned.table.num_rows > 0 and fanned.table.equals(footfall(city_lake, **view).table)


@pytest.mark.parametrize("view", [dict(by="place", freq="1h"), dict(by="category", freq="15min"), dict(by="place", freq="1d"),
                                  dict(by="place", freq="1h", filters=Filters(start=utc(2026, 11, 2, 19, 30), end=utc(2026, 11, 4, 3)))],
                         ids=lambda v: f"{v['by']}-{v['freq']}{'-mid-day-edges' if 'filters' in v else ''}")
def test_days_cut_into_parts_answer_as_one_process(cluster, city_lake, monkeypatch, view):
    monkeypatch.setattr(fanout, "TASK_PINGS", 500)  # every day of this small lake too dense for one task
    fanned = footfall_on_cluster(city_lake, cluster, **view)
    days = len(days_in(city_lake, view.get("filters", Filters())))
    tasks = int(fanned.engine.split("(")[1].split()[0])
    assert tasks == days if view["freq"] == "1d" else tasks > days  # a day bucket is never cut
    assert fanned.table.num_rows > 0 and fanned.table.equals(footfall(city_lake, **view).table)


def test_a_dense_day_is_cut_into_equal_parts_of_whole_buckets(monkeypatch):
    from citylake.analytics.fanout import task_windows
    from citylake.queries.windows import day_parts

    monkeypatch.setattr(fanout, "TASK_PINGS", 2_000_000)
    hour, day, share = 3600 * 10**6, 86_400 * 10**6, 2_000_000
    assert day_parts(5_000_000, hour, share=share) == 3 and day_parts(1_000_000, hour, share=share) == 1
    assert day_parts(5_000_000, day, share=share) == 1  # a day bucket is never cut
    assert day_parts(10**9, hour, share=share) == 24 and day_parts(5_000_000, 5 * 60 * 10**6, share=share) == 3
    days = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(3)]
    windows = task_windows({days[0]: 10, days[1]: 5_000_000, days[2]: 10}, hour)
    assert [(start.hour, end - start) for start, end in windows[1:4]] == [(h, dt.timedelta(hours=8)) for h in (0, 8, 16)]
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))  # contiguous: every ping in one task
    assert windows[0][0] == utc(2026, 11, 1) and windows[-1][1] == utc(2026, 11, 4) and len(windows) == 5


def test_days_are_grouped_into_spans_whole_and_in_order():
    def day_spans(per_day):
        return windows.day_spans(per_day, share=fanout.task_share(per_day))

    days = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(16)]
    even = day_spans(dict.fromkeys(days, 100))
    assert len(even) == fanout.MIN_TASKS and all((last - first).days == 1 for first, last in even)
    huge = fanout.TASK_PINGS * 3
    lumpy = day_spans({days[0]: 10, days[1]: huge, days[2]: 10, days[3]: 10})
    assert lumpy == [(days[0], days[0]), (days[1], days[1]), (days[2], days[3])]  # a huge day alone, never split
    capped = day_spans(dict.fromkeys(days, fanout.TASK_PINGS // 2))
    assert all((last - first).days <= 1 for first, last in capped)  # never more than TASK_PINGS in a task
    for spans, held in ((even, days), (lumpy, days[:4]), (capped, days)):  # every day once, in order
        assert [first + dt.timedelta(days=n) for first, last in spans for n in range((last - first).days + 1)] == held
    assert day_spans({}) == []


def test_the_days_come_from_the_log_and_the_window(city_lake):
    every = days_in(city_lake, Filters())
    assert len(every) >= 4 and every == sorted(every)
    assert days_in(city_lake, Filters(start=utc(2026, 11, 3, 23), end=utc(2026, 11, 4, 0, 0, 1))) == [dt.date(2026, 11, 3),
                                                                                                     dt.date(2026, 11, 4)]
    assert days_in(city_lake, Filters(start=utc(2030, 1, 1))) == []


@pytest.mark.parametrize("options", [dict(), dict(max_gap_s=5 * 60, min_dwell_s=0),
                                     dict(max_gap_s=2 * 3600, min_dwell_s=20 * 60, filters=Filters(start=utc(2026, 11, 2, 3)))],
                         ids=["defaults", "short-gap", "long-gap-window"])
def test_stays_a_task_per_day_are_the_one_process_stays(cluster, city_lake, monkeypatch, options):
    """Stays found a day and a share of the devices per task and joined across midnight UTC where a device's last ping of
    one day and its first of the next are in one place within the gap: the one-process stays, row for row — among them
    stays that cross midnight."""
    per_day = windows.pings_per_day(city_lake, options.get("filters", Filters()))
    monkeypatch.setattr(fanout, "TASK_PINGS", min(per_day.values()) // 3)  # every day its own span, cut into 3-4 shares
    assert min(share[1] for *_, share in fanout.stay_tasks(per_day)) >= 3
    one = stays(city_lake, **options)
    fanned = stays_on_cluster(city_lake, cluster, **{"max_gap_s": 30 * 60, "min_dwell_s": 5 * 60, **options})
    crossing = one.filter(pl.col("start").dt.date() != pl.col("end").dt.date())
    assert one.height > 20 and crossing.height > 0, (one.height, crossing.height)
    assert fanned.equals(one)


def test_stays_on_a_cluster_refuse_a_gap_of_a_day(cluster, city_lake):
    with pytest.raises(BadFilter, match="under a day"):
        stays_on_cluster(city_lake, cluster, max_gap_s=86_400, min_dwell_s=0)


def test_buckets_longer_than_a_day_are_refused(cluster, city_lake):
    with pytest.raises(BadFilter, match="divide a day"):
        footfall_on_cluster(city_lake, cluster, freq="1w")


def test_an_s3_lake_fans_out_with_its_uri_and_storage(cluster, seaweed_s3, tmp_path):
    import seaweed
    from conftest import TEST_KEY, with_key

    from citylake.analytics import analyse
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places
    from citylake.lake import Lake
    from citylake.reports import write_reports

    generate_city(tmp_path / "city", devices=100, days=3, seed=13)
    lake = with_key(Lake.init(f"s3://{seaweed.BUCKET}/fanout", storage=seaweed_s3.storage()))
    ingest_places(lake, tmp_path / "city" / "places.geojson")
    ingest_pings(lake, tmp_path / "city" / "pings.csv", key=TEST_KEY.encode())
    fanned = footfall_on_cluster(lake, cluster, freq="1h", k=2)
    assert fanned.table.num_rows > 0 and fanned.table.equals(footfall(lake, freq="1h", k=2).table)
    analysis = analyse(lake, client=cluster, k=2)  # and the reports: their tasks open the s3:// lake too
    places = ["places:cbd", "places:expo"]
    on_cluster = write_reports(lake, analysis, places, out=tmp_path / "fanned", k=2, announce=lambda _: None, client=cluster)
    here = write_reports(lake, analysis, places, out=tmp_path / "here", k=2, announce=lambda _: None)
    assert [r.summary() for r in on_cluster] == [r.summary() for r in here] and here[0].headline["pings"] > 0
    assert (tmp_path / "fanned" / "places_expo.html").read_bytes() == (tmp_path / "here" / "places_expo.html").read_bytes()


@contextlib.contextmanager
def tls_cluster(tmp_path, workers: int):
    """A local TLS cluster of worker processes, and the environment a CLI run needs to reach it as the steward."""
    from conftest import TEST_KEY, self_signed
    from distributed import LocalCluster
    from distributed.security import Security

    cert, key = self_signed(tmp_path)
    security = Security(tls_ca_file=str(cert), tls_scheduler_cert=str(cert), tls_scheduler_key=str(key), tls_worker_cert=str(cert),
                        tls_worker_key=str(key), tls_client_cert=str(cert), tls_client_key=str(key), require_encryption=True)
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "CITYLAKE_ANALYSIS_TLS_CA_FILE": str(cert),
           "CITYLAKE_ANALYSIS_TLS_CERT": str(cert), "CITYLAKE_ANALYSIS_TLS_KEY": str(key)}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, protocol="tls://", security=security,
                      dashboard_address=None) as cluster:
        yield cluster, env


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citylake.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def test_the_cli_runs_the_stewards_footfall_and_dwell_on_a_cluster(city_lake, tmp_path):
    query = ["--lake", str(city_lake.root), "query", "footfall", "--role", "steward", "--format", "json"]
    dwell = [*query[:3], "dwell", "--role", "steward", "--format", "json", "--k", "1"]
    with tls_cluster(tmp_path, workers=1) as (cluster, env):
        fanned = cli(*query, "--scheduler", cluster.scheduler_address, env=env)
        plain = cli(*query, "--scheduler", cluster.scheduler_address.replace("tls://", "tcp://"), env=env)
        dwell_fanned = cli(*dwell, "--scheduler", cluster.scheduler_address, env=env)
    env = {name: value for name, value in env.items() if not name.startswith("CITYLAKE_ANALYSIS_TLS")}
    assert plain.returncode == 1 and "plain-TCP" in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    one = cli(*query, env=env)
    assert fanned.returncode == 0 and one.returncode == 0, fanned.stderr + one.stderr
    assert json.loads(fanned.stdout) == json.loads(one.stdout) and json.loads(one.stdout)
    assert "dask" in fanned.stderr
    dwell_one = cli(*dwell, env=env)
    assert dwell_fanned.returncode == 0 and dwell_one.returncode == 0, dwell_fanned.stderr + dwell_one.stderr
    assert json.loads(dwell_fanned.stdout) == json.loads(dwell_one.stdout) and json.loads(dwell_one.stdout)


def test_reports_are_computed_and_drawn_on_the_cluster_as_in_one_process(city_lake, tmp_path):
    """`report --scheduler`: a task per zone category and per place on the workers, the same files as one process."""
    batch = ["--lake", str(city_lake.root), "report", "--category", "park", "--k", "3"]
    with tls_cluster(tmp_path, workers=2) as (cluster, env):
        fanned = cli(*batch, "--out", str(tmp_path / "fanned"), "--scheduler", cluster.scheduler_address, env=env)
        missing = cli(*batch[:3], "--district", "places:nowhere", "--out", str(tmp_path / "x.html"), "--scheduler",
                      cluster.scheduler_address, env=env)
        ran = {prefix: group.state_counts["memory"] for prefix, group in cluster.scheduler.task_prefixes.items()}
    one = cli(*batch, "--out", str(tmp_path / "one"), env=env)
    assert fanned.returncode == 0 and one.returncode == 0, fanned.stderr + one.stderr
    written = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert len(written) > 2 and written == sorted(path.name for path in (tmp_path / "fanned").iterdir())
    for name in written:
        assert (tmp_path / "fanned" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert ran["report_task"] == len(written) - 1 and ran["zones_task"] == 1 and ran["window_stays"] >= 4  # the parks' stays once
    assert missing.returncode != 0 and "no such place" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_a_release_a_task_per_day_matches_one_process_within_its_noise(cluster, tmp_path):
    """The same city released in one process and on the cluster: the same days, public partitions and spending; counts
    that differ only by the two releases' noise (each within a few deviations of the other)."""
    import numpy as np
    import polars as pl

    from citylake.lake import scan
    from citylake.privacy import Policy
    from citylake.queries import release as R

    policy = Policy(epsilon_per_day=10.0)
    lakes = {how: generated_city_lake(tmp_path / how, devices=800, days=2, seed=14, feeds=("places", "pings"))
             for how in ("one", "cluster")}
    R.publish(lakes["one"], policy=policy, epsilon=10.0, delta=0.0)
    R.publish(lakes["cluster"], policy=policy, epsilon=10.0, delta=0.0, client=cluster)
    about = {how: scan(lake, "releases").collect().sort("day", "table_name") for how, lake in lakes.items()}
    assert about["one"].select("day", "table_name").equals(about["cluster"].select("day", "table_name"))
    assert about["cluster"].height == 2 * len(R.SHARES) and about["cluster"]["release_id"].n_unique() == 1
    spent = {how: scan(lake, "privacy_ledger").collect().select("day", "table_name", "epsilon").sort("day", "table_name")
             for how, lake in lakes.items()}
    assert spent["one"].equals(spent["cluster"])
    rows = {how: scan(lake, "footfall_hourly").collect() for how, lake in lakes.items()}
    both = rows["one"].join(rows["cluster"], on=["place_id", "bucket"], suffix="_cluster")
    deviation = float(about["cluster"].filter(pl.col("table_name") == "footfall_hourly")["noise_scale"].max()) * np.sqrt(2)
    threshold = int(about["cluster"].filter(pl.col("table_name") == "footfall_hourly")["threshold"].max())
    clear = both.filter(pl.col("devices") >= threshold + 8 * deviation)  # partitions far over the threshold: in both releases
    assert clear.height > 10 and clear.height == rows["one"].filter(pl.col("devices") >= threshold + 8 * deviation).height
    assert (both["devices"] - both["devices_cluster"]).abs().max() <= 8 * np.sqrt(2) * deviation
    assert set(rows["cluster"]["place_id"]) <= set(R._public_partitions(lakes["cluster"], policy).places["place_id"])

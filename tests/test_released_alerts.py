"""Crowd alerts for analysts and planners: a differentially private test (the sparse vector technique), attacked.

The steward's alerts threshold exact counts, so whoever controls k - 1 devices at a quiet place learns from an alert
whether one more device was there. What everyone else reads must not let them: these tests measure what one device
changes in what they see, and check the run's budget, state and ledger across restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import stat

import numpy as np
import polars as pl
import pytest
from conftest import PLAZA, TEST_KEY, quiet_park_days, utc, write_pings_csv

from citylake import api
from citylake.analytics.alerts import SURGE
from citylake.analytics.released_alerts import STATE
from citylake.analytics.watch import WatchConfig, Watcher
from citylake.ingestion.location import ingest_pings
from citylake.lake import Lake, scan
from citylake.privacy import Policy, Refused, key_check, write_policy
from citylake.privacy.sparse import SparseVector
from citylake.queries import release as R

KEY = TEST_KEY.encode()
FRIDAY = utc(2026, 11, 6, 10)
HISTORY = [dt.date(2026, 11, 2) + dt.timedelta(days=d) for d in range(4)]
# a larger budget than the default, so that a crowd of 1000 clears the line every time and the test is no coin toss (the toy
# history releases mostly noise, and a place-hour left out counts as at the day's threshold, 100-300: lines of 300-600)
RELEASED_EVIDENCE = re.compile(r"devices in the hour to \d\d:\d\d UTC above 2x the released usual for (weekday|weekend) \d\d:00 UTC "
                               r"and a margin for the noise \(a differentially private test; no count\)")
GENEROUS = Policy(epsilon_per_day=3.0, alert_epsilon=2.0, alert_most=2)


# -- the mechanism: what one device changes ------------------------------------------------------------------------
def _outcomes(counts: np.ndarray, lines: np.ndarray, runs: int, *, exact: bool = False) -> np.ndarray:
    """For each of ``runs`` days: the index of the first yes over the day's questions, or -1 for none (most = 1)."""
    found = np.full(runs, -1)
    for run in range(runs):
        if exact:
            yes = np.flatnonzero(counts >= lines)
        else:
            day = SparseVector.start(dt.date(2026, 11, 6), epsilon=0.5, most=1)
            yes = np.flatnonzero(day.above(counts, lines))
        found[run] = yes[0] if yes.size else -1
    return found


def _worst_ratio(with_device: np.ndarray, without: np.ndarray) -> float:
    """The largest ratio of an outcome's frequency with the device to without it, over outcomes seen often enough."""
    ratios = []
    for outcome in np.unique(np.concatenate([with_device, without])):
        a, b = (with_device == outcome).mean(), (without == outcome).mean()
        if max(a, b) >= 0.03:  # rare outcomes say little from a few thousand days
            ratios.append(np.inf if b == 0 else a / b)
    return max(ratios)


def test_one_device_present_all_day_barely_changes_what_analysts_see():
    """A device at the place in every one of 40 quarter-hours near the line: the distribution of the day's answer (which
    question first said yes, if any) moves by at most e^epsilon; the exact test gives it away."""
    lines = np.full(40, 30.0)
    without = np.full(40, 29)  # the attacker's k - 1 devices and the crowd: one under the line all day
    private = _worst_ratio(_outcomes(without + 1, lines, 3000), _outcomes(without, lines, 3000))
    assert private <= np.exp(0.5) * 1.15  # epsilon 0.5 for the whole day, sampling slack
    exact = _worst_ratio(_outcomes(without + 1, lines, 3, exact=True), _outcomes(without, lines, 3, exact=True))
    assert exact == np.inf  # the same attack on the exact threshold learns the device's presence every time


def test_in_the_tail_where_an_alert_is_rare_one_device_still_moves_it_little():
    """Where a yes is rare (the count 10 under its line), the ratio is steepest: the noise must still hold it to e^epsilon
    (a quarter of the noise would give about e^1 = 2.7 here)."""
    lines, without, runs = np.array([30.0]), np.array([20]), 10_000
    yes_with = (_outcomes(without + 1, lines, runs) >= 0).mean()
    yes_without = (_outcomes(without, lines, runs) >= 0).mean()
    assert yes_without > 0.02 and yes_with / yes_without <= np.exp(0.5) * 1.1


def test_a_day_says_yes_at_most_its_number_of_times():
    day = SparseVector.start(dt.date(2026, 11, 6), epsilon=0.3, most=2)
    answers = day.above(np.full(50, 10_000), np.full(50, 10.0))
    assert answers.sum() == 2 and day.spent and not day.above(np.array([10_000]), np.array([10.0])).any()


def test_the_margin_keeps_quiet_places_quiet_at_the_default_budget():
    """Counts sitting at twice their usual (the line without the margin) for a day of 200 places: about one yes by noise."""
    policy = Policy()
    yeses = []
    for _ in range(20):
        day = SparseVector.start(dt.date(2026, 11, 6), epsilon=policy.alert_epsilon, most=10)
        margin = day.margin(200 * 96)
        yeses.append(day.above(np.full(200 * 96, 40), np.full(200 * 96, 40.0 + margin)).sum())
    assert np.mean(yeses) <= 3


# -- the watcher -----------------------------------------------------------------------------------------------------
def _steward_policy(lake, policy: Policy = GENEROUS) -> None:
    write_policy(lake, policy.with_epoch(key_check(KEY)))


def _live_crowd(lake, tmp_path, devices: int = 1000) -> None:
    """A quiet Friday morning, and from 10:00 ``devices`` devices in the plaza for half an hour."""
    live = quiet_park_days(np.random.default_rng(1), [FRIDAY.date()])
    live = [row for row in live if FRIDAY - dt.timedelta(hours=1) <= row[1] < FRIDAY + dt.timedelta(hours=2)]
    rng = np.random.default_rng(2)
    x0, y0, x1, y1 = PLAZA
    crowd = [(f"crowd-{d}", FRIDAY + dt.timedelta(minutes=m), rng.uniform(y0 + 1e-4, y1 - 1e-4), rng.uniform(x0 + 1e-4, x1 - 1e-4))
             for d in range(devices) for m in range(0, 30, 5)]
    ingest_pings(lake, write_pings_csv(tmp_path / "live.csv", live + crowd), key=KEY)


def _watch(lake, said: list[str], feed=lambda: None) -> Watcher:
    """A watcher started before ``feed`` lands (a first watcher starts at the newest data), after one poll."""
    watcher = Watcher(lake, k=10, config=WatchConfig(lateness=dt.timedelta(0), released_clock="event"),  # a replayed past
                      announce=said.append)
    feed()
    watcher.poll()
    return watcher


def test_a_crowd_reaches_analysts_only_through_the_private_test(park_lake, tmp_path, monkeypatch):
    _steward_policy(park_lake)
    R.publish(park_lake, policy=GENEROUS, epsilon=1.0, delta=0.0, days=HISTORY)
    said: list[str] = []
    _watch(park_lake, said, lambda: _live_crowd(park_lake, tmp_path))
    exact = scan(park_lake, "alerts").collect()
    released = scan(park_lake, "alerts_released").filter(pl.col("kind") == SURGE).collect()
    assert exact.filter(pl.col("kind") == SURGE)["place_id"].to_list() == ["places:plaza"]
    assert "places:plaza" in released["place_id"].to_list(), said
    assert not set(released["alert_id"]) & set(exact["alert_id"])  # the exact alert never reaches the released table
    assert all(t.microsecond == 0 for t in released["updated_at"])  # stamped by its own commit, to the second
    for evidence in released["evidence"]:  # times and the public ratio, never a count
        assert RELEASED_EVIDENCE.fullmatch(evidence), evidence
    assert any("crowd alerts for analysts and planners on 2026-11-06: differentially private" in line for line in said)
    # the analyst's view is the released one; the exact table is the steward's, out of SQL's reach
    monkeypatch.setenv("CITYLAKE_PSEUDONYM_KEY", TEST_KEY)
    assert set(api.alerts(park_lake)["alert_id"]) == set(scan(park_lake, "alerts_released").collect()["alert_id"])
    assert set(api.alerts(park_lake, role="steward")["alert_id"]) == set(exact["alert_id"])
    with pytest.raises(Refused, match="alerts is not visible to analysts"):
        api.sql(park_lake, "SELECT * FROM alerts").fetchall()
    assert api.sql(park_lake, "SELECT count(*) FROM alerts_released").fetchone()[0] == released.height
    # the day's run was paid for once, and its state is the steward's alone
    ledger = scan(park_lake, "privacy_ledger").filter(pl.col("table_name") == "alerts_released").collect()
    assert (FRIDAY.date(), GENEROUS.alert_epsilon) in ledger.select("day", "epsilon").rows()  # (and Thursday's last quarter)
    assert ledger["day"].n_unique() == ledger.height  # one charge per day
    assert stat.S_IMODE((park_lake.steward_dir / STATE).stat().st_mode) == 0o600
    # a release of the live day still fits the day's budget by default (its share: the budget less the alerts')
    assert GENEROUS.release_epsilon == pytest.approx(1.0)
    R.publish(park_lake, policy=GENEROUS, epsilon=GENEROUS.release_epsilon, delta=0.0, days=[FRIDAY.date()])
    with pytest.raises(Refused, match="budget"):
        R.publish(park_lake, policy=GENEROUS, epsilon=0.1, delta=0.0, days=[FRIDAY.date()])


def test_a_restarted_watcher_neither_redraws_the_line_nor_pays_twice(park_lake, tmp_path):
    _steward_policy(park_lake)
    R.publish(park_lake, policy=GENEROUS, epsilon=1.0, delta=0.0, days=HISTORY)
    _watch(park_lake, [], lambda: _live_crowd(park_lake, tmp_path))
    state = json.loads((park_lake.steward_dir / STATE).read_text())
    released = scan(park_lake, "alerts_released").collect().sort("alert_id")
    charged_before = scan(park_lake, "privacy_ledger").filter(pl.col("table_name") == "alerts_released").collect()
    again = _watch(park_lake, [])  # a restart (SIGKILL leaves the same files behind)
    assert json.loads((park_lake.steward_dir / STATE).read_text())["threshold_noise"] == state["threshold_noise"]
    assert again.released.run.judged == dt.datetime.fromisoformat(state["judged"])
    charged = scan(park_lake, "privacy_ledger").filter(pl.col("table_name") == "alerts_released").collect()
    assert charged.height == charged["day"].n_unique() == len(charged_before)
    assert scan(park_lake, "alerts_released").collect().sort("alert_id").equals(released)


def test_without_a_released_history_analysts_get_no_crowd_alert_and_are_told_why(park_lake, tmp_path):
    _steward_policy(park_lake)
    said: list[str] = []
    _watch(park_lake, said, lambda: _live_crowd(park_lake, tmp_path))
    assert scan(park_lake, "alerts").filter(pl.col("kind") == SURGE).collect().height == 1  # the steward's
    assert scan(park_lake, "alerts_released").collect().is_empty()
    assert any("need 3 more released day(s) of history like it (`citylake publish`)" in line for line in said)
    assert scan(park_lake, "privacy_ledger").collect().is_empty()  # nothing asked, nothing spent


def test_a_policy_without_alert_budget_keeps_crowds_from_analysts(park_lake, tmp_path):
    _steward_policy(park_lake, Policy(alert_epsilon=0.0))
    R.publish(park_lake, policy=Policy(alert_epsilon=0.0), epsilon=1.0, delta=0.0, days=HISTORY)
    said: list[str] = []
    _watch(park_lake, said, lambda: _live_crowd(park_lake, tmp_path))
    assert scan(park_lake, "alerts_released").collect().is_empty()
    assert any("keeps no epsilon for them" in line for line in said)


def test_the_alert_budget_must_leave_releases_some():
    with pytest.raises(Exception, match="alert_epsilon"):
        Policy(epsilon_per_day=1.0, alert_epsilon=1.0).checked()


def test_a_lake_from_before_keeps_no_exact_alert_where_analysts_read(tmp_path):
    """Format 2 kept the watcher's exact alerts in the shared zone: its owner's next open moves them to the steward's."""
    lake = Lake.init(tmp_path / "lake")
    now = dt.datetime.now(dt.timezone.utc)
    lake.write("alerts", pl.DataFrame({"alert_id": ["a1"], "kind": [SURGE], "place_id": ["places:plaza"], "sensor_ids": [None],
                                       "start": [now], "end": [now], "status": ["open"], "severity": ["low"], "evidence": ["e"],
                                       "revision": [1], "updated_at": [now]}, schema_overrides={"sensor_ids": pl.String}))
    lake.path("alerts").rename(tmp_path / "lake" / "tables" / "alerts")
    marker = tmp_path / "lake" / "citylake.json"
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {"format": 2}))
    opened = Lake.open(tmp_path / "lake")
    assert not (tmp_path / "lake" / "tables" / "alerts").exists() and opened.path("alerts").parent.name == "steward"
    assert scan(opened, "alerts").collect()["alert_id"].to_list() == ["a1"]
    assert stat.S_IMODE(opened.path("alerts").stat().st_mode) == 0o700


# -- what the attack helper found (2026-12-01), each fixed ------------------------------------------------------------
def test_one_device_with_a_fast_clock_does_not_move_event_time(park_lake, tmp_path):
    """Event time was the 20th newest *row*: one device's 20 pings dated ten minutes ahead moved it alone, and with it
    which pings of the others a question counted. Now it is the 20th newest device or sensor."""
    watcher = Watcher(park_lake, k=10, config=WatchConfig(lateness=dt.timedelta(0)), announce=lambda _: None)
    quiet = [row for row in quiet_park_days(np.random.default_rng(4), [FRIDAY.date()]) if row[1] < FRIDAY]
    crowd = [(f"early-{d}", FRIDAY - dt.timedelta(minutes=5), 31.2045, 121.4045) for d in range(30)]
    fast = [("fast-clock", FRIDAY + dt.timedelta(minutes=10, seconds=s), 31.201, 121.401) for s in range(20)]
    ingest_pings(park_lake, write_pings_csv(tmp_path / "live.csv", quiet + crowd + fast), key=KEY)
    watcher.poll()
    assert watcher.watermark == FRIDAY - dt.timedelta(minutes=5)  # the fast clock is one device of twenty, not twenty


def test_a_question_after_midnight_counts_that_day_only(park_lake, tmp_path):
    """A question at 00:15 counted the hour from 23:15, yesterday's pings on today's ledger row: now it counts from 00:00."""
    _steward_policy(park_lake)
    R.publish(park_lake, policy=GENEROUS, epsilon=1.0, delta=0.0, days=HISTORY)
    watcher = Watcher(park_lake, k=10, config=WatchConfig(lateness=dt.timedelta(0)), announce=lambda _: None)
    midnight = utc(2026, 11, 6)
    hits = pl.DataFrame({"place_id": ["places:plaza"] * 503, "device_id": list(range(503)),
                         "ts": [midnight - dt.timedelta(minutes=30)] * 500 + [midnight + dt.timedelta(minutes=5)] * 3},
                        schema={"place_id": pl.String, "device_id": pl.Int64, "ts": pl.Datetime("us", "UTC")})
    asked: list[np.ndarray] = []
    watcher.released.judge(midnight + dt.timedelta(minutes=15), hits)  # the day's run starts here
    original = watcher.released.run.above
    watcher.released.run.above = lambda counts, lines, **kw: asked.append(counts) or original(counts, lines, **kw)
    watcher.released.judge(midnight + dt.timedelta(minutes=30), hits)
    assert asked and max(asked[0]) == 3  # the 500 devices of 23:30 are the day before's
    ledger = scan(park_lake, "privacy_ledger").filter(pl.col("table_name") == "alerts_released").collect()
    assert ledger["day"].to_list() == [midnight.date()]


def test_a_second_watcher_on_the_lake_is_refused(park_lake, monkeypatch):
    """Two watchers at once asked every question twice on one ledger charge; the lock goes with the process."""
    from citylake.analytics.watch import one_watcher

    monkeypatch.setenv("CITYLAKE_PSEUDONYM_KEY", TEST_KEY)
    with one_watcher(park_lake):
        with pytest.raises(Refused, match="another `citylake watch` is running on this lake"):
            api.watch(park_lake, max_seconds=0.1)
    api.watch(park_lake, max_seconds=0.1, announce=lambda _: None)  # free again


def test_a_policy_no_mechanism_can_honour_is_refused(park_lake):
    from citylake.privacy import BadPolicy, read_policy

    for values in ({"alert_epsilon": 1e-300}, {"alert_most": 2.5}, {"alert_epsilon": float("nan")}):
        with pytest.raises(BadPolicy):
            Policy(**values).checked()
    path = park_lake.steward_dir / "privacy.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps(document | {"alert_most": 2.5}))
    with pytest.raises(BadPolicy, match="alert_most"):  # a hand-edited file is checked when read
        read_policy(park_lake)
    path.write_text(json.dumps({k: v for k, v in document.items() if not k.startswith("alert_")} | {"epsilon_per_day": 0.5}))
    assert read_policy(park_lake).alert_epsilon == pytest.approx(0.15)  # a policy from before: releases keep most of it
    (park_lake.steward_dir / STATE).write_text('{"day": 5}')
    assert SparseVector.load(park_lake.steward_dir / STATE) is None  # a state of the wrong shape: a new run, charged


def test_the_watchers_files_are_the_stewards(park_lake, tmp_path):
    from citylake.analytics.watch import CHECKPOINT

    _watch(park_lake, [], lambda: _live_crowd(park_lake, tmp_path, devices=20))
    assert stat.S_IMODE((park_lake.steward_dir / CHECKPOINT).stat().st_mode) == 0o600


def test_by_the_clock_no_device_decides_when_a_question_is_asked(park_lake, tmp_path):
    """Event time comes from the data, so a device that made the 20th of them could decide whether the others' late
    pings were counted (a second attack found it). By the machine's clock (the default), the questions asked are the
    same whoever lands what, and a crowd landing after its quarter-hour was asked is not counted."""
    _steward_policy(park_lake)
    R.publish(park_lake, policy=GENEROUS, epsilon=1.0, delta=0.0, days=HISTORY)
    asked: dict[bool, list] = {}
    lakes = {False: park_lake, True: _copy(park_lake, tmp_path / "with-x")}  # the same lake, before anything is asked
    for with_x in (False, True):
        lake = lakes[with_x]
        clock = [FRIDAY + dt.timedelta(minutes=30)]  # the machine's clock, stopped at 10:30
        watcher = Watcher(lake, k=10, config=WatchConfig(lateness=dt.timedelta(0), clock=lambda now=clock[0]: now),
                          announce=lambda _: None)
        seen: list = []
        watcher.released.judge = lambda at, hits, seen=seen, ask=watcher.released.judge: seen.append(at) or ask(at, hits)
        quiet = [row for row in quiet_park_days(np.random.default_rng(4), [FRIDAY.date()]) if row[1] < FRIDAY + dt.timedelta(minutes=10)]
        app = [(f"app-{i}", FRIDAY + dt.timedelta(minutes=32), 31.25, 121.45) for i in range(19 + with_x)]  # X: the 20th
        ingest_pings(lake, write_pings_csv(tmp_path / f"first-{with_x}.csv", quiet + app), key=KEY)
        watcher.poll()
        crowd = [(f"crowd-{d}", FRIDAY + dt.timedelta(minutes=m), 31.205, 121.405) for d in range(1500) for m in (0, 5)]
        ingest_pings(lake, write_pings_csv(tmp_path / f"late-{with_x}.csv", crowd), key=KEY)  # lands after 10:15 was asked
        watcher.poll()
        asked[with_x] = seen
        assert scan(lake, "alerts_released").filter(pl.col("kind") == SURGE).collect().is_empty()
    assert asked[False] == asked[True] == [FRIDAY + dt.timedelta(minutes=15)]  # once, by the clock, with or without X


def _copy(lake, where):
    import shutil

    shutil.copytree(lake.root, where / "lake", symlinks=True)
    return Lake.open(where / "lake")

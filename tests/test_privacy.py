"""The privacy room: the lake's key and its check, rotation, the policy, the budget ledger, calibrated noise, and the
releases built on them (bounded contributions, public partitions, thresholds, replacement)."""

from __future__ import annotations

import datetime as dt
import json
import stat

import numpy as np
import polars as pl
import pytest
from conftest import TEST_KEY, generated_city_lake, with_key

from citylake.lake import Lake, scan
from citylake.privacy import (
    BadKeyFile,
    BadPolicy,
    NoPseudonymKey,
    Policy,
    Refused,
    establish_key,
    k_for_result,
    key_check,
    read_policy,
    require_steward,
    rotate_key,
)
from citylake.privacy import pseudonyms as P
from citylake.privacy.ledger import check_budget, record, spent
from citylake.privacy.noise import calibrate
from citylake.queries import Filters, footfall
from citylake.queries import release as R


@pytest.fixture
def bare_env(monkeypatch):
    monkeypatch.delenv(P.KEY_ENV, raising=False)


def test_key_file_is_private_and_outside_the_lake(tmp_path):
    key = P.create_key(tmp_path / "conf" / "pseudonym.key", lake_root=tmp_path / "lake")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(P.load_key(key, env={})) == 64
    assert P.create_key(key) == key and P.load_key(key, env={}) == P.load_key(key, env={})  # created once
    with pytest.raises(BadKeyFile, match="outside the lake"):
        P.create_key(tmp_path / "lake" / "k.key", lake_root=tmp_path / "lake")
    assert P.load_key(key, env={P.KEY_ENV: TEST_KEY}) == TEST_KEY.encode()
    with pytest.raises(BadKeyFile, match="at least 32 bytes"):
        P.load_key(key, env={P.KEY_ENV: "short-key"})
    with pytest.raises(NoPseudonymKey, match="citylake init"):
        P.load_key(tmp_path / "absent.key", env={})


def test_only_the_lakes_own_key_makes_a_steward(tmp_path, bare_env):
    lake = Lake.init(tmp_path / "lake")
    key_file = tmp_path / "keys" / "lake.key"
    with pytest.raises(Refused, match="no pseudonym key"):
        require_steward(lake, key_file)
    P.create_key(key_file)
    with pytest.raises(Refused, match="has none yet"):  # a key, but the lake records no key yet
        require_steward(lake, key_file)
    establish_key(lake, key_file, policy=Policy())
    assert require_steward(lake, key_file) == P.load_key(key_file)
    policy_file = lake.steward_dir / "privacy.json"
    assert stat.S_IMODE(policy_file.stat().st_mode) == 0o600 and P.load_key(key_file) not in policy_file.read_bytes()
    other = tmp_path / "other.key"
    P.create_key(other)  # a good key, but not this lake's
    with pytest.raises(Refused, match="not this lake's pseudonym key"):
        require_steward(lake, other, doing="publishing")
    with pytest.raises(Refused, match="publishing is for the steward"):
        require_steward(lake, tmp_path / "absent.key", doing="publishing")


def test_rotation_starts_an_epoch_and_retires_the_old_key(tmp_path, bare_env):
    lake = Lake.init(tmp_path / "lake")
    key_file = tmp_path / "lake.key"
    establish_key(lake, key_file, policy=Policy())
    old = P.load_key(key_file)
    assert rotate_key(lake, key_file) == 2
    new = P.load_key(key_file)
    assert new != old and require_steward(lake, key_file) == new and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (tmp_path / "old.key").write_bytes(old)
    with pytest.raises(Refused, match="not this lake's"):
        require_steward(lake, tmp_path / "old.key")
    assert P.pseudonym("device-1", old) != P.pseudonym("device-1", new)  # the same device is unlinkable across epochs
    assert [e["epoch"] for e in read_policy(lake).epochs] == [1, 2]


def test_a_rotation_cut_short_still_unlocks_the_lake(tmp_path, bare_env):
    """Killed after the new key replaced the key file, before the policy named it: the new key finishes the rotation."""
    from citylake.privacy import write_policy

    lake = Lake.init(tmp_path / "lake")
    key_file = tmp_path / "lake.key"
    establish_key(lake, key_file, policy=Policy())
    fresh = P.new_key()
    write_policy(lake, read_policy(lake).with_pending(key_check(fresh)))
    key_file.unlink()
    P.write_key_file(key_file, fresh)
    assert require_steward(lake, key_file) == fresh and read_policy(lake).epoch == 2 and read_policy(lake).pending is None


def test_the_k_floor_lives_in_the_lake(tmp_path, bare_env):
    lake = with_key(Lake.init(tmp_path / "lake"))
    assert k_for_result(lake, None) == 10 and k_for_result(lake, 3) == 3
    from citylake.privacy import write_policy

    write_policy(lake, read_policy(lake).changed(k_floor=25))
    assert k_for_result(lake, None) == 25
    with pytest.raises(BadPolicy, match="k-anonymity below 2"):
        read_policy(lake).changed(k_floor=1)


def test_the_ledger_refuses_a_day_past_its_budget(tmp_path):
    lake = Lake.init(tmp_path / "lake")
    policy, days = Policy(), [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    check_budget(lake, policy, days, epsilon=1.0, delta=1e-6)  # a whole day's budget is allowed once
    record(lake, "r1", {(days[0], "footfall_hourly"): (0.7, 0.0)})
    check_budget(lake, policy, days, epsilon=0.3, delta=0.0)
    with pytest.raises(Refused, match="2026-11-02 has spent epsilon 0.7") as refused:
        check_budget(lake, policy, days, epsilon=0.31, delta=0.0)
    assert "a smaller epsilon" in str(refused.value) and "delta (" not in str(refused.value)
    assert spent(lake, days)["epsilon"].to_list() == [0.7, 0.0]
    record(lake, "r2", {(days[1], "footfall_hourly"): (0.1, 1e-6)})  # day two: its whole delta spent
    with pytest.raises(Refused, match="2026-11-03 has spent epsilon 0.1 \\(delta 1e-06\\)") as refused:
        check_budget(lake, policy, days[1:], epsilon=0.1, delta=1e-7)
    assert "a smaller delta (--delta 0" in str(refused.value) and "smaller epsilon" not in str(refused.value)
    check_budget(lake, policy, days[1:], epsilon=0.1, delta=0.0)  # Laplace noise spends no delta: allowed


@pytest.mark.parametrize("delta", [0.0, 1e-6])
def test_noise_is_what_opendp_says_it_is(delta):
    noise = calibrate(epsilon=0.5, delta=delta, l1=24, l2=24 ** 0.5)
    assert noise.epsilon <= 0.5 + 1e-9 and noise.mechanism == ("laplace" if delta == 0 else "gaussian")
    if delta == 0:
        assert noise.scale == pytest.approx(24 / 0.5)
    drawn = noise.add(np.full(40_000, 100)) - 100
    assert abs(drawn.mean()) < 0.05 * noise.deviation and drawn.std() == pytest.approx(noise.deviation, rel=0.05)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return generated_city_lake(tmp_path_factory.mktemp("release"), devices=300, days=2, seed=21)


def test_bounded_counts_before_noise_are_the_exact_counts(city):
    """With bounds no device reaches, the counts a release adds noise to are the exact distinct devices per place-hour."""
    runner, public = R.engine("polars", city), R._public_partitions(city, Policy())
    day = dt.date.fromisoformat(min(city.rows_per_partition("pings", "date")))
    found = R._place_hours([R.presence_on(runner, day)], day, Policy(max_place_hours=10_000, bound_share=0), public, (1.0, 1e-6))
    exact = pl.from_arrow(footfall(city, by="place", freq="1h", filters=R._window(day), k=1, engine_name="duckdb").table)
    counted = found.keys.with_columns(pl.Series("n", found.counts)).filter(pl.col("n") > 0)
    assert counted.join(exact, on=["place_id", "bucket"], how="full").filter(pl.col("n") != pl.col("devices")).height == 0
    assert counted.height == exact.height > 0


def test_a_day_released_a_share_of_its_devices_at_a_time_counts_what_the_whole_day_counts(city, monkeypatch):
    """A day denser than ``SHARE_PINGS`` is read a share of its devices at a time (bounded memory): every table's counts
    before noise are the whole day's — exactly when no device reaches its bound, and when bounds cut, the sum of each
    device's rows up to its bound (a device split across shares would add its bound per share)."""
    runner, public = R.engine("polars", city), R._public_partitions(city, Policy())
    day = dt.date.fromisoformat(min(city.rows_per_partition("pings", "date")))
    monkeypatch.setattr(R, "SHARE_PINGS", 5_000)
    shares = R.device_shares(city, day)
    assert len(shares) == 4 and R.device_shares(city, day - dt.timedelta(days=9)) == [None]
    whole = {"place": R.presence_on(runner, day), "cell": R._likeliest_cells(runner.pings(filters=R._window(day)), 8),
             "pairs": R._pairs_travelled(city, day, None, "polars")}
    assert all(rows.height for rows in whole.values())
    counted = {"place": lambda split, policy: R._place_hours([R.presence_on(runner, day, s) for s in split], day, policy, public,
                                                             (1.0, 1e-6)),
               "cell": lambda split, policy: R._cell_hours(runner, day, policy, public, split),
               "pairs": lambda split, policy: R._district_pairs(city, day, policy, public, "polars", split)}
    unbounded = Policy(max_place_hours=10_000, max_cell_hours=10_000, max_trips=10_000, bound_share=0, release_cell_res=8)
    for table, count in counted.items():
        assert np.array_equal(count(shares, unbounded).counts, count([None], unbounded).counts), table
        most = 2
        cut = Policy(max_place_hours=most, max_cell_hours=most, max_trips=most, bound_share=0, release_cell_res=8)
        kept = int(whole[table].group_by("device_id").len()["len"].clip(upper_bound=most).sum())
        assert kept < whole[table].height, table  # the bound cuts some devices
        assert count(shares, cut).counts.sum() == count([None], cut).counts.sum() == kept, table


def test_a_days_bound_is_chosen_from_every_share_of_its_devices(city, monkeypatch):
    """The private 95th percentile of place-hours per device sees each device of the day once, whatever the shares."""
    runner, public = R.engine("polars", city), R._public_partitions(city, Policy())
    day = dt.date.fromisoformat(min(city.rows_per_partition("pings", "date")))
    seen = []
    monkeypatch.setattr(R, "dp_quantile", lambda values, **_: seen.append(np.sort(values)) or 5)
    for share_pings in (5_000, 10**9):
        monkeypatch.setattr(R, "SHARE_PINGS", share_pings)
        R._place_hours([R.presence_on(runner, day, s) for s in R.device_shares(city, day)], day, Policy(), public, (1.0, 1e-6))
    assert len(seen) == 2 and seen[0].size > 100 and np.array_equal(*seen)


def test_the_days_bound_is_chosen_privately_near_its_95th_percentile():
    """A commuter city needs ~30 place-hours a device-day, a park city ~5: the bound follows the data, for epsilon 0.06."""
    from citylake.privacy.noise import dp_quantile

    rng = np.random.default_rng(4)
    for values, truth in ((rng.poisson(20, 50_000).clip(1, 48), None), (rng.integers(1, 6, 50_000), None)):
        truth = float(np.quantile(values, 0.95))
        chosen = [dp_quantile(values, candidates=list(range(1, 49)), alpha=0.95, epsilon=0.06) for _ in range(5)]
        assert all(abs(c - truth) <= 1 for c in chosen), (truth, chosen)


def test_a_device_adds_at_most_its_bound(city):
    presence = R.engine("polars", city).presence(filters=Filters())
    assert presence.group_by("device_id").len()["len"].max() > 5
    assert R._bounded(presence, 5, ["device_id", "place_id", "bucket"]).group_by("device_id").len()["len"].max() == 5


def test_a_release_shows_only_public_partitions_over_its_threshold_and_replaces_the_last(city, bare_env):
    policy = Policy(epsilon_per_day=2.0)
    R.publish(city, policy=policy, epsilon=1.0, delta=0.0)
    first_version = city.table("footfall_hourly").version()
    about = scan(city, "releases").collect()
    for table, rows in (("footfall_hourly", scan(city, "footfall_hourly").collect()),
                        ("footfall_cells_hourly", scan(city, "footfall_cells_hourly").collect())):
        threshold = about.filter(pl.col("table_name") == table)["threshold"].min()
        assert rows.height and rows["devices"].min() >= threshold >= policy.k_floor
    public = R._public_partitions(city, policy)
    assert set(scan(city, "footfall_cells_hourly").collect()["h3_cell"]) <= set(public.cells.tolist())
    assert set(scan(city, "footfall_hourly").collect()["place_id"]) <= set(public.places["place_id"])
    assert json.loads(about["bounds"][0])
    R.publish(city, policy=policy, epsilon=1.0, delta=0.0)  # the same days again: the budget of 2 per day allows it
    assert scan(city, "releases").collect()["release_id"].n_unique() == 1  # the second release replaced the first
    with pytest.raises(Exception, match="(?i)not found|no such file"):
        city.table("footfall_hourly", as_of=first_version).to_pyarrow_table()  # the first release's files are gone
    with pytest.raises(Refused, match="budget"):
        R.publish(city, policy=policy, epsilon=0.1, delta=0.0)
    assert scan(city, "privacy_ledger").collect()["release_id"].n_unique() == 2  # both releases spent budget

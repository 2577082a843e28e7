"""The count-aware score and the batch detector's usual: the formula against a plain-Python reading of it, the leave-one-out
median against ``statistics.median`` of the other rows, small places needing a larger change, thin history unjudged, and
slots in the city's time zone."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import zoneinfo

import numpy as np
import polars as pl
import pytest

from citylake.analytics.baselines import _leave_one_out_median, hourly_usual
from citylake.analytics.detect import history_needed, score_places
from citylake.analytics.scoring import count_z, surge_judgement

UTC = dt.timezone.utc


def test_count_z_is_the_formula():
    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"devices": rng.integers(0, 500, 200).astype(float), "usual": rng.uniform(0, 300, 200),
                          "extra": rng.uniform(0, 40, 200), "days": rng.integers(1, 28, 200)})
    got = frame.select(count_z(days="days"))["devices"].to_list()
    for row, z in zip(frame.iter_rows(named=True), got):
        want = (row["devices"] - row["usual"]) / math.sqrt(row["usual"] * (1 + math.pi / 2 / row["days"]) + row["extra"] ** 2 + 1)
        assert z == pytest.approx(want, rel=2e-3)  # 1.57 for pi/2


def test_a_small_place_needs_a_larger_change_than_a_large_one():
    """Twice the usual is sure at 500 devices, chance at 5; both learned from the same 5 days with no spread beyond Poisson."""
    frame = pl.DataFrame({"devices": [10.0, 1000.0], "usual": [5.0, 500.0], "extra": [0.0, 0.0], "days": [5, 5]})
    small, large = frame.select(count_z(days="days"))["devices"].to_list()
    assert small < 2 and large > 15


def test_the_leave_one_out_median_is_the_median_of_the_other_rows():
    rng = np.random.default_rng(8)
    frame = pl.DataFrame({"g": rng.integers(0, 6, 300), "v": rng.integers(0, 12, 300).astype(float)})  # ties, groups of one
    got = frame.with_columns(_leave_one_out_median("v", ["g"]).alias("loo"))["loo"].to_list()
    rows = frame.to_dicts()
    for i, row in enumerate(rows):
        others = [r["v"] for j, r in enumerate(rows) if j != i and r["g"] == row["g"]]
        assert got[i] == (statistics.median(others) if others else None)


def _days(first: dt.date, count: int, devices) -> pl.DataFrame:
    """One place's hourly devices over ``count`` days from ``first``: devices(day index, hour) each hour (UTC)."""
    rows = [{"place_id": "p", "bucket": dt.datetime.combine(first + dt.timedelta(days=d), dt.time(h), UTC), "devices": float(devices(d, h))}
            for d in range(count) for h in range(24)]
    return pl.DataFrame(rows)


def test_hours_without_enough_history_are_not_judged_and_say_what_is_missing():
    two_days = _days(dt.date(2026, 11, 2), 2, lambda d, h: 30)  # Monday and Tuesday
    scored = score_places(two_days, k=10)
    assert scored["usual"].null_count() == scored.height and not scored["surge"].fill_null(False).any()
    said = history_needed(scored, ["p"])
    assert said.startswith("needs 2 more days of history for places like this") and "weekdays: 2 held" in said
    five = score_places(_days(dt.date(2026, 11, 2), 5, lambda d, h: 30), k=10)  # Monday to Friday: each has 4 other weekdays
    assert five["usual"].null_count() == 0 and history_needed(five, ["p"]) is None


def test_slots_are_hours_and_weekends_of_the_city():
    """Friday 20:00 UTC is Saturday 04:00 in Shanghai: its usual is a weekend's 04:00."""
    series = _days(dt.date(2026, 11, 2), 14, lambda d, h: 5)
    shanghai = hourly_usual(series, tz="Asia/Shanghai")
    friday_evening = shanghai.filter(pl.col("bucket") == dt.datetime(2026, 11, 6, 20, tzinfo=UTC)).row(0, named=True)
    assert (friday_evening["slot"], friday_evening["weekend"], friday_evening["day"]) == (4, True, dt.date(2026, 11, 7))
    local = dt.datetime(2026, 11, 6, 20, tzinfo=UTC).astimezone(zoneinfo.ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.weekday() >= 5) == (4, True)  # the oracle: the standard library's zone database


def test_a_weekend_afternoon_a_little_busier_is_no_surge_but_a_crowd_is():
    """The false alarm the issue saw: a block with ~15 devices on weekend afternoons holding 25 on one of them. And a
    district from ~30 to ~100 in the same slot is a surge, rated by the band of its ratio."""
    rng = np.random.default_rng(5)
    base = {d: rng.poisson(15, 24) for d in range(14)}
    calm = _days(dt.date(2026, 11, 2), 14, lambda d, h: 25 if (d, h) in ((12, 14), (12, 15)) else base[d][h])  # Sat 14 Nov
    assert not score_places(calm, k=10)["surge"].fill_null(False).any()
    crowd = _days(dt.date(2026, 11, 2), 14, lambda d, h: 102 if d == 12 and 13 <= h < 16 else 2 * base[d][h])
    surges = score_places(crowd, k=10).filter(pl.col("surge"))
    assert surges["bucket"].dt.hour().to_list() == [13, 14, 15]
    row = surges.row(0, named=True)
    severity, words = surge_judgement(ratio=row["ratio"], z=row["z"], usual=row["usual"], k=10, counted="devices in an hour",
                                      when="weekend 13:00 UTC", observed=row["devices"])
    assert severity in ("medium", "high") and words.startswith("devices in an hour over")

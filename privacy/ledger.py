"""The privacy budget: every release's epsilon and delta per day and table, in the steward zone's ``privacy_ledger``.

A release is refused before anything is computed when it would take any day past the lake's budget per day. The
ledger row is written before the release, so a crash can waste budget but never spend it unrecorded; a replaced
release keeps its rows (it was seen).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from citylake.lake import Lake, scan
from citylake.privacy.errors import Refused
from citylake.privacy.policy import Policy


def spent(lake: Lake, days: list[dt.date], /) -> pl.DataFrame:
    """day, epsilon, delta: what the recorded releases spent on each of ``days`` (0 where nothing was released)."""
    recorded = (scan(lake, "privacy_ledger").filter(pl.col("day").is_in(days)).group_by("day")
                .agg(pl.col("epsilon").sum(), pl.col("delta").sum()).collect())
    every = pl.DataFrame({"day": days}, schema={"day": pl.Date})
    return every.join(recorded, on="day", how="left").fill_null(0.0).sort("day")


def check_budget(lake: Lake, policy: Policy, days: list[dt.date], /, *, epsilon: float, delta: float) -> None:
    """Refuse a release of ``epsilon`` and ``delta`` per day that would take any of ``days`` past the policy's budget."""
    so_far = spent(lake, days)
    past_epsilon = pl.col("epsilon") + epsilon > policy.epsilon_per_day + 1e-9
    past_delta = pl.col("delta") + delta > policy.delta_per_day * (1 + 1e-9)
    over = so_far.filter(past_epsilon | past_delta)
    if over.height:
        first = over.row(0, named=True)
        smaller = "a smaller epsilon" if over.select(past_epsilon.any()).item() else ""
        if over.select(past_delta.any()).item():  # say so: a smaller epsilon would not help
            smaller += f"{' and ' if smaller else ''}a smaller delta (--delta 0: Laplace noise, no delta spent)"
        raise Refused(f"a release of epsilon {epsilon:g} (delta {delta:g}) would take {over.height} day(s) past the lake's budget of "
                      f"epsilon {policy.epsilon_per_day:g} (delta {policy.delta_per_day:g}) per day: {first['day']} has spent "
                      f"epsilon {first['epsilon']:g} (delta {first['delta']:g}); release fewer days or {smaller}")


def record(lake: Lake, release_id: str, spending: dict[tuple[dt.date, str], tuple[float, float]], /) -> None:
    """One ledger row per (day, table): what this release spends there (one commit)."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"release_id": release_id, "day": day, "table_name": table, "epsilon": eps, "delta": delta, "recorded_at": now}
            for (day, table), (eps, delta) in sorted(spending.items())]
    lake.write("privacy_ledger", pl.DataFrame(rows, schema={"release_id": pl.String, "day": pl.Date, "table_name": pl.String,
                                                             "epsilon": pl.Float64, "delta": pl.Float64,
                                                             "recorded_at": pl.Datetime("us", "UTC")}), mode="append")

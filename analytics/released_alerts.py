"""Crowd surges everyone but the steward may read: the live watcher's differentially private test.

The watcher's own surges are judged on exact counts, k-anonymous: the steward's (``alerts``). For everyone else
(``alerts_released``), each quarter-hour asks every place, smallest first, whether its distinct devices in the last hour
(cut at midnight) are above a line drawn from public facts only — the usual from the footfall *release* of the history (post-
processing), twice it or the k floor, plus a margin for the noise (``SparseVector.margin``) — through the sparse vector
technique (``privacy.sparse``): one run a day, charged to the ledger before its first question, at most the policy's
``alert_most`` yeses. Smaller places are asked first, and a yes leaves the places around it unasked (a crowd in a plaza
is the plaza's, not its district's, as the steward's alerts have it, and a yes costs as much as all the no's). A yes
opens an alert at the place that stays open for ``HOLD``, the place and those around it not asked meanwhile; its
evidence is the line it crossed, never a count.

Needs the history's releases (``citylake publish``): without ``MIN_HISTORY_DAYS`` released days, or ``MIN_KIND_DAYS`` of
the day's kind, no question is asked that day, and the watcher says so.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

import numpy as np
import polars as pl

from citylake.analytics.alerts import SURGE, Episodes, alert_id
from citylake.analytics.baselines import MIN_HISTORY_DAYS, MIN_KIND_DAYS, history_window, released_place_baselines
from citylake.lake import Lake, scan
from citylake.privacy import Refused, read_policy
from citylake.privacy.ledger import check_budget, record
from citylake.privacy.sparse import SparseVector

HOUR = dt.timedelta(hours=1)
RELEASED_SETTLE = dt.timedelta(minutes=15)  # a quarter-hour is asked only when the clock (or, replaying, event time) is
# this far past it: beyond the 10 minutes into the future ingestion accepts
HOLD = dt.timedelta(hours=1)  # a released surge stays open this long after its yes; its place is not asked meanwhile
STATE = "watch_released.json"  # the day's run, in the steward zone: the line's noise must never be drawn twice
LEDGER_TABLE = "alerts_released"
QUESTIONS_A_DAY = 96  # one per place each quarter-hour


class ReleasedSurges:
    """The day's sparse-vector run, the released usual, and the released surge episodes."""

    def __init__(self, lake: Lake, /, *, shapes: dict, k: int, ratio: float, history_days: int,
                 announce: Callable[[str], None]) -> None:
        self.places = sorted(shapes, key=lambda place: (shapes[place].area, place))  # the order questions are asked in
        self.around = _places_around(shapes)
        self.order = pl.DataFrame({"place_id": self.places, "order": range(len(self.places))})
        self.lake, self.k, self.ratio = lake, k, ratio
        self.history_days, self.announce = history_days, announce
        self.policy = read_policy(lake)
        self.run = SparseVector.load(lake.steward_dir / STATE)
        opened = scan(lake, "alerts_released").filter((pl.col("kind") == SURGE) & (pl.col("status") == "open")).collect()
        self.episodes = Episodes(opened, quiet={SURGE: HOLD})
        self.lines: pl.DataFrame | None = None
        self.lines_day: dt.date | None = None
        self.quiet_day: dt.date | None = None  # a day without the test (said once)

    def judge(self, at: dt.datetime, hits: pl.DataFrame) -> None:
        """At a quarter-hour step, ask each place not held open whether its last hour was a crowd; open an alert on yes.
        The hour is cut at the start of the day it ends in: each day's run counts that day's pings only."""
        self.episodes.close_quiet(at)
        day = (at - dt.timedelta(microseconds=1)).date()
        if at.minute % 15 or not self._ready(day) or (self.run.judged is not None and at <= self.run.judged):
            return
        start = max(at - HOUR, dt.datetime.combine(day, dt.time(), dt.timezone.utc))
        opened = {where for (_, where) in self.episodes.open}
        held = opened | {outer for place in opened for outer in self.around.get(place, ())}
        counts = (hits.filter(pl.col("ts").is_between(start, at, closed="left")).group_by("place_id")
                  .agg(pl.col("device_id").n_unique().alias("devices")))
        asked = (self._lines(day, start, at).filter(~pl.col("place_id").is_in(list(held))).join(self.order, on="place_id")
                 .join(counts, on="place_id", how="left").with_columns(pl.col("devices").fill_null(0)).sort("order"))
        position = {place: i for i, place in enumerate(asked["place_id"])}
        spared = [{position[outer] for outer in self.around.get(place, ()) if outer in position} for place in asked["place_id"]]
        answers = self.run.above(asked["devices"].to_numpy(), asked["line"].to_numpy(), unasked_after_yes=spared)
        self.run.judged = at
        self.run.save(self.lake.steward_dir / STATE)  # before any answer leaves: a restart never asks this step again
        when = f"{'weekend' if start.weekday() >= 5 else 'weekday'} {start:%H}:00 UTC"
        counted = "in the hour" if at - start == HOUR else "since midnight"
        for place in asked.filter(pl.Series(answers))["place_id"]:
            episode = self.episodes.flag(SURGE, place, place_id=place, start=start, end=at, severity="medium",
                                         evidence=f"devices {counted} to {at:%H:%M} UTC above {self.ratio:g}x the released usual "
                                                  f"for {when} and a margin for the noise (a differentially private test; no count)")
            episode.alert_id = alert_id(f"released {SURGE}", place, start)  # never the id of the steward's alert
        if answers.any() and self.run.spent:
            self.announce(f"watch: the {self.run.most} crowd alert(s) analysts and planners may get on {self.run.day} are raised; "
                          "no more until tomorrow (the steward's alerts go on)")

    def take_changed(self, now: dt.datetime) -> list[dict]:
        return self.episodes.take_changed(now)

    # -- the day's run -----------------------------------------------------------------------------
    def _ready(self, day: dt.date) -> bool:
        if self.run is not None and self.run.day == day:
            return not self.run.spent
        if self.quiet_day == day:
            return False
        if self.policy is None:
            return self._quiet(day, "the lake has no privacy policy (`citylake init` with the lake's key)")
        if self.policy.alert_epsilon == 0:
            return self._quiet(day, "the lake's policy keeps no epsilon for them (`citylake privacy set --alert-epsilon`)")
        if self._lines_for(day) is None:
            return False
        try:
            check_budget(self.lake, self.policy, [day], epsilon=self.policy.alert_epsilon, delta=0.0)
        except Refused as refused:
            return self._quiet(day, str(refused))
        record(self.lake, f"alerts-{day.isoformat()}-{secrets.token_hex(3)}", {(day, LEDGER_TABLE): (self.policy.alert_epsilon, 0.0)})
        self.run = SparseVector.start(day, epsilon=self.policy.alert_epsilon, most=self.policy.alert_most)
        self.run.save(self.lake.steward_dir / STATE)
        margin = self.run.margin(len(self.places) * QUESTIONS_A_DAY)
        self.announce(f"watch: crowd alerts for analysts and planners on {day}: differentially private (epsilon "
                      f"{self.run.epsilon:g}, at most {self.run.most}); a place needs over {self.ratio:g}x its released usual "
                      f"devices in an hour and about {margin} more")
        return True

    def _quiet(self, day: dt.date, why: str) -> bool:
        self.quiet_day = day
        self.announce(f"watch: no crowd alerts for analysts and planners on {day}: {why}")
        return False

    def _lines_for(self, day: dt.date) -> pl.DataFrame | None:
        """(place_id, slot, weekend, usual) from the release of the history before ``day``; None (said) when too thin."""
        if self.lines_day == day:
            return self.lines
        usual, kinds = released_place_baselines(self.lake, self.places, history_window(day, self.history_days))
        self.lines, self.lines_day = usual, day
        weekend = day.weekday() >= 5
        if sum(kinds.values()) < MIN_HISTORY_DAYS or kinds[weekend] < MIN_KIND_DAYS:
            needed = max(MIN_HISTORY_DAYS - sum(kinds.values()), MIN_KIND_DAYS - kinds[weekend])
            self.lines = None
            self._quiet(day, f"they need {needed} more released day(s) of history like it (`citylake publish`)")
        return self.lines

    def _lines(self, day: dt.date, start: dt.datetime, at: dt.datetime) -> pl.DataFrame:
        """Each place's line for the time from ``start`` to ``at``: the busier usual of the clock hours it overlaps."""
        hours = {start.hour, (at - dt.timedelta(microseconds=1)).hour}
        usual = (self._lines_for(day).filter(pl.col("slot").is_in(list(hours)) & (pl.col("weekend") == (start.weekday() >= 5)))
                 .group_by("place_id").agg(pl.col("usual").max()))
        margin = self.run.margin(len(self.places) * QUESTIONS_A_DAY)
        line = np.maximum(self.k, self.ratio * usual["usual"].to_numpy()) + margin if usual.height else np.zeros(0)
        return usual.select("place_id").with_columns(pl.Series("line", line, dtype=pl.Float64))


def _places_around(shapes: dict) -> dict[str, set[str]]:
    """Each place's larger places that hold it (its representative point inside), as the steward's surges judge nesting."""
    points = {place: shape.representative_point() for place, shape in shapes.items()}
    return {inner: {outer for outer, shape in shapes.items() if outer != inner and shape.area > shapes[inner].area
                    and shape.contains(points[inner])} for inner in shapes}

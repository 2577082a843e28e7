"""``citylake watch``: a long-running detector over what lands in the lake, raising alerts within minutes.

Every poll it reads the data files committed since its last look (``lake.added_since``), locates new pings in places
(``queries.PlaceFinder``) and queues new readings. Time is event time: the watermark is the latest timestamp landed, and
every 5-minute step up to the watermark (less ``lateness``) is evaluated once, in order:

- **crowd surge** at a place: distinct devices in the 15 minutes before the step against the place's usual for that hour
  (``analytics.baselines``); raised when the count is at least the lake's k floor, ``surge_ratio`` times the usual, and
  ``surge_z`` count-aware deviations above it (Poisson noise plus the history's own spread). A surge inside a larger
  place that also surges is the inner place's: the outer one is not raised.
- **sensor fault**: an impossible value, a flat line (``flat_readings`` equal readings in a row), or silence (an hour
  without a reading while the feed is alive).
- **traffic drop** on a traffic counter: two readings in a row under ``drop_ratio`` of the usual and ``drop_z`` deviations
  below it, on a sensor not faulty at the time.

Alerts are episodes (``analytics.alerts``): committed to the steward's ``alerts`` table after each poll (an upsert by id),
then handed to ``publish`` (the broker carries raw pings, so it is inside the steward's boundary). What everyone else
reads goes to ``alerts_released``, committed first: the faults and drops as they are (readings are about things), and
crowd surges only from the differentially private test of ``analytics.released_alerts`` (asked by the machine's clock,
or by event time for replays) — never the exact ones. The last
step judged rides in the exact commit's metadata and in a file in the steward zone, so a restarted watcher resumes at the
step after the last one it finished (and copies faults and drops a kill kept from the released table); its state (the
last hour of pings, the last readings per sensor) is rebuilt from the lake's snapshot. Evidence names no count of people:
how far above the usual in coarse bands (over 2x, 3x, 5x), and only where the usual is itself at least k devices.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

from citylake.analytics.alerts import DROP, FAULT, SURGE, Episodes
from citylake.analytics.baselines import MIN_HISTORY_DAYS, MIN_KIND_DAYS, history_window, place_baselines, sensor_baselines, slot_of
from citylake.analytics.released_alerts import HOUR, RELEASED_SETTLE, ReleasedSurges
from citylake.analytics.scoring import SURGE_RATIO, SURGE_Z, count_z, drop_severity, surge_judgement
from citylake.lake import Lake, added_since, read_added, registry, scan
from citylake.privacy import Refused
from citylake.privacy.files import write_private
from citylake.queries import PlaceFinder

UTC = dt.timezone.utc
STEP = dt.timedelta(minutes=5)
QUARTER = dt.timedelta(minutes=15)
WINDOW = dt.timedelta(minutes=15)
READINGS_KEPT = dt.timedelta(hours=2)  # readings reloaded after a restart, to know each sensor's last values
SILENCE = dt.timedelta(hours=1)
WATERMARK_SUPPORT = 20  # event time: the newest timestamp of the 20th most recent device; rows from the future (a clock gone wrong,
# a ping timed now amid a replayed past) do not push the watcher past minutes it has yet to judge
MAX_CATCH_UP = dt.timedelta(hours=6)  # a watcher stopped longer than this starts again at the latest data
CHECKPOINT = "watch.json"
LOCK = "watch.lock"
PING_COLUMNS = ["device_id", "ts", "lat", "lon", "h3_cell"]
READING_COLUMNS = ["sensor_id", "ts", "metric", "value"]
TRAFFIC_KINDS = ("traffic",)


@dataclass(frozen=True)
class WatchConfig:
    poll_seconds: float = 5.0
    lateness: dt.timedelta = dt.timedelta(minutes=2)  # a step is evaluated once the watermark is this far past it
    history_days: int = 28
    surge_ratio: float = SURGE_RATIO
    surge_z: float = SURGE_Z
    drop_ratio: float = 0.5
    drop_z: float = 4.0
    flat_readings: int = 4
    released_clock: str = "wall"  # when the analysts' crowd test asks: by the machine's clock, or by event time (replays)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(UTC))  # the machine's clock (tests set one)


@dataclass
class Checkpoint:
    pings: int | None = None  # table versions read up to
    readings: int | None = None
    evaluated: dt.datetime | None = None  # the last step evaluated

    def as_json(self) -> str:
        return json.dumps({"evaluated": self.evaluated.isoformat() if self.evaluated else None})

    @classmethod
    def parse(cls, text: str | None) -> Checkpoint:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(evaluated=dt.datetime.fromisoformat(raw["evaluated"]) if raw.get("evaluated") else None)

    def later(self, other: Checkpoint) -> Checkpoint:
        if other.evaluated is None or (self.evaluated is not None and self.evaluated >= other.evaluated):
            return self
        return other


@dataclass
class SensorState:
    last_value: float | None = None
    run: int = 0  # equal readings in a row
    run_start: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    low: int = 0  # readings in a row under the traffic-drop line
    low_start: dt.datetime | None = None


class Watcher:
    """The detector's state and its steps; ``run`` polls until stopped."""

    def __init__(self, lake: Lake, /, *, k: int, config: WatchConfig | None = None, publish: Callable[[dict], None] | None = None,
                 announce: Callable[[str], None] = print) -> None:
        self.lake, self.k, self.config, self.publish, self.announce = lake, k, config or WatchConfig(), publish, announce
        self.finder = PlaceFinder(lake)
        sensors = registry.sensors(lake, columns=("sensor_id", "kind", "place_id"))
        self.sensor_place = dict(zip(sensors["sensor_id"], sensors["place_id"]))
        self.traffic = set(sensors.filter(pl.col("kind").is_in(TRAFFIC_KINDS))["sensor_id"])
        self.sensor_state: dict[tuple[str, str], SensorState] = {}
        self.sensor_usual: pl.DataFrame | None = None
        self.checkpoint = self._resume()
        self.episodes = Episodes(scan(lake, "alerts").filter(pl.col("status") == "open").collect())
        shapes = self.finder.shapes(self.finder.places["place_id"].to_list())
        self.released = ReleasedSurges(lake, shapes=shapes, k=k, ratio=config.surge_ratio, history_days=config.history_days,
                                       announce=announce)
        self.baseline_day: dt.date | None = None
        self.raised = 0
        self.raised_at: dict[str, dt.datetime] = {}  # alert id → the step (event time) that first raised it
        self.unpublished: list[dict] = []
        self._latest: dict[tuple, dt.datetime] = {}  # the newest devices and sensors landed: event time is the oldest of them
        self._load_state()
        self._release_missed()

    # -- resuming ----------------------------------------------------------------------------
    def _resume(self) -> Checkpoint:
        """Where the last watcher got to (its file, or its last alerts commit if later); a first watcher, or one stopped
        longer than ``MAX_CATCH_UP`` before the latest data, starts at the latest data."""
        saved = Checkpoint.parse(_read(self.lake.steward_dir / CHECKPOINT))
        for commit in self.lake.history("alerts", limit=20):
            if "citylake.watch" in commit:
                saved = saved.later(Checkpoint.parse(commit["citylake.watch"]))
                break
        latest = _latest_ts(self.lake)
        here = Checkpoint(self.lake.table("pings").version(), self.lake.table("readings").version(),
                          _floor_step(latest - self.config.lateness) if latest else None)
        if saved.evaluated is not None and latest is not None and latest - saved.evaluated > MAX_CATCH_UP:
            self.announce(f"watch: the last watch stopped at {saved.evaluated:%Y-%m-%d %H:%M} UTC, more than "
                          f"{MAX_CATCH_UP.total_seconds() / 3600:g} h before the latest data; watching from "
                          f"{here.evaluated:%Y-%m-%d %H:%M} UTC (`citylake report` covers the time between)")
            return here
        if saved.evaluated is None:
            return here
        saved.pings, saved.readings = here.pings, here.readings  # read before the snapshot is: what lands after is read as added
        return saved

    def _load_state(self) -> None:
        """The last 15 minutes of pings and the last readings before the resume step, from the lake's snapshot."""
        since = self.checkpoint.evaluated
        self.hits = pl.DataFrame(schema={"place_id": pl.String, "device_id": pl.Int64, "ts": pl.Datetime("us", "UTC")})
        self.pending = pl.DataFrame(schema=dict(zip(READING_COLUMNS, (pl.String, pl.Datetime("us", "UTC"), pl.String, pl.Float64))))
        self.watermark = since
        if since is None:
            return
        pings = _rows_since(self.lake, "pings", since - HOUR - RELEASED_SETTLE, PING_COLUMNS)
        self.hits = self.finder.hits(pings)
        readings = _rows_since(self.lake, "readings", since - READINGS_KEPT, READING_COLUMNS)
        self._take_readings(readings.filter(pl.col("ts") < since), warm_up=True)
        self.pending = readings.filter(pl.col("ts") >= since)
        self._advance(pings, readings)

    def _release_missed(self) -> None:
        """Faults and drops the last watcher committed but had not yet copied to the released alerts (a kill between the
        two commits): copied now, at the revision it reached."""
        exact = scan(self.lake, "alerts").filter(pl.col("kind") != SURGE)
        released = scan(self.lake, "alerts_released").select("alert_id", "revision")
        missed = exact.join(released, on=["alert_id", "revision"], how="anti").collect()
        if missed.height:
            self.lake.upsert("alerts_released", missed)

    # -- one poll ----------------------------------------------------------------------------
    def poll(self) -> int:
        """Read what landed, evaluate every step it completes, commit and publish changed alerts; returns how many."""
        self._read_new()
        if self.checkpoint.evaluated is None:
            if self.watermark is None:
                return 0
            self.checkpoint.evaluated = _floor_step(self.watermark - self.config.lateness) - STEP
        while self.watermark is not None and self.checkpoint.evaluated + STEP <= self.watermark - self.config.lateness:
            self._step(self.checkpoint.evaluated + STEP)
            self.checkpoint.evaluated += STEP
        if self.config.released_clock == "wall":
            self._ask_by_the_clock()
        return self._save()

    def _clock_due(self) -> dt.datetime:
        """The latest quarter-hour the machine's clock has put ``RELEASED_SETTLE`` (and the lateness) behind it."""
        return _floor_quarter(self.config.clock() - RELEASED_SETTLE - self.config.lateness)

    def _released_due(self) -> dt.datetime:
        """The next quarter-hour the analysts' test asks by the clock: the hits of the hour before it must be kept."""
        if self.config.released_clock == "event":
            return dt.datetime.max.replace(tzinfo=UTC)
        due, judged = self._clock_due(), self.released.run.judged if self.released.run else None
        return due if judged is None else max(judged + QUARTER, due - MAX_CATCH_UP)

    def _ask_by_the_clock(self) -> None:
        """The analysts' crowd test asks each quarter-hour once the machine's clock is ``RELEASED_SETTLE`` (and the
        lateness) past it, on whatever has landed: when a question is asked never depends on anyone's data. A first
        watcher starts at the clock; a restarted one asks what it missed, up to ``MAX_CATCH_UP`` back."""
        due, at = self._clock_due(), self._released_due()
        while at <= due:
            self.released.judge(at, self.hits)
            at += QUARTER

    def _read_new(self) -> None:
        added = added_since(self.lake, "pings", self.checkpoint.pings)
        pings = _read_or_snapshot(self.lake, "pings", added, PING_COLUMNS, self.watermark)
        added_r = added_since(self.lake, "readings", self.checkpoint.readings)
        readings = _read_or_snapshot(self.lake, "readings", added_r, READING_COLUMNS, self.watermark)
        self.checkpoint.pings, self.checkpoint.readings = added.version, added_r.version
        if pings is not None and pings.height:
            self.hits = pl.concat([self.hits, self.finder.hits(pings)])
        if readings is not None and readings.height:
            self.pending = pl.concat([self.pending, readings.select(READING_COLUMNS)])
        self._advance(pings, readings)

    def _advance(self, *landed: pl.DataFrame | None) -> None:
        """Event time: the newest timestamp of the ``WATERMARK_SUPPORT``-th most recent device or sensor, never going
        back. Counted by device, not by row: one device's 20 pings from a fast clock cannot move it on their own."""
        for rows in landed:
            if rows is not None and rows.height:
                who = "device_id" if "device_id" in rows.columns else "sensor_id"
                newest = rows.group_by(who).agg(pl.col("ts").max()).top_k(WATERMARK_SUPPORT, by="ts")
                for entity, ts in newest.iter_rows():
                    key = (who, entity)
                    self._latest[key] = max(ts, self._latest.get(key, ts))
                self._latest = dict(sorted(self._latest.items(), key=lambda item: item[1])[-WATERMARK_SUPPORT:])
        if len(self._latest) == WATERMARK_SUPPORT:
            oldest = min(self._latest.values())
            self.watermark = max(self.watermark, oldest) if self.watermark else oldest

    def _step(self, at: dt.datetime) -> None:
        if self.baseline_day != at.date():
            self._learn(at.date())
        self._surges(at)
        if self.config.released_clock == "event":
            self.released.judge(at - RELEASED_SETTLE, self.hits)
        due = self.pending.filter(pl.col("ts") < at)
        self.pending = self.pending.filter(pl.col("ts") >= at)
        self._take_readings(due)
        self._silences(at)
        for episode in self.episodes.open.values():
            self.raised_at.setdefault(episode.alert_id, at)
        self.episodes.close_quiet(at)
        self.hits = self.hits.filter(pl.col("ts") >= min(at + STEP, self._released_due()) - HOUR - RELEASED_SETTLE)

    def _learn(self, day: dt.date) -> None:
        window = history_window(day, self.config.history_days)
        self.place_usual, kinds = place_baselines(self.lake, self.finder.places["place_id"].to_list(), window)
        self.sensor_usual, self.ceiling = sensor_baselines(self.lake, window)
        self.baseline_day = day
        weekend = day.weekday() >= 5
        if sum(kinds.values()) < MIN_HISTORY_DAYS:
            self.announce(f"watch: {sum(kinds.values())} day(s) of pings before {day}; crowd surges need "
                          f"{MIN_HISTORY_DAYS - sum(kinds.values())} more day(s) of history (sensors are still watched)")
        elif kinds[weekend] < MIN_KIND_DAYS:
            kind = "weekend days" if weekend else "weekdays"
            self.announce(f"watch: {day} is one of the {kind}, and the last {self.config.history_days} days hold {kinds[weekend]} of "
                          f"them; crowd surges and traffic drops on {kind} need {MIN_KIND_DAYS - kinds[weekend]} more of their "
                          "history (sensor faults are still watched)")

    # -- crowd surges -----------------------------------------------------------------------
    def _surges(self, at: dt.datetime) -> None:
        start = at - WINDOW
        counts = (self.hits.filter(pl.col("ts").is_between(start, at, closed="left"))
                  .group_by("place_id").agg(pl.col("device_id").n_unique().alias("devices")))
        # the usual of the busier of the two quarter-hours the window overlaps: a crowd that leaves every day at 12:30 is
        # no surge in the window 12:25-12:40
        slots = {(t.hour * 4 + t.minute // 15) for t in (start, at - dt.timedelta(microseconds=1))}
        usual = (self.place_usual.filter(pl.col("slot").is_in(list(slots)) & (pl.col("weekend") == (start.weekday() >= 5)))
                 .sort("usual").group_by("place_id").last())
        scored = counts.join(usual, on="place_id").with_columns(count_z(extra=1.4826 * pl.col("mad")).alias("z"),
                                                                (pl.col("devices") / pl.col("usual").clip(1.0)).alias("ratio"))
        flagged = scored.filter((pl.col("devices") >= self.k) & (pl.col("ratio") >= self.config.surge_ratio)
                                & (pl.col("z") >= self.config.surge_z))
        for row in _innermost(self.finder, flagged).iter_rows(named=True):
            severity, evidence = _surge_judgement(row, start, self.k)
            self.episodes.flag(SURGE, row["place_id"], place_id=row["place_id"], start=start, end=at, severity=severity,
                               evidence=evidence)

    # -- sensors ----------------------------------------------------------------------------
    def _take_readings(self, readings: pl.DataFrame, *, warm_up: bool = False) -> None:
        if readings.is_empty():
            return
        ordered = readings.unique(subset=["sensor_id", "ts", "metric"]).sort("ts")
        with_usual = ordered.with_columns(*slot_of("ts"))
        if self.sensor_usual is not None:
            with_usual = (with_usual.join(self.sensor_usual, on=["sensor_id", "metric", "slot", "weekend"], how="left")
                          .join(self.ceiling, on="metric", how="left"))
        for row in with_usual.iter_rows(named=True):
            self._reading(row, warm_up=warm_up)

    def _reading(self, row: dict, *, warm_up: bool) -> None:
        state = self.sensor_state.setdefault((row["sensor_id"], row["metric"]), SensorState())
        value, ts = row["value"], row["ts"]
        if state.last_ts is not None and ts <= state.last_ts:  # seen already (a snapshot and a file both held it) or late
            return
        if value == state.last_value:
            state.run += 1
        else:
            state.run, state.run_start = 1, ts
        state.last_value, state.last_ts = value, ts
        if warm_up:
            return
        sensor, step = row["sensor_id"], dt.timedelta(minutes=15)
        ceiling = row.get("ceiling")
        fault, since = None, ts
        if value < 0 or (ceiling is not None and value > ceiling):
            beyond = f"is impossible (beyond {ceiling:g})" if ceiling is not None else "< 0"
            fault = f"{row['metric']} {value:g} {beyond}"
        elif state.run >= self.config.flat_readings and not _quiet_zero(row):
            fault, since = f"{row['metric']} flat at {value:g} for {state.run} readings", state.run_start
        if fault:
            self.episodes.flag(FAULT, sensor, place_id=self.sensor_place.get(sensor), sensors={sensor}, severity="medium",
                               start=since, end=ts + step, evidence=fault)
            state.low = 0
            return
        self._traffic(row, state)

    def _traffic(self, row: dict, state: SensorState) -> None:
        sensor, usual, mad = row["sensor_id"], row.get("usual"), row.get("mad")
        if sensor not in self.traffic or usual is None or usual <= 0:
            return
        spread = max(1.4826 * (mad or 0.0), 0.05 * usual, 1.0)
        z = (row["value"] - usual) / spread
        if row["value"] < self.config.drop_ratio * usual and z <= -self.config.drop_z:
            state.low += 1
            state.low_start = state.low_start if state.low > 1 else row["ts"]
        else:
            state.low = 0
            return
        if state.low >= 2:
            where = self.sensor_place.get(sensor) or sensor
            ratio = row["value"] / usual
            self.episodes.flag(DROP, where, place_id=self.sensor_place.get(sensor), sensors={sensor}, start=state.low_start,
                               end=row["ts"] + dt.timedelta(minutes=15), severity=drop_severity(ratio),
                               evidence=f"{sensor} {row['metric']} at {ratio:.0%} of the usual {usual:.0f} for the hour")

    def _silences(self, at: dt.datetime) -> None:
        """A sensor without a reading for an hour, while others report (the feed itself is alive)."""
        alive = max((s.last_ts for s in self.sensor_state.values() if s.last_ts), default=None)
        if alive is None or at - alive > WINDOW * 2:
            return
        for (sensor, metric), state in self.sensor_state.items():
            if state.last_ts is not None and at - state.last_ts > SILENCE + WINDOW:
                self.episodes.flag(FAULT, sensor, place_id=self.sensor_place.get(sensor), sensors={sensor}, severity="medium",
                                   start=state.last_ts + WINDOW, end=at, evidence=f"{metric} silent since {state.last_ts:%H:%M} UTC")

    # -- saving ----------------------------------------------------------------------------
    def _save(self) -> int:
        now = dt.datetime.now(UTC)
        rows = self.episodes.take_changed(now)
        released = [row for row in rows if row["kind"] != SURGE] + self.released.take_changed(now)
        if released:  # first, stamped with its own second: nothing in the public log times the steward's commit
            stamp = dt.datetime.now(UTC).replace(microsecond=0)
            self.lake.upsert("alerts_released", pl.DataFrame([{**row, "updated_at": stamp} for row in released], schema=_ALERT_SCHEMA))
        if rows:
            self.lake.upsert("alerts", pl.DataFrame(rows, schema=_ALERT_SCHEMA), metadata={"citylake.watch": self.checkpoint.as_json()})
            self.unpublished += rows
        write_private(self.lake.steward_dir / CHECKPOINT, self.checkpoint.as_json())
        self._publish()
        self.raised += len(rows)
        return len(rows)

    def _publish(self) -> None:
        if self.publish is None:
            self.unpublished = []
            return
        while self.unpublished:
            self.publish(self.unpublished[0])  # raises when the broker is away: what is left goes out at the next poll
            self.unpublished.pop(0)

    def republish_recent(self, since: dt.timedelta = dt.timedelta(days=1)) -> int:
        """Hand every open alert and every alert updated within ``since`` to ``publish`` again (after a restart, one the
        last watcher committed may not have gone out; a retained message per alert id makes the repeat harmless)."""
        recent = scan(self.lake, "alerts").filter((pl.col("status") == "open") | (pl.col("updated_at") >= dt.datetime.now(UTC) - since))
        self.unpublished = recent.collect().sort("updated_at").to_dicts() + self.unpublished
        self._publish()
        return len(self.unpublished)

    def run(self, *, max_seconds: float | None = None, stop: threading.Event | None = None, on_poll=None) -> int:
        """Poll every ``poll_seconds`` until ``stop`` is set or ``max_seconds`` have passed; returns the alert rows written.
        Holds the lake's watcher lock meanwhile: a second watcher is refused."""
        with one_watcher(self.lake):
            return self._run(max_seconds=max_seconds, stop=stop or threading.Event(), on_poll=on_poll)

    def _run(self, *, max_seconds: float | None, stop: threading.Event, on_poll) -> int:
        started = time.monotonic()
        while not stop.is_set():
            try:
                changed = self.poll()
            except OSError as err:  # a broker away, a lake briefly unwritable: say so, keep state, try again
                self.announce(f"watch: {err}; retrying in {self.config.poll_seconds:g}s")
                changed = 0
            if on_poll:
                on_poll(self, changed)
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            stop.wait(self.config.poll_seconds)
        return self.raised


_ALERT_SCHEMA = {"alert_id": pl.String, "kind": pl.String, "place_id": pl.String, "sensor_ids": pl.String,
                 "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC"), "status": pl.String, "severity": pl.String,
                 "evidence": pl.String, "revision": pl.Int64, "updated_at": pl.Datetime("us", "UTC")}


def _surge_judgement(row: dict, start: dt.datetime, k: int) -> tuple[str, str]:
    """Severity and evidence of a surge in the window from ``start`` (``scoring.surge_judgement``: bands of the usual, only
    where it is at least k)."""
    quarter = start - dt.timedelta(minutes=start.minute % 15)
    when = f"{'weekend' if start.weekday() >= 5 else 'weekday'} {quarter:%H:%M} UTC"
    return surge_judgement(ratio=row["ratio"], z=row["z"], usual=row["usual"], k=k, counted="devices in 15 minutes", when=when,
                           observed=row["devices"])


def _innermost(finder: PlaceFinder, flagged: pl.DataFrame) -> pl.DataFrame:
    """Drop a flagged place that holds another flagged place: the crowd is where the smaller place is."""
    if flagged.height < 2:
        return flagged
    shapes = finder.shapes(flagged["place_id"].to_list())
    outer = {a for a in shapes for b in shapes if a != b and shapes[a].area > shapes[b].area
             and shapes[a].contains(shapes[b].representative_point())}
    return flagged.filter(~pl.col("place_id").is_in(list(outer)))


def _quiet_zero(row: dict) -> bool:
    """A run of zeros where zero is within the usual (a counter at night) is no flat line."""
    usual, mad = row.get("usual"), row.get("mad") or 0.0
    return row["value"] == 0 and (usual is None or usual - 4 * max(1.4826 * mad, 1.0) <= 0)


def _floor_quarter(at: dt.datetime) -> dt.datetime:
    return at - dt.timedelta(minutes=at.minute % 15, seconds=at.second, microseconds=at.microsecond)


def _floor_step(at: dt.datetime) -> dt.datetime:
    return at - dt.timedelta(minutes=at.minute % 5, seconds=at.second, microseconds=at.microsecond)


def _latest_ts(lake: Lake) -> dt.datetime | None:
    """Event time in the lake: the newest timestamp of the ``WATERMARK_SUPPORT``-th most recent device or sensor, from the
    last day's partitions (one device's clock cannot set where a first watcher starts)."""
    newest = []
    for table, who in (("pings", "device_id"), ("readings", "sensor_id")):
        days = lake.rows_per_partition(table, "date")
        if days:
            last = dt.date.fromisoformat(max(days))
            newest += (scan(lake, table).filter(pl.col("date") >= last - dt.timedelta(days=1)).group_by(who)
                       .agg(pl.col("ts").max()).collect()["ts"].to_list())
    return sorted(newest)[-WATERMARK_SUPPORT] if len(newest) >= WATERMARK_SUPPORT else max(newest, default=None)


def _rows_since(lake: Lake, table: str, since: dt.datetime, columns: list[str]) -> pl.DataFrame:
    return (scan(lake, table).filter((pl.col("date") >= since.date()) & (pl.col("ts") >= since)).select(columns).collect())


def _read_or_snapshot(lake: Lake, table: str, added, columns: list[str], since: dt.datetime | None) -> pl.DataFrame | None:
    """The added files' rows; when a vacuum removed one first (a watcher far behind), the snapshot's rows since ``since``."""
    try:
        return read_added(added, columns)
    except FileNotFoundError:
        return None if since is None else _rows_since(lake, table, since, columns)


def _read(path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@contextmanager
def one_watcher(lake: Lake):
    """Hold the lake's watcher lock while watching: a second watcher would ask the analysts' crowd questions again on
    the same ledger charge. The lock goes with the process, SIGKILL included."""
    handle = os.open(lake.steward_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise Refused("another `citylake watch` is running on this lake; stop it first (one watcher per lake)") from None
    try:
        yield
    finally:
        os.close(handle)

"""Releases: people data for everyone but the steward, with differential privacy.

Each day of the lake is released on fixed public partitions — every polygonal place × hour, every cell of the city's
extent (at the policy's release resolution) × hour, every ordered pair of districts — so which rows exist says nothing
about anyone. For each table, a device's contribution to the day is bounded first (at most ``max_place_hours`` place-
hours, ``max_cell_hours`` cell-hours — its likeliest cell each hour —, ``max_trips`` district pairs travelled), then
OpenDP's Laplace or Gaussian noise calibrated to that bound is added to every partition's count, and only noisy counts
of at least the release's threshold are written: the policy's k floor, or ``threshold_sigmas`` noise deviations when that
is higher, so that an empty partition's noise rarely shows as a row. A release replaces the previous one of its days for readers: the old
rows are deleted and their files removed at once, so no time travel reaches them. The budget ledger records the spend
before anything is written (``privacy.ledger``).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
import shapely

from citylake.h3_index import latlng_to_cells, polygon_to_cells
from citylake.h3_index.polygons import is_polygonal
from citylake.lake import Lake, registry
from citylake.privacy import Policy
from citylake.privacy.ledger import check_budget, record
from citylake.privacy.noise import Noise, calibrate, dp_quantile
from citylake.queries import Filters, engine, stays, trips
from citylake.queries.errors import BadFilter
from citylake.queries.windows import pings_per_day

OD_ZONES = "district"
# How a release's epsilon and delta are shared between its tables (hourly footfall per place is what planners read most).
SHARES = {"footfall_hourly": 0.6, "footfall_cells_hourly": 0.25, "od_daily": 0.15}
DAY = dt.timedelta(days=1)
BOUND_QUANTILE = 0.95  # a day's bound keeps every place-hour of 95% of its devices; the other 5% lose their extra hours
SHARE_PINGS = 500_000  # a day of more pings is released a share of its devices at a time (``device_shares``): a release
# holds a few hundred bytes per ping of the day it reads, so a share bounds a process's memory however dense the days grow
# (measured, one day of 3.3M pings: 1.29 GB read whole, 0.66 GB in shares of 1M, 0.61 GB of 500k, 0.53 GB of 250k; a
# day of 0.33M: 0.45-0.53 GB. The place-hours per device held across shares for the private bound are ~3% of it)
Share = tuple[int, int] | None  # (r, of): the devices whose pseudonym modulo ``of`` is r; None: every device


@dataclass(frozen=True)
class Partitions:
    """One table's public partitions for a day, the bounded exact count of each, and how a device may change them."""
    keys: pl.DataFrame  # one row per partition
    counts: np.ndarray
    bounds: dict
    noise: Noise | None = None  # when the day's bound was chosen from its data, the noise for that bound


def publish(lake: Lake, /, *, policy: Policy, epsilon: float, delta: float, days: list[dt.date] | None = None,
            engine_name: str = "polars", announce: Callable[[str], None] = lambda _: None, client=None) -> dict[str, int]:
    """Release ``days`` (default: every day with pings) spending ``epsilon``/``delta`` per day; rows written per table.
    With a Dask ``client`` each day's noisy rows are made by a task of its own (``release_day``: the day's pings on one
    worker), and written here as they come; the budget is checked and spent here, before any task starts."""
    days = sorted(days if days is not None else (dt.date.fromisoformat(d) for d in lake.rows_per_partition("pings", "date")))
    if not days:
        raise BadFilter("days", [], "no pings to release; ingest pings first")
    budget = {table: (epsilon * share, delta * share) for table, share in SHARES.items()}
    for table in SHARES:
        _noise(table, policy, *budget[table])  # checks epsilon and delta before anything
    release_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    with lake.budget_lock():  # the check and the spending at once: concurrent releases cannot both pass
        check_budget(lake, policy, days, epsilon=epsilon, delta=delta)
        record(lake, release_id, {(day, table): budget[table] for day in days for table in SHARES})
    written = dict.fromkeys(SHARES, 0)
    for day, (released, described) in _released_days(lake, days, policy, epsilon, delta, engine_name, release_id, client):
        announce(f"releasing {day}…")
        for table, kept in released.items():
            written[table] += _replace_day(lake, table, day, kept, release_id)
        lake.replace_where("releases", pl.DataFrame(described), predicate=f"day = '{day.isoformat()}'")
    for table in (*SHARES, "releases"):
        lake.forget_superseded(table)
    return written


def _released_days(lake: Lake, days: list[dt.date], policy: Policy, epsilon: float, delta: float, engine_name: str,
                   release_id: str, client):
    """(day, its release) for each day in order: made here, or by a task per day on ``client``'s cluster."""
    public = _public_partitions(lake, policy)  # once: every day is released on the same partitions
    if client is None:
        runner = engine(engine_name, lake)
        for day in days:
            yield day, release_day(lake, day, policy=policy, epsilon=epsilon, delta=delta, engine_name=engine_name,
                                   release_id=release_id, runner=runner, public=public)
        return
    tasks = [client.submit(release_day_task, lake.uri, lake.storage, day, policy=policy, epsilon=epsilon, delta=delta,
                           engine_name=engine_name, release_id=release_id, public=public, pure=False) for day in days]
    for day, task in zip(days, tasks):
        yield day, task.result()


def release_day_task(lake_uri: str, storage, day: dt.date, /, **options) -> tuple[dict[str, pl.DataFrame], list[dict]]:
    """A Dask task: one day's release, the lake opened from its URI and storage settings."""
    return release_day(Lake.open(lake_uri, storage=storage), day, **options)


def release_day(lake: Lake, day: dt.date, /, *, policy: Policy, epsilon: float, delta: float, engine_name: str, release_id: str,
                runner=None, public: Public | None = None) -> tuple[dict[str, pl.DataFrame], list[dict]]:
    """One day's noisy rows per table (only those at or above the threshold) and their ``releases`` descriptions. The
    budget must be spent already (``publish``): this only computes."""
    runner = runner or engine(engine_name, lake)
    public = public or _public_partitions(lake, policy)
    budget = {table: (epsilon * share, delta * share) for table, share in SHARES.items()}
    shares = device_shares(lake, day)
    rows = {"footfall_hourly": _place_hours([presence_on(runner, day, share) for share in shares], day, policy, public,
                                            budget["footfall_hourly"]),
            "footfall_cells_hourly": _cell_hours(runner, day, policy, public, shares),
            "od_daily": _district_pairs(lake, day, policy, public, engine_name, shares)}
    released, described = {}, []
    for table, partitions in rows.items():
        noise = partitions.noise or _noise(table, policy, *budget[table])
        threshold = max(policy.k_floor, int(np.ceil(policy.threshold_sigmas * noise.deviation)))
        released[table] = _noisy_rows(partitions, noise, threshold)
        described.append(_description(release_id, day, table, noise, partitions.bounds, threshold))
    return released, described


def _noise(table: str, policy: Policy, epsilon: float, delta: float) -> Noise:
    bound = {"footfall_hourly": policy.max_place_hours, "footfall_cells_hourly": policy.max_cell_hours, "od_daily": policy.max_trips}[table]
    return calibrate(epsilon=epsilon, delta=delta, l1=bound, l2=float(np.sqrt(bound)))  # each contribution adds 1 to one partition


@dataclass(frozen=True)
class Public:
    places: pl.DataFrame  # place_id, name, category of every polygonal place
    cells: np.ndarray  # every cell of the city's extent at the release resolution
    pairs: pl.DataFrame  # origin, destination: every ordered pair of districts


def _public_partitions(lake: Lake, policy: Policy) -> Public:
    """What is released, from the public registry alone: never from where people were."""
    places = registry.places(lake)
    outlines = registry.shapes(places)
    polygonal = places.filter(pl.Series(is_polygonal(outlines))).select("place_id", "name", "category")
    extent = shapely.box(*shapely.total_bounds(outlines)) if places.height else None
    cells = polygon_to_cells(extent, policy.release_cell_res)[0] if extent is not None else np.empty(0, np.int64)
    districts = polygonal.filter(pl.col("category") == OD_ZONES).select("place_id")
    pairs = (districts.rename({"place_id": "origin"}).join(districts.rename({"place_id": "destination"}), how="cross")
             .filter(pl.col("origin") != pl.col("destination")))
    return Public(polygonal, np.sort(cells), pairs)


def _utc_us(times: pl.Expr) -> pl.Expr:
    return times.dt.cast_time_unit("us").dt.convert_time_zone("UTC")


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc)


def _hours(day: dt.date) -> pl.Series:
    start = _day_start(day)
    return pl.datetime_range(start, start + DAY, "1h", closed="left", eager=True, time_unit="us", time_zone="UTC").alias("bucket")


def _window(day: dt.date, categories: tuple[str, ...] = (), devices: Share = None) -> Filters:
    return Filters(start=_day_start(day), end=_day_start(day) + DAY, categories=categories, devices=devices)


def device_shares(lake: Lake, day: dt.date) -> list[Share]:
    """The shares of its devices a day is released in, each of about ``SHARE_PINGS`` pings at most (counted from the
    lake's log): a device's bounded contribution lies wholly in its share, so the shares' counts add up to the day's."""
    pings = pings_per_day(lake, _window(day)).get(day, 0)
    of = -(-pings // SHARE_PINGS)
    return [(r, of) for r in range(of)] if of > 1 else [None]


def presence_on(runner, day: dt.date, share: Share = None) -> pl.DataFrame:
    """device_id, place_id, bucket: the day's place-hours of every device (of ``share``; what the footfall release counts)."""
    return runner.presence(filters=_window(day, devices=share)).with_columns(_utc_us(pl.col("bucket")))


def _bounded(rows: pl.DataFrame, most: int, key: list[str]) -> pl.DataFrame:
    """At most ``most`` rows per device, chosen by a keyed hash fresh for every release (no device is favoured)."""
    salt = secrets.randbits(62)
    ranked = rows.with_columns(pl.struct(key).hash(salt).alias("_draw"))
    return ranked.filter(pl.col("_draw").rank("ordinal").over("device_id") <= most).drop("_draw")


def _bounded_counts(grid: pl.DataFrame, shares: Iterable[pl.DataFrame], most: int, on: list[str]) -> np.ndarray:
    """Devices per partition of ``grid`` (by the columns ``on``) over the rows of each share of devices, each device's
    bounded to ``most`` rows first (a device lies in one share, so the shares' counts add up)."""
    return sum(_counts_on(grid, _bounded(rows, most, ["device_id", *on]), on) for rows in shares)


def _counts_on(grid: pl.DataFrame, found: pl.DataFrame, on: list[str]) -> np.ndarray:
    counts = found.group_by(on).agg(pl.len().alias("n"))
    return grid.join(counts, on=on, how="left", maintain_order="left")["n"].fill_null(0).to_numpy()


def _place_hours(presences: list[pl.DataFrame], day: dt.date, policy: Policy, public: Public, budget: tuple[float, float]) -> Partitions:
    """Devices per place-hour of the day's presence (one frame per share of devices), each device-day bounded; the bound
    is the policy's cap, or (``bound_share`` > 0) the day's 95th percentile of place-hours per device, chosen privately
    with a share of the table's epsilon."""
    epsilon, delta = budget
    bound, noise, how = policy.max_place_hours, None, "the policy's bound"
    if policy.bound_share > 0:
        per_device = np.concatenate([presence.group_by("device_id").len()["len"].to_numpy() for presence in presences])
        bound = dp_quantile(per_device, candidates=list(range(1, policy.max_place_hours + 1)), alpha=BOUND_QUANTILE,
                            epsilon=epsilon * policy.bound_share)
        noise = calibrate(epsilon=epsilon * (1 - policy.bound_share), delta=delta, l1=bound, l2=float(np.sqrt(bound)))
        how = f"the day's {BOUND_QUANTILE:.0%} quantile, chosen privately (epsilon {epsilon * policy.bound_share:.3g})"
    grid = public.places.join(_hours(day).to_frame(), how="cross")
    return Partitions(grid, _bounded_counts(grid, presences, bound, ["place_id", "bucket"]),
                      {"per_device_day": f"{bound} place-hours ({how}; at most {policy.max_place_hours})"}, noise)


def _cell_hours(runner, day: dt.date, policy: Policy, public: Public, shares: list[Share]) -> Partitions:
    res = policy.release_cell_res
    grid = pl.DataFrame({"h3_cell": public.cells}, schema={"h3_cell": pl.Int64}).join(_hours(day).to_frame(), how="cross")
    likeliest = (_likeliest_cells(runner.pings(filters=_window(day, devices=share)), res) for share in shares)
    return Partitions(grid, _bounded_counts(grid, likeliest, policy.max_cell_hours, ["h3_cell", "bucket"]),
                      {"per_device_day": f"{policy.max_cell_hours} cell-hours (its likeliest cell each hour)", "cell_resolution": res})


def _likeliest_cells(pings: pl.DataFrame, res: int) -> pl.DataFrame:
    """device_id, bucket, h3_cell: each device's cell at ``res`` with most of its ``pings`` in each hour (the lower cell
    on a tie)."""
    cells = latlng_to_cells(pings["lat"].to_numpy(), pings["lon"].to_numpy(), res) if pings.height else np.empty(0, np.int64)
    per_hour = (pings.select("device_id", _utc_us(pl.col("ts").dt.truncate("1h")).alias("bucket"))
                .with_columns(pl.Series("h3_cell", cells, pl.Int64))
                .group_by("device_id", "bucket", "h3_cell").agg(pl.len().alias("pings")))
    likeliest = per_hour.sort("pings", "h3_cell", descending=[True, False]).unique(["device_id", "bucket"], keep="first")
    return likeliest.drop("pings")


def _district_pairs(lake: Lake, day: dt.date, policy: Policy, public: Public, engine_name: str, shares: list[Share]) -> Partitions:
    grid = public.pairs.with_columns(pl.lit(_day_start(day)).dt.cast_time_unit("us").alias("bucket"))
    travelled = (_pairs_travelled(lake, day, share, engine_name) for share in shares)
    bounds = {"per_device_day": f"{policy.max_trips} district pairs travelled"}
    return Partitions(grid, _bounded_counts(grid, travelled, policy.max_trips, ["origin", "destination"]), bounds)


def _pairs_travelled(lake: Lake, day: dt.date, share: Share, engine_name: str) -> pl.DataFrame:
    """device_id, origin, destination: each pair of districts a device (of ``share``) travelled between that day."""
    zones = stays(lake, filters=_window(day, categories=(OD_ZONES,), devices=share), engine_name=engine_name)
    return trips(zones).select("device_id", "origin", "destination").unique()


def _noisy_rows(partitions: Partitions, noise: Noise, threshold: int) -> pl.DataFrame:
    """The partitions whose noisy count reaches ``threshold``, with that count (the exact one never leaves)."""
    noisy = noise.add(partitions.counts)
    column = "devices"
    return partitions.keys.with_columns(pl.Series(column, noisy, pl.Int64)).filter(pl.col(column) >= threshold)


def _replace_day(lake: Lake, table: str, day: dt.date, rows: pl.DataFrame, release_id: str) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    stamped = rows.with_columns(pl.lit(release_id).alias("release_id"), pl.lit(now).dt.cast_time_unit("us").alias("computed_at"))
    start = _day_start(day)
    lake.replace_where(table, stamped, predicate=f"bucket >= '{start.isoformat()}' AND bucket < '{(start + DAY).isoformat()}'")
    return stamped.height


def _description(release_id: str, day: dt.date, table: str, noise: Noise, bounds: dict, threshold: int) -> dict:
    return {"release_id": release_id, "day": day, "table_name": table, "mechanism": noise.mechanism, "epsilon": noise.epsilon,
            "delta": noise.delta, "noise_scale": noise.scale, "bounds": json.dumps(bounds), "threshold": threshold,
            "computed_at": dt.datetime.now(dt.timezone.utc)}


def exact_aggregates(lake: Lake, /, *, k: int, engine_name: str = "polars") -> dict[str, pl.DataFrame]:
    """The steward's exact, k-anonymous counterparts of the released tables (footfall per place-hour and per cell-hour
    at resolution 9, flows between districts per day): what ``citylake publish`` wrote for analysts before releases
    had noise. Written nowhere; for the steward, and for measuring what a release costs and how close it stays."""
    from citylake.queries import footfalls, od

    by_place, by_cell = (pl.from_arrow(result.table) for result in footfalls(lake, views=[("place", None), ("cell", 9)], freq="1h", k=k,
                                                                                  engine_name=engine_name))
    flows = pl.from_arrow(od(stays(lake, filters=Filters(categories=(OD_ZONES,)), engine_name=engine_name), freq="1d", k=k).table)
    return {"footfall_hourly": by_place, "footfall_cells_hourly": by_cell, "od_daily": flows}

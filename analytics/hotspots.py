"""Getis-Ord Gi* hotspots on H3 cells, and their trend over time (emerging, persistent, fading).

Neighbours are the cell's grid disk (itself included, binary weights). The study area is every
cell that holds data or neighbours a cell that does (empty cells count as zero), so a busy cell
among quiet ones stands out. Gi* is a z-score; p-values are two-sided from the normal.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from citylake.h3_index.cells import grid_disk_flat
from citylake.h3_index.threads import thread_map

HOT_Z = 2.58  # p < 0.01 (two-sided)
_ERFC = np.frompyfunc(math.erfc, 1, 1)  # exact, element-wise (NumPy has no erfc)


def getis_ord(values: pl.DataFrame, /, *, value: str, ring: int = 1) -> pl.DataFrame:
    """h3_cell, value, z, p, hot/cold for every cell of the study area (``values``: h3_cell and ``value``)."""
    if values.is_empty():
        return pl.DataFrame(schema={"h3_cell": pl.Int64, value: pl.Float64, "z": pl.Float64, "p": pl.Float64, "class": pl.String})
    cells = values["h3_cell"].to_numpy()
    disk, _ = grid_disk_flat(cells, ring)
    area = np.unique(np.concatenate([cells, disk]))
    x = np.zeros(area.size)
    x[np.searchsorted(area, cells)] = values[value].cast(pl.Float64).to_numpy()
    n = area.size
    neighbours, owner = grid_disk_flat(area, ring)
    at = np.searchsorted(area, neighbours)
    inside = (at < n) & (area[np.minimum(at, n - 1)] == neighbours)  # neighbours beyond the area count as outside (weight 0)
    local = np.bincount(owner[inside], weights=x[at[inside]], minlength=n)
    weights = np.bincount(owner[inside], minlength=n).astype(float)
    mean, sd = x.mean(), x.std()
    denominator = sd * np.sqrt(np.maximum(n * weights - weights**2, 1e-12) / max(n - 1, 1))
    z = np.where(denominator > 0, (local - mean * weights) / np.where(denominator > 0, denominator, 1), 0.0)
    p = _ERFC(np.abs(z) / math.sqrt(2)).astype(float)
    kind = np.where(z >= HOT_Z, "hot", np.where(z <= -HOT_Z, "cold", "not significant"))
    return pl.DataFrame({"h3_cell": area, value: x, "z": z, "p": p, "class": kind}).sort("z", descending=True)


def emerging(per_bucket: pl.DataFrame, /, *, value: str, ring: int = 1) -> pl.DataFrame:
    """Space-time hotspots: Gi* per bucket (``per_bucket``: h3_cell, bucket, value), then per cell its pattern:
    persistent (hot in ≥ 90% of buckets), emerging (hot in the last bucket, rarely before), fading (hot before,
    not in the last quarter), intermittent (hot sometimes), with the trend of its z-scores (Mann-Kendall S)."""
    def score(bucket_rows: tuple[tuple[object], pl.DataFrame]) -> pl.DataFrame:
        (bucket,), rows = bucket_rows
        scored = getis_ord(rows.select("h3_cell", value), value=value, ring=ring)
        return scored.select("h3_cell", "z").with_columns(pl.lit(bucket).alias("bucket"))

    frames = thread_map(score, list(per_bucket.partition_by("bucket", as_dict=True, maintain_order=True).items()))
    if not frames:
        return pl.DataFrame(schema={"h3_cell": pl.Int64, "pattern": pl.String, "hot_share": pl.Float64, "trend": pl.Float64})
    zs = pl.concat(frames).sort("h3_cell", "bucket")
    buckets = zs["bucket"].unique().sort()
    last, recent = buckets[-1], buckets[int(len(buckets) * 0.75):]
    per_cell = zs.group_by("h3_cell").agg(
        (pl.col("z") >= HOT_Z).mean().alias("hot_share"),
        ((pl.col("z") >= HOT_Z) & (pl.col("bucket") == last)).any().alias("hot_last"),
        ((pl.col("z") >= HOT_Z) & pl.col("bucket").is_in(recent.implode())).any().alias("hot_recently"),
    ).join(_mann_kendall_s(zs), on="h3_cell")
    pattern = (pl.when(pl.col("hot_share") >= 0.9).then(pl.lit("persistent"))
               .when(pl.col("hot_last") & (pl.col("hot_share") <= 0.25)).then(pl.lit("emerging"))
               .when((pl.col("hot_share") > 0) & ~pl.col("hot_recently")).then(pl.lit("fading"))
               .when(pl.col("hot_share") > 0).then(pl.lit("intermittent"))
               .otherwise(pl.lit("never hot")))
    per_cell = per_cell.with_columns(pattern.alias("pattern")).select("h3_cell", "pattern", "hot_share", "trend")
    return per_cell.sort("hot_share", descending=True)


def _mann_kendall_s(zs: pl.DataFrame) -> pl.DataFrame:
    """Per cell, Mann-Kendall S normalised to [-1, 1]: over the pairs of buckets in which the cell has a z-score,
    the share of later-minus-earlier pairs going up minus going down (0 with fewer than two buckets)."""
    cell = zs["h3_cell"].rank("dense").cast(pl.Int64).to_numpy() - 1
    bucket = zs["bucket"].rank("dense").cast(pl.Int64).to_numpy() - 1
    z = np.full((cell.max() + 1, bucket.max() + 1), np.nan)  # cells x buckets, NaN where a cell had no score
    z[cell, bucket] = zs["z"].to_numpy()
    ups_minus_downs, pairs = np.zeros(z.shape[0]), np.zeros(z.shape[0])
    for lag in range(1, z.shape[1]):  # every (earlier, later) pair once, one lag at a time: memory stays cells x buckets
        later_minus_earlier = z[:, lag:] - z[:, :-lag]
        both = ~np.isnan(later_minus_earlier)
        ups_minus_downs += np.sign(np.where(both, later_minus_earlier, 0)).sum(axis=1)
        pairs += both.sum(axis=1)
    cells = np.empty(z.shape[0], dtype=np.int64)
    cells[cell] = zs["h3_cell"].to_numpy()
    return pl.DataFrame({"h3_cell": cells, "trend": np.where(pairs > 0, ups_minus_downs / np.maximum(pairs, 1), 0.0)})

"""The ingestion ledger reconciled with the tables: every committed chunk has its ``batches`` row and its quarantine
rows, every place has its cells, and the counts agree.

A chunk lands in three commits, in this order: its rejected lines (``quarantine``), its rows (the data table; the
commit's metadata carries the chunk's batch id and every count), its ``batches`` row. Readers of the data see the
chunk whole or not at all. A crash or a full disk between the commits leaves either quarantine rows of a chunk that
never landed (a rerun of the file lands it) or a data commit without its ``batches`` row, which ``repair`` writes
from the commit's metadata; every ingestion run repairs its table before it starts. ``check`` reports what is left.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import polars as pl

from citylake.lake import Lake, scan

UTC = dt.timezone.utc
LEDGERED = ("pings", "readings", "places", "sensors")  # the tables ingestion writes through batches
LINK = ["version", "batch_id"]  # a batches row names the commit that landed its chunk


@dataclass
class Drift:
    """What ``check`` found: one line per kind of disagreement, and what a repair would add."""

    lines: list[str] = field(default_factory=list)
    missing_batches: dict[str, pl.DataFrame] = field(default_factory=dict)  # table → batches rows to write

    @property
    def ok(self) -> bool:
        return not self.lines


def chunk_commits(lake: Lake, table: str) -> pl.DataFrame:
    """One row per ingestion chunk each commit of ``table`` landed, with the counts its metadata carries (a chunk
    committed alone names its batch id; a file's run that gathered several lists them in ``citylake.chunks``)."""
    rows = [row for c in lake.history(table) for row in _chunk_rows(table, c)]
    schema = {"batch_id": pl.String, "table_name": pl.String, "source": pl.String, "fingerprint": pl.String,
              "rows_in": pl.Int64, "rows_accepted": pl.Int64, "rows_rejected": pl.Int64, "rows_duplicate": pl.Int64,
              "version": pl.Int64, "started_at": pl.Datetime("us", "UTC"), "finished_at": pl.Datetime("us", "UTC")}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _chunk_rows(table: str, commit: dict) -> list[tuple]:
    """The chunks a commit landed: listed in ``citylake.chunks`` (a file's gathered run), or the one its own metadata
    describes (a chunk committed alone; a registry's MERGE counts inserted and replacing rows, both accepted)."""
    if "citylake.chunks" in commit:
        chunks = json.loads(commit["citylake.chunks"])
    elif "citylake.batch_id" in commit:
        metrics = commit.get("operationMetrics") or {}
        merged = metrics.get("num_target_rows_inserted", 0) + metrics.get("num_target_rows_updated", 0)
        chunks = [{"batch_id": commit["citylake.batch_id"], "rows_in": commit.get("citylake.rows_in", 0),
                   "inserted": commit.get("citylake.inserted", merged), "rejected": commit.get("citylake.rejected", 0),
                   "duplicates": commit.get("citylake.duplicates", 0), "started_at": commit.get("citylake.started_at")}]
    else:
        return []
    finished = dt.datetime.fromtimestamp(commit["timestamp"] / 1000, UTC)
    # a run of several files on a cluster names each chunk's file in its entry
    return [(c["batch_id"], table, c.get("source", commit.get("citylake.source", "")),
             c.get("fingerprint", commit.get("citylake.fingerprint", "")),
             int(c["rows_in"]), int(c["inserted"]), int(c["rejected"]), int(c["duplicates"]), int(commit["version"]),
             dt.datetime.fromisoformat(c["started_at"]) if c["started_at"] else finished, finished) for c in chunks]


def check(lake: Lake, tables: tuple[str, ...] = LEDGERED) -> Drift:
    """Compare the ledger (``batches``, ``quarantine``) with the tables' commits, and places with their cells."""
    drift = Drift()
    batches = pl.from_arrow(lake.table("batches").to_pyarrow_table())
    quarantined = pl.from_arrow(lake.table("quarantine").to_pyarrow_table(columns=["batch_id", "table_name"]))
    for table in tables:
        _check_table(drift, table, chunk_commits(lake, table), batches.filter(pl.col("table_name") == table),
                     quarantined.filter(pl.col("table_name") == table))
    _check_covers(drift, lake)
    return drift


def _check_table(drift: Drift, table: str, commits: pl.DataFrame, batches: pl.DataFrame, quarantined: pl.DataFrame) -> None:
    missing = commits.join(batches.select(LINK), on=LINK, how="anti")
    if missing.height:
        drift.missing_batches[table] = missing
        drift.lines.append(f"{table}: {missing.height:,} committed chunk(s) ({missing['rows_accepted'].sum():,} rows) have no "
                           "batches row; `citylake maintain check --repair` (or any ingest into the table) writes them")
    recorded = batches.join(commits.select(*LINK, accepted="rows_accepted", rejected="rows_rejected"), on=LINK)
    wrong = recorded.filter((pl.col("rows_accepted") != pl.col("accepted")) | (pl.col("rows_rejected") != pl.col("rejected")))
    if wrong.height:
        drift.lines.append(f"{table}: {wrong.height:,} batches row(s) disagree with their commit's counts "
                           f"(versions {', '.join(map(str, wrong['version'].head(5)))})")
    stray = batches.join(commits.select(LINK), on=LINK, how="anti")
    if stray.height:
        drift.lines.append(f"{table}: {stray.height:,} batches row(s) name a version that landed no chunk "
                           f"(versions {', '.join(map(str, stray['version'].head(5)))})")
    _check_quarantine(drift, table, commits, quarantined)


def _check_quarantine(drift: Drift, table: str, commits: pl.DataFrame, quarantined: pl.DataFrame) -> None:
    """Each chunk's rejected lines are quarantined once (a rerun's commit of the same chunk rejects them again but
    quarantines nothing new), before its rows commit."""
    held = quarantined.group_by("batch_id").len("held")
    expected = commits.group_by("batch_id").agg(pl.col("rows_rejected").max().alias("rejected"), pl.col("source").first())
    short = expected.join(held, on="batch_id", how="left").filter(pl.col("held").fill_null(0) < pl.col("rejected"))
    if short.height:
        drift.lines.append(f"{table}: {short.height:,} chunk(s) rejected more lines than quarantine holds; "
                           f"rerun {', '.join(sorted(set(short['source'].head(3))))}")
    orphans = held.join(expected, on="batch_id", how="anti")
    if orphans.height:
        drift.lines.append(f"{table}: quarantine holds the rejected lines of {orphans.height:,} chunk(s) whose rows never "
                           "committed (a run stopped between the two); rerun the file to land them")


def _check_covers(drift: Drift, lake: Lake) -> None:
    places = pl.from_arrow(lake.table("places").to_pyarrow_table(columns=["place_id"]))
    covered = scan(lake, "place_cells").select("place_id").unique().collect()
    bare = places.join(covered, on="place_id", how="anti")
    if bare.height:
        drift.lines.append(f"places: {bare.height:,} place(s) have no cells in place_cells (e.g. {bare['place_id'][0]}); "
                           "ingest their file again")
    orphans = covered.join(places, on="place_id", how="anti")
    if orphans.height:  # no query counts them (every reader starts from places), but they are a run cut short
        drift.lines.append(f"place_cells: cells of {orphans.height:,} place id(s) not in places (e.g. {orphans['place_id'][0]}): "
                           "a places ingest stopped between its two commits; ingest that file again")


def repair(lake: Lake, table: str, *, drift: Drift | None = None) -> int:
    """Write the ``batches`` rows of committed chunks that lack one (from their commits' metadata); returns how many."""
    if drift is None:
        missing = chunk_commits(lake, table).join(_recorded(lake, table), on=LINK, how="anti")
    else:
        missing = drift.missing_batches.get(table, pl.DataFrame())
    if missing.height:
        lake.append_new("batches", missing)
    return missing.height


def _recorded(lake: Lake, table: str) -> pl.DataFrame:
    return (scan(lake, "batches").filter(pl.col("table_name") == table)
            .select(LINK).drop_nulls().collect())

"""One ingestion run: chunks of validated rows committed exactly once, bad rows quarantined,
one ``batches`` row per chunk, a progress bar and a one-line summary.

Exactly once, across crashes, reruns and other writers: every chunk is appended with ``Lake.append_new``,
which skips rows whose key the table already holds (under the table's writer lock), so rerunning a file (after a
crash, or after registering the sensors whose readings were quarantined) lands only what is missing, and two ingests
of overlapping files land each key once. A chunk's rejected lines are quarantined first, then its rows commit with
the batch id and every count in the Delta commit metadata, then its ``batches`` row; ``ingestion.ledger`` mends and
checks what a crash between those commits leaves, and every run mends its table before it starts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from citylake.ingestion import ledger
from citylake.ingestion.errors import UnreadableInput
from citylake.lake import Lake

UTC = dt.timezone.utc
T = TypeVar("T")


@dataclass
class Chunk:
    """A validated chunk: rows ready for the table, rejected rows (position, raw, reason)."""

    good: pa.Table | pl.DataFrame
    bad: pl.DataFrame
    rows_in: int
    bytes_done: int = 0
    prepared: bool = False  # good rows already conformed to the table (BatchWriter.prepare)


@dataclass
class IngestReport:
    table: str
    source: str
    rows_in: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    updated: int = 0  # of the accepted rows of a registry, those that replaced a row of the same key
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    touched: dict[str, set] = field(default_factory=dict, repr=False)  # partition values committed: what a merge may take

    def line(self) -> str:
        """The one-line summary printed after an ingest."""
        why = ""
        if self.reasons:
            top = ", ".join(f"{n:,} {r}" for r, n in self.reasons.most_common(3))
            more = len(self.reasons) - 3
            why = f" ({top}{f', +{more} more reasons' if more > 0 else ''})"
        rate = self.rows_in / self.seconds if self.seconds else 0
        notes = "".join(f"; {n}" for n in self.notes)
        replaced = f" ({self.updated:,} replacing rows of the same key)" if self.updated else ""
        return (
            f"{self.source} → {self.table}: {self.accepted:,} accepted{replaced}, {self.rejected:,} rejected{why}, "
            f"{self.duplicates:,} duplicates skipped; {self.seconds:.1f}s, {rate:,.0f} rows/s{notes}"
        )


def fingerprint(path: str | Path) -> str:
    """SHA-256 of the file's bytes: the same content is the same source, whatever its name."""
    return _digest_and_close(_open_source(path))


def fingerprint_soon(path: str | Path) -> Future[str]:
    """``fingerprint`` on a thread (hashlib releases the GIL), so hashing a large file overlaps reading its first
    chunk instead of holding up the start. A file that cannot be opened is refused now, not later."""
    source = _open_source(path)
    pool = ThreadPoolExecutor(max_workers=1)
    digest = pool.submit(lambda: _digest_and_close(source))
    pool.shutdown(wait=False)
    return digest


def _open_source(path: str | Path):
    try:
        return open(path, "rb")
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        raise UnreadableInput(str(path), err.strerror.lower() if err.strerror else "cannot be opened") from None


def _digest_and_close(source) -> str:
    with source:
        return hashlib.file_digest(source, "sha256").hexdigest()


STAGED_ABOVE_ROWS = 2_000_000  # a Parquet file of more rows is ingested by stage and settle (``ingestion.fanout``) in one
# process too: its memory is two tasks' rows however large the file, where a buffered run's grows with it (issue 18)
DEFAULT_BUFFER_MB = 1024  # checked rows a file's run holds before committing them (setting ingest.buffer_mb)


@dataclass
class Gathered:
    """A chunk whose rows wait in a run's buffer: what its ``batches`` row will need."""

    batch_id: str
    rows_in: int
    rejected: int
    offered: int
    started: dt.datetime


class BatchWriter:
    """Commits the chunks of one source into one table.

    A file's run (``one_run``) gathers its chunks' checked rows in memory, up to ``buffer_mb``, and commits them
    together: one file per partition per commit, so a month of pings lands in one file per partition rather than one
    per partition and chunk. Registries and live feeds commit each chunk as it comes."""

    def __init__(self, lake: Lake, table: str, source: str, fingerprint: str | Future[str], *, registry: bool = False,
                 one_run: bool = False, buffer_mb: int = DEFAULT_BUFFER_MB) -> None:
        self.lake, self.table, self.source, self._fingerprint = lake, table, source, fingerprint
        self.registry = registry  # registries (places, sensors) replace rows by key instead of skipping them
        # a file's chunks: remember this run's keys rather than read its earlier chunks back (a live feed, which runs
        # for days, checks each micro-batch against the table instead: its memory would grow without end)
        self.run = lake.run_keys(table) if one_run and not registry else None
        self.buffer_bytes = buffer_mb << 20
        self.gathered: list[tuple[Gathered, pl.DataFrame]] = []
        self.report = IngestReport(table, source)
        self.touched: dict[str, set] = {column: set() for column in lake.spec(table).partition_by}
        self._unrecorded: dict[str, tuple[tuple[Gathered, int, int], int]] = {}  # batch id → what _commit_rows landed

    @property
    def fingerprint(self) -> str:
        if isinstance(self._fingerprint, Future):  # still hashing on its thread (fingerprint_soon): wait for it here
            self._fingerprint = self._fingerprint.result()
        return self._fingerprint

    def commit(self, index: int, chunk: Chunk) -> None:
        """Quarantine the chunk's rejected lines, then commit its rows (or gather them, in a file's run).

        A live feed calls this again with the same ``index`` and chunk when a commit failed (a full disk, a lake that
        was briefly unwritable): the quarantine rows dedupe by key, rows that did not commit commit now, and rows that
        did (only their ``batches`` row failed) are not offered again; the report counts the chunk once."""
        started = dt.datetime.now(UTC)
        chunk = self.prepare(chunk)
        batch_id = f"{self.fingerprint[:16]}:{index}"  # the same file chunk has the same id in every run
        offered = chunk.good.num_rows if isinstance(chunk.good, pa.Table) else chunk.good.height
        if self.run is not None:
            self._quarantine(batch_id, chunk.bad)  # first: a chunk whose rows are visible always has its rejects recorded
            self._count_input(chunk)
            self._touch(chunk.good)
            self._gather(Gathered(batch_id, chunk.rows_in, chunk.bad.height, offered, started), pl.from_arrow(chunk.good))
            return
        landed = self._unrecorded.pop(batch_id, None)  # a retry of a chunk whose rows committed but whose batches row did not
        if landed is None:
            self._quarantine(batch_id, chunk.bad)  # as above
            landed = self._commit_rows(Gathered(batch_id, chunk.rows_in, chunk.bad.height, offered, started), chunk)
        self._unrecorded[batch_id] = landed
        entry, version = landed
        self._record_batches([entry], version)
        del self._unrecorded[batch_id]
        self._touch(chunk.good)
        self._count_input(chunk)

    def _commit_rows(self, chunk: Gathered, rows: Chunk) -> tuple[tuple[Gathered, int, int], int]:
        """One chunk's rows in a commit of their own: ((the chunk, rows inserted, duplicates skipped), the version)."""
        meta = {**self._source_metadata(), "citylake.batch_id": chunk.batch_id, "citylake.rows_in": str(chunk.rows_in),
                "citylake.rejected": str(chunk.rejected), "citylake.started_at": chunk.started.isoformat()}
        if self.registry:
            version, inserted, updated = self.lake.upsert(self.table, rows.good, metadata=meta)
            self.report.updated += updated
            return (chunk, inserted + updated, chunk.offered - inserted - updated), version  # a replacing row is accepted too
        version, inserted, duplicates = self.lake.append_new(self.table, rows.good, metadata=meta, conformed=True)
        return (chunk, inserted, duplicates), version

    def _source_metadata(self) -> dict[str, str]:
        return {"citylake.source": self.source, "citylake.fingerprint": self.fingerprint}

    def _gather(self, chunk: Gathered, rows: pl.DataFrame) -> None:
        keys = list(self.lake.spec(self.table).key)
        pending = pl.concat([part.select(keys) for _, part in self.gathered], rechunk=False) if self.gathered else None
        new = self.lake.new_rows_of_run(self.table, rows, self.run, pending=pending)
        self.gathered.append((chunk, new.with_columns(pl.lit(len(self.gathered), pl.Int32).alias(CHUNK))))
        if sum(part.estimated_size() for _, part in self.gathered) >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Commit the gathered rows in one commit, then their chunks' ``batches`` rows."""
        if not self.gathered:
            return
        chunks = [chunk for chunk, _ in self.gathered]
        rows = pl.concat([part for _, part in self.gathered], how="vertical_relaxed")
        self.gathered = []

        def metadata(committed: pl.DataFrame) -> dict[str, str]:
            landed = _landed_per_chunk(committed, len(chunks))
            entries = [{"batch_id": c.batch_id, "rows_in": c.rows_in, "rejected": c.rejected, "inserted": n,
                        "duplicates": c.offered - n, "started_at": c.started.isoformat()} for c, n in zip(chunks, landed)]
            return {**self._source_metadata(), "citylake.chunks": json.dumps(entries), "citylake.inserted": str(sum(landed)),
                    "citylake.duplicates": str(sum(c.offered for c in chunks) - sum(landed))}

        version, committed = self.lake.commit_run_rows(self.table, rows, self.run, metadata=metadata)
        landed = _landed_per_chunk(committed, len(chunks))
        self._record_batches([(c, n, c.offered - n) for c, n in zip(chunks, landed)], version)

    def _touch(self, rows: pa.Table | pl.DataFrame) -> None:
        for column, values in self.touched.items():
            values.update(pl.Series(rows[column]).unique().to_list() if len(rows) else [])

    def take_touched(self) -> dict[str, set]:
        """The partition values committed since the last call (a live feed hands them to its ``Compactor``; a feed that
        runs for days must not remember every partition it ever touched)."""
        touched, self.touched = self.touched, {column: set() for column in self.touched}
        return touched

    def compact_touched(self) -> None:
        """Merge the files of each partition this run touched that now holds more than one (several commits of a file
        too large for one buffer, or an earlier file's rows in the same partition), so a freshly ingested table reads
        as fast as a compacted one. One commit; partitions already in one file are not rewritten."""
        self.lake.merge_crowded(self.table, self.touched)

    def prepare(self, chunk: Chunk) -> Chunk:
        """Cast, partition and sort the good rows (runs on the prefetch thread, off the commit path)."""
        if not self.registry and not chunk.prepared:
            chunk.good, chunk.prepared = self.lake.conform(self.table, chunk.good), True
        return chunk

    def _quarantine(self, batch_id: str, bad: pl.DataFrame) -> None:
        quarantine(self.lake, quarantine_rows(self.table, self.source, batch_id, bad))

    def _record_batches(self, chunks: list[tuple[Gathered, int, int]], version: int) -> None:
        """One ``batches`` row per (chunk, rows inserted, duplicates skipped), in one commit."""
        now = dt.datetime.now(UTC)
        self.lake.append_new("batches", pl.DataFrame({
            "batch_id": [c.batch_id for c, _, _ in chunks], "table_name": self.table, "source": self.source,
            "fingerprint": self.fingerprint, "rows_in": [c.rows_in for c, _, _ in chunks],
            "rows_accepted": [n for _, n, _ in chunks], "rows_rejected": [c.rejected for c, _, _ in chunks],
            "rows_duplicate": [d for _, _, d in chunks], "version": version, "started_at": [c.started for c, _, _ in chunks],
            "finished_at": now,
        }, schema_overrides={"started_at": pl.Datetime("us", "UTC"), "finished_at": pl.Datetime("us", "UTC")}))
        self.report.accepted += sum(n for _, n, _ in chunks)
        self.report.duplicates += sum(d for _, _, d in chunks)

    def _count_input(self, chunk: Chunk) -> None:
        r = self.report
        r.rows_in += chunk.rows_in
        r.rejected += chunk.bad.height
        if chunk.bad.height:
            r.reasons.update(dict(chunk.bad["kind"].value_counts().iter_rows()))


def quarantine_rows(table: str, source: str, batch_id: str, bad: pl.DataFrame) -> pl.DataFrame:
    """A chunk's rejected rows as ``quarantine`` holds them."""
    return bad.select(
        pl.lit(batch_id).alias("batch_id"),
        pl.lit(table).alias("table_name"),
        pl.lit(source).alias("source"),
        pl.col("_position").cast(pl.Int64).alias("row_number"),
        pl.col("raw").str.slice(0, 10_000),  # a huge line is kept in part: enough to find it
        pl.col("reason"),
        pl.lit(dt.datetime.now(UTC)).dt.cast_time_unit("us").alias("quarantined_at"),
    ) if bad.height else pl.DataFrame()


def quarantine(lake: Lake, rows: pl.DataFrame) -> None:
    """Rejected rows into ``quarantine``, in one commit (once: a rerun of their chunks adds none)."""
    if rows.height:
        lake.append_new("quarantine", rows)


CHUNK = "_chunk"  # which gathered chunk a row came from (not written: Lake.commit_run_rows drops "_" columns)


def _landed_per_chunk(committed: pl.DataFrame, chunks: int) -> list[int]:
    counts = dict(committed.group_by(CHUNK).len().iter_rows()) if committed.height else {}
    return [int(counts.get(i, 0)) for i in range(chunks)]


VALIDATORS = 2  # chunks validated at once: validation costs more than a commit, so one validator would hold commits up


def validated(raws: Iterable[T], validate: Callable[[T], Chunk], *, workers: int = VALIDATORS) -> Iterator[Chunk]:
    """``validate`` each raw chunk on ``workers`` threads, yielding results in file order. Raw chunks are read one
    at a time in the consuming thread; at most ``workers`` are being validated, so memory stays bounded."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Chunk]] = deque()
        for raw in raws:
            pending.append(pool.submit(validate, raw))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def prefetch(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Read and validate the next chunk on a thread while the current one commits.

    The heavy work on both sides (CSV parsing, Polars, H3, the Delta writer) releases the
    GIL, so the two overlap on separate cores. With `validated` feeding it, at most four chunks are in memory:
    two being validated, one waiting here, one committing.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def progress_bar(title: str, *columns: ProgressColumn, progress: bool) -> Progress:
    """The bar every ingestion step shows on a terminal: ``title``, the bar, ``columns``, time left; gone when done."""
    return Progress(TextColumn(title), BarColumn(), *columns, TimeRemainingColumn(), transient=True, disable=not progress)


def run(writer: BatchWriter, chunks: Iterator[Chunk], *, total_bytes: int = 0, progress: bool = False,
        compact: bool = True) -> IngestReport:
    """Commit every chunk, with a progress bar over the input's bytes; then merge the run's files per partition."""
    started = time.perf_counter()
    ledger.repair(writer.lake, writer.table)  # a run before this one may have stopped between a chunk's commits
    name = escape(Path(writer.source).name).replace("{", "{{").replace("}", "}}")  # a file name is neither markup nor a format
    bar = progress_bar(f"[bold]{writer.table}[/] {name}{{task.description}}", DownloadColumn(), TransferSpeedColumn(),
                       progress=progress)
    with bar:
        task = bar.add_task("", total=total_bytes or None)
        for index, chunk in enumerate(prefetch(writer.prepare(c) for c in chunks)):
            writer.commit(index, chunk)
            bar.update(task, completed=chunk.bytes_done)
        writer.flush()
        writer.report.touched = {column: set(values) for column, values in writer.touched.items()}
        if compact:
            bar.update(task, description=" (merging the run's files per partition…)")
            writer.compact_touched()
    writer.report.seconds = time.perf_counter() - started
    return writer.report

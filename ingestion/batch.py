"""One ingestion run: chunks of validated rows committed exactly once, bad rows quarantined,
one ``batches`` row per chunk, a progress bar and a one-line summary.

Exactly once, across crashes and reruns: every chunk is appended with ``Lake.append_new``,
which skips rows whose key the table already holds, so rerunning a file (after a crash, or
after registering the sensors whose readings were quarantined) lands only what is missing.
The chunk's data commit carries its batch id and counts in the Delta commit metadata,
atomically with the rows; the ``batches`` table (one row per run and chunk) and the
``quarantine`` table (one row per rejected file line, keyed by chunk and line) follow in
their own commits and are mended by a rerun if a crash falls between.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary printed after an ingest."""
        why = ""
        if self.reasons:
            top = ", ".join(f"{n:,} {r}" for r, n in self.reasons.most_common(3))
            more = len(self.reasons) - 3
            why = f" ({top}{f', +{more} more reasons' if more > 0 else ''})"
        rate = self.rows_in / self.seconds if self.seconds else 0
        notes = "".join(f"; {n}" for n in self.notes)
        return (
            f"{self.source} → {self.table}: {self.accepted:,} accepted, {self.rejected:,} rejected{why}, "
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


class BatchWriter:
    """Commits the chunks of one source into one table."""

    def __init__(self, lake: Lake, table: str, source: str, fingerprint: str | Future[str], *, registry: bool = False,
                 one_run: bool = False) -> None:
        self.lake, self.table, self.source, self._fingerprint = lake, table, source, fingerprint
        self.registry = registry  # registries (places, sensors) replace rows by key instead of skipping them
        # a file's chunks: remember this run's keys rather than read its earlier chunks back (a live feed, which runs
        # for days, checks each micro-batch against the table instead: its memory would grow without end)
        self.run = lake.run_keys(table) if one_run and not registry else None
        self.report = IngestReport(table, source)

    @property
    def fingerprint(self) -> str:
        if isinstance(self._fingerprint, Future):  # still hashing on its thread (fingerprint_soon): wait for it here
            self._fingerprint = self._fingerprint.result()
        return self._fingerprint

    def commit(self, index: int, chunk: Chunk) -> None:
        started = dt.datetime.now(UTC)
        chunk = self.prepare(chunk)
        batch_id = f"{self.fingerprint[:16]}:{index}"  # the same file chunk has the same id in every run
        offered = chunk.good.num_rows if isinstance(chunk.good, pa.Table) else chunk.good.height
        meta = {"citylake.batch_id": batch_id, "citylake.source": self.source, "citylake.rows_in": str(chunk.rows_in),
                "citylake.rejected": str(chunk.bad.height)}
        if self.registry:
            version, inserted, updated = self.lake.upsert(self.table, chunk.good, metadata=meta)
            duplicates = offered - inserted - updated
        else:
            version, inserted, duplicates = self.lake.append_new(self.table, chunk.good, metadata=meta, conformed=True, run=self.run)
        self._quarantine(batch_id, chunk.bad)
        self._record_batch(batch_id, chunk, (inserted, duplicates), version, started)
        self._count(chunk, inserted, duplicates)

    def prepare(self, chunk: Chunk) -> Chunk:
        """Cast, partition and sort the good rows (runs on the prefetch thread, off the commit path)."""
        if not self.registry and not chunk.prepared:
            chunk.good, chunk.prepared = self.lake.conform(self.table, chunk.good), True
        return chunk

    def _quarantine(self, batch_id: str, bad: pl.DataFrame) -> None:
        if not bad.height:
            return
        rows = bad.select(
            pl.lit(batch_id).alias("batch_id"),
            pl.lit(self.table).alias("table_name"),
            pl.lit(self.source).alias("source"),
            pl.col("_position").cast(pl.Int64).alias("row_number"),
            pl.col("raw").str.slice(0, 10_000),  # a huge line is kept in part: enough to find it
            pl.col("reason"),
            pl.lit(dt.datetime.now(UTC)).dt.cast_time_unit("us").alias("quarantined_at"),
        )
        self.lake.append_new("quarantine", rows)

    def _record_batch(self, batch_id: str, chunk: Chunk, recorded: tuple[int, int], version: int, started: dt.datetime) -> None:
        self.lake.append_new("batches", pl.DataFrame({
            "batch_id": [batch_id], "table_name": [self.table], "source": [self.source], "fingerprint": [self.fingerprint],
            "rows_in": [chunk.rows_in], "rows_accepted": [recorded[0]], "rows_rejected": [chunk.bad.height],
            "rows_duplicate": [recorded[1]], "version": [version],
            "started_at": [started], "finished_at": [dt.datetime.now(UTC)],
        }, schema_overrides={"started_at": pl.Datetime("us", "UTC"), "finished_at": pl.Datetime("us", "UTC")}))

    def _count(self, chunk: Chunk, inserted: int, duplicates: int) -> None:
        r = self.report
        r.rows_in += chunk.rows_in
        r.accepted += inserted
        r.duplicates += duplicates
        r.rejected += chunk.bad.height
        if chunk.bad.height:
            r.reasons.update(dict(chunk.bad["kind"].value_counts().iter_rows()))


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


def run(writer: BatchWriter, chunks: Iterator[Chunk], *, total_bytes: int = 0, progress: bool = False) -> IngestReport:
    """Commit every chunk, with a progress bar over the input's bytes."""
    started = time.perf_counter()
    name = escape(Path(writer.source).name).replace("{", "{{").replace("}", "}}")  # a file name is neither markup nor a format
    bar = progress_bar(f"[bold]{writer.table}[/] {name}", DownloadColumn(), TransferSpeedColumn(), progress=progress)
    with bar:
        task = bar.add_task("ingest", total=total_bytes or None)
        for index, chunk in enumerate(prefetch(writer.prepare(c) for c in chunks)):
            writer.commit(index, chunk)
            bar.update(task, completed=chunk.bytes_done)
    writer.report.seconds = time.perf_counter() - started
    return writer.report

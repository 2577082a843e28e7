"""Pings and readings files ingested on a Dask cluster, landing in one exactly-once commit.

Three steps, each task opening the lake from its URI and storage settings (a worker needs to reach the lake and the
input files, nothing of the client's):

1. *Stage*, a task per file, or per run of a Parquet file's row groups (about ``rows_per_task`` rows): read, check and
   pseudonymise the rows exactly as one process does (``validate_pings``), conform them to the table, drop repeats
   within the piece, and put them in the steward zone's staging area for this run, a file per UTC date. Rejected rows
   come back to the client. Readings are checked as ``ingest_readings`` checks them, against the sensor registry.
2. *Settle*, a task per date — or, for a date of more than ``SETTLE_ROWS`` staged rows, per share of its partitions,
   a partition denser than that split by device (by sensor, for readings; a key's partition and device follow from the
   key, so a key never spans two shares) — the staged rows in input order, the
   first of each key kept, less the keys the table held at the version the run read; sorted and written as the
   table's data files, which no commit names yet. A task holds a share of a day however dense the day.
3. *Commit*, in the client under the table's writer lock: the rejected rows to quarantine, then every settled file in
   one fenced Delta commit on that version. When another writer committed in between, the dates are settled again
   against its version; the superseded files are named by no commit and ``vacuum`` removes them.

A task that dies is run again by Dask and rewrites the same staged names; a client that dies before the commit leaves
nothing a reader sees, and a rerun lands every row once. The ``batches`` rows are written from the commit's metadata
(``ledger.repair``), as after a crash between the two commits of a single-process run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress

from citylake.ingestion import ledger
from citylake.ingestion import validate as V
from citylake.ingestion.batch import IngestReport, fingerprint, progress_bar, quarantine, quarantine_rows
from citylake.ingestion.errors import UnreadableInput
from citylake.ingestion.iot import READING_REQUIRED, sensor_cells, validate_readings
from citylake.ingestion.location import OPTIONAL, REQUIRED, validate_pings
from citylake.ingestion.textfile import DEFAULT_BATCH_ROWS, RawChunk, chunks, columns, parquet_chunks
from citylake.lake import Lake, Storage, TableMoved
from citylake.lake.data_files import write_data_files
from citylake.lake.lake import FENCED_ATTEMPTS
from citylake.lake.schemas import PARTITION_CELL, PARTITION_DATE
from citylake.lake.storage import ObjectLocation, locate

DEFAULT_ROWS_PER_TASK = 2_000_000  # a Parquet file's row groups are shared out in runs of about this many rows
# a date with more staged rows than this is settled in shares of its partitions: a quarter of a stage task's rows, as
# settling a row (concat, first of each key, sort, write) takes about twice the memory checking one does and a process
# may run two settle tasks at once, so a worker's peak is a stage task's however dense the days (measured, 40M
# time-ordered pings in one process: the settle phase's peak 1.15-1.40 GB against the stage phase's ~1.35 GB; 1.45 GB in
# shares of 1M reading whole staged files)
SETTLE_ROWS = 500_000
STAGED_GROUP_ROWS = 100_000  # rows of a staged file's row group at most (a group per partition cell: ``_staged_bytes``)
PARQUET = (".parquet", ".pq")
STAGING = "steward/.staging"  # each run's checked rows, per date, until its commit; in the steward zone, as pings are
RUN_TIME = "%Y%m%dT%H%M%S"
STALE_AFTER = dt.timedelta(days=1)
UTC = dt.timezone.utc


@dataclass(frozen=True)
class Feed:
    """A table a cluster ingest lands rows in: its input columns, and whose rows a slice of a dense partition holds."""

    table: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    who: str  # a device's pings, a sensor's readings: a slice holds all of one's rows of a partition
    hashed: bool  # the column is text: sliced by its hash (pseudonyms are numbers, keyed hashes already)

    def whose(self) -> pl.Expr:
        return pl.col(self.who).hash(seed=0) if self.hashed else pl.col(self.who)


PINGS = Feed("pings", REQUIRED, OPTIONAL, "device_id", hashed=False)
READINGS = Feed("readings", READING_REQUIRED, (), "sensor_id", hashed=True)


@dataclass(frozen=True)
class Piece:
    """One stage task's share of the input: a whole file, or a run of a Parquet file's row groups."""

    number: int  # the piece's place in the whole run's input order (earlier pieces win a repeated key)
    source: str
    fingerprint: str
    index: int  # its place in its file: the chunk's batch id is ``fingerprint[:16]:index``
    row_groups: range | None = None

    @property
    def batch_id(self) -> str:
        return f"{self.fingerprint[:16]}:{self.index}"


@dataclass(frozen=True)
class Checks:
    """How every piece is read and checked (what ``ingest_pings`` and ``ingest_readings`` take as options)."""

    key: bytes | None = field(repr=False)  # the pseudonym key (pings; None for readings)
    mapping: Mapping[str, str]
    tz: str
    delimiter: str | None
    batch_rows: int
    window: V.TimeWindow


@dataclass
class Staged:
    """What a stage task did with its piece: counts, the rejected rows (for quarantine) and the dates it staged."""

    piece: Piece
    rows_in: int
    offered: int  # rows that passed the checks (repeats within the piece included)
    bad: pl.DataFrame
    files: dict[str, list[str]]  # date → the staged files holding its rows, in the piece's order
    started: dt.datetime
    partitions: Counter = field(default_factory=Counter)  # (date, partition cell) → rows staged


@dataclass
class Settled:
    adds: list
    landed: dict[int, int]  # piece number → rows of it that landed


def ingest_pings_on_cluster(lake: Lake, sources: list[str], client, /, *, key: bytes, **options) -> IngestReport:
    """Ingest pings files (paths the workers can read, or ``s3://`` objects on the lake's store) on ``client``'s
    cluster: the rows one process would land, exactly once, in one commit (``ingest_on_cluster``)."""
    return ingest_on_cluster(lake, sources, client, PINGS, key=key, **options)


def ingest_readings_on_cluster(lake: Lake, sources: list[str], client, /, **options) -> IngestReport:
    """Ingest readings files on ``client``'s cluster, as ``ingest_readings`` would, in one commit (``ingest_on_cluster``)."""
    return ingest_on_cluster(lake, sources, client, READINGS, key=None, **options)


def ingest_on_cluster(lake: Lake, sources: list[str], client, feed: Feed, /, *, key: bytes | None,
                      mapping: Mapping[str, str] | None = None, tz: str = "UTC", delimiter: str | None = None,
                      batch_rows: int = DEFAULT_BATCH_ROWS, rows_per_task: int = DEFAULT_ROWS_PER_TASK,
                      now: dt.datetime | None = None, earliest: dt.date = V.EARLIEST, announce=lambda text: None,
                      pieces: list[Piece] | None = None) -> IngestReport:
    """Ingest ``feed``'s files on ``client``'s cluster: stage, settle, one fenced commit (see the module). ``pieces``: the
    files' ``plan`` when the caller made it already (before starting a cluster)."""
    started = time.perf_counter()
    V.check_timezone(tz)
    lake.require_writable()
    ledger.repair(lake, feed.table)
    checks = Checks(key, dict(mapping or {}), tz, delimiter, batch_rows, V.time_window(earliest, now))
    if pieces is None:
        pieces = plan(lake, sources, feed, rows_per_task=rows_per_task, delimiter=delimiter, mapping=checks.mapping)
    _sweep_stale_runs(lake)
    run = f"{dt.datetime.now(UTC):{RUN_TIME}}-{secrets.token_hex(4)}"
    announce(f"{len(sources)} file(s) in {len(pieces)} task(s) …")
    try:
        staged = client.gather([client.submit(stage, lake.uri, lake.storage, run, piece, checks, feed, pure=False) for piece in pieces])
        # rejected rows first (one commit): a chunk whose rows are visible always has its rejects recorded
        rejected = [quarantine_rows(feed.table, s.piece.source, s.piece.batch_id, s.bad) for s in staged if s.bad.height]
        quarantine(lake, pl.concat(rejected) if rejected else pl.DataFrame())
        landed = _settle_and_commit(lake, client, run, feed, staged, announce, started)
    finally:
        lake.location.delete_tree(staging_area(run))
    ledger.repair(lake, feed.table)  # the batches rows, from the commit's metadata
    return _report(feed, sources, staged, landed, time.perf_counter() - started)


LOCAL_THREADS = 2  # tasks at once in one process: two cores busy, two tasks' rows in memory (~1.2 GB for pings)


def ingest_in_process(lake: Lake, source: str | Path, feed: Feed = PINGS, /, *, progress: bool = False, **options) -> IngestReport:
    """One file ingested in this process by the stage–settle–commit protocol above, its tasks on ``LOCAL_THREADS``
    threads: the process holds two tasks' rows however large the file (a buffered run, ``ingestion.batch``, holds a
    buffer's and a hash of every key it committed), and the file lands in one commit. ``options``: ``ingest_on_cluster``'s."""
    name = escape(Path(source).name).replace("{", "{{").replace("}", "}}")
    with progress_bar(f"[bold]{feed.table}[/] {name}{{task.description}}", MofNCompleteColumn(), progress=progress) as bar, \
            LocalTasks(bar) as tasks:
        return ingest_on_cluster(lake, [str(source)], tasks, feed, announce=tasks.say, **options)


class LocalTasks:
    """What ``ingest_on_cluster`` asks of a Dask client (``submit``, ``gather``), in this process on ``threads`` threads;
    each ``gather`` a line of ``bar`` named by the last ``say``."""

    def __init__(self, bar: Progress, threads: int = LOCAL_THREADS) -> None:
        self.bar, self.pool, self.phase = bar, ThreadPoolExecutor(max_workers=threads), ""

    def __enter__(self) -> LocalTasks:
        return self

    def __exit__(self, *_) -> None:
        self.pool.shutdown(cancel_futures=True)  # a failed task: the others not yet begun never start

    def say(self, text: str) -> None:
        self.phase = text.rstrip(" …")

    def submit(self, task, /, *args, pure: bool = True, **kwargs) -> Future:
        return self.pool.submit(task, *args, **kwargs)

    def gather(self, futures: list[Future]) -> list:
        line = self.bar.add_task(f": {self.phase}", total=len(futures))
        try:
            for done in as_completed(futures):
                done.result()  # the first failure, as a cluster reports it
                self.bar.advance(line)
        except BaseException:  # a failed task, or Ctrl-C: the caller removes the run's staged files next, so no task may
            for future in futures:  # still be writing them
                future.cancel()
            wait(futures)
            raise
        self.bar.remove_task(line)
        return [future.result() for future in futures]


def plan(lake: Lake, sources: list[str], feed: Feed = PINGS, /, *, rows_per_task: int, delimiter: str | None,
         mapping: Mapping[str, str]) -> list[Piece]:
    """The run's pieces in input order; each file's header is checked first, so a wrong file fails before any task."""
    check_headers(lake, sources, feed, delimiter=delimiter, mapping=mapping)
    pieces: list[Piece] = []
    for source in sources:
        file_print = _fingerprint(source, lake.storage)
        for index, groups in enumerate(_row_group_runs(source, lake.storage, rows_per_task)):
            pieces.append(Piece(len(pieces), source, file_print, index, groups))
    return pieces


def check_headers(lake: Lake, sources: list[str], feed: Feed = PINGS, /, *, delimiter: str | None, mapping: Mapping[str, str]) -> None:
    """Refuse a missing file, or one without the feed's columns, before any work starts."""
    for source in sources:
        try:
            with local_copy(source, lake.storage, header_only=True) as path:
                V.check_columns(columns(path, delimiter=delimiter, suffix=Path(source).suffix) if path
                                else _parquet_columns(source, lake.storage), mapping, source, feed.required, optional=feed.optional)
        except FileNotFoundError:  # an object the store does not hold
            raise UnreadableInput(source, "no such object on the store") from None


def stage(lake_uri: str, storage: Storage | None, run: str, piece: Piece, checks: Checks, feed: Feed = PINGS, /) -> Staged:
    """A stage task: the piece's rows checked, conformed and staged per date, a chunk at a time (a worker holds one chunk
    of a file however large it is); its rejected rows returned."""
    started = dt.datetime.now(UTC)
    lake = Lake.open(lake_uri, storage=storage)
    check = _checker(lake, feed, checks)
    bad, rows_in, offered, files, partitions = [], 0, 0, defaultdict(list), Counter()
    for n, raw in enumerate(_raw_chunks(piece, storage, checks)):
        chunk = check(raw, piece.source)
        rows = pl.from_arrow(lake.conform(feed.table, chunk.good))
        bad.append(chunk.bad)
        rows_in, offered = rows_in + chunk.rows_in, offered + rows.height
        for (date,), day in (rows.partition_by(PARTITION_DATE, as_dict=True) if rows.height else {}).items():
            name = _staged_file(run, date.isoformat(), piece.number, n)
            lake.location.write_bytes(name, _staged_bytes(day), private=True)
            files[date.isoformat()].append(name)
            partitions.update({(date.isoformat(), cell): count for cell, count in day.group_by(PARTITION_CELL).len().iter_rows()})
    rejected = pl.concat(bad, how="vertical_relaxed") if any(b.height for b in bad) else pl.DataFrame()
    return Staged(piece, rows_in, offered, rejected, dict(files), started, partitions)


def _checker(lake: Lake, feed: Feed, checks: Checks):
    """How a stage task checks a chunk of ``feed``: as the one-process ingest of the table does."""
    if feed.table == READINGS.table:
        known = sensor_cells(lake)  # once per task
        return lambda raw, source: validate_readings(raw, source, known=known, mapping=checks.mapping, tz=checks.tz, window=checks.window)
    return lambda raw, source: validate_pings(raw, source, key=checks.key, cell_res=lake.cell_res, mapping=checks.mapping, tz=checks.tz,
                                              window=checks.window)


def settle(lake_uri: str, storage: Storage | None, run: str, files: list[tuple[int, str]], version: int | None,
           share: Share | None = None, feed: Feed = PINGS, /) -> Settled:
    """A settle task for one date (or its ``share``): its staged ``files`` (piece number,
    name) in input order, the first row of each key kept, less the keys the table held at ``version`` (None: it held
    none), written as data files of the table (not committed)."""
    lake = Lake.open(lake_uri, storage=storage)
    spec = lake.spec(feed.table)
    rows = pl.concat([_staged_rows(lake, name, share, feed).with_columns(_piece=pl.lit(number, pl.Int64)) for number, name in files],
                     how="vertical_relaxed")
    keys = list(spec.key)
    rows = rows.filter(pl.struct(keys).is_first_distinct())
    if version is not None and rows.height:
        rows = rows.join(lake.keys_present(feed.table, rows, version=version), on=keys, how="anti", nulls_equal=True)
    rows = rows.sort([*spec.partition_by, *spec.sort_by])
    landed = dict(rows.group_by("_piece").len().iter_rows())
    adds = write_data_files(lake, feed.table, rows.drop("_piece"), tag=run) if rows.height else []
    return Settled(adds, landed)


def _staged_bytes(day: pl.DataFrame) -> bytes:
    """A stage chunk's rows of one date as a Parquet file, in row groups of one partition cell each (of at most
    ``STAGED_GROUP_ROWS`` rows), so a settle task reads only its share's cells. In input order within a cell: a key's
    rows all lie in one cell, so the first of each key stays first."""
    sink = io.BytesIO()
    cells = day.sort(PARTITION_CELL, maintain_order=True).partition_by(PARTITION_CELL, maintain_order=True)
    with pq.ParquetWriter(sink, day.head(0).to_arrow().schema, compression="lz4") as writer:
        for cell in cells:
            writer.write_table(cell.to_arrow(), row_group_size=STAGED_GROUP_ROWS)
    return sink.getvalue()


def _staged_rows(lake: Lake, name: str, share: Share | None, feed: Feed) -> pl.DataFrame:
    """A staged file's rows of ``share``: only the row groups of its cells (by their statistics) decoded, in one read (a
    file holds a stage chunk's rows of one date, up to a whole dense date, of which a share keeps a part)."""
    staged = pq.ParquetFile(io.BytesIO(lake.location.read_bytes(name)))
    if share is None:
        return pl.from_arrow(staged.read())
    held, cells = share.holds(feed.whose()), share.cells()
    column = staged.schema_arrow.get_field_index(PARTITION_CELL)
    groups = [group for group in range(staged.num_row_groups) if _may_hold(staged.metadata.row_group(group).column(column), cells)]
    return pl.from_arrow(staged.read_row_groups(groups) if groups else staged.schema_arrow.empty_table()).filter(held)


def _may_hold(chunk: pq.ColumnChunkMetaData, cells: frozenset[int]) -> bool:
    """Whether a row group's partition cells (``chunk``'s statistics) may include one of ``cells``."""
    stats = chunk.statistics
    if stats is None or not stats.has_min_max:
        return True
    return any(stats.min <= cell <= stats.max for cell in cells)


@dataclass(frozen=True)
class Share:
    """What one settle task takes of a date: whole partitions, and slices of partitions too dense for one task — a
    slice (partition cell, r, of) is the partition's devices whose pseudonym modulo ``of`` is ``r`` (pseudonyms are keyed
    hashes, so slices are about equal however the rows crowd in space; a readings slice: its sensors' ids' hash)."""

    partitions: frozenset[int] = frozenset()
    slices: frozenset[tuple[int, int, int]] = frozenset()

    def holds(self, whose: pl.Expr | None = None) -> pl.Expr:
        """Rows of this share; ``whose``: the number a slice is taken by (default: the device's pseudonym)."""
        whose = pl.col("device_id") if whose is None else whose
        whole = pl.col(PARTITION_CELL).is_in(list(self.partitions))
        return pl.any_horizontal(whole, *((pl.col(PARTITION_CELL) == cell) & (whose % of == r)
                                          for cell, r, of in sorted(self.slices)))

    def cells(self) -> frozenset[int]:
        """The partition cells this share takes rows of, whole or sliced."""
        return self.partitions | {cell for cell, _, _ in self.slices}

    def __or__(self, other: Share) -> Share:
        return Share(self.partitions | other.partitions, self.slices | other.slices)


def settle_shares(partitions: Counter, date: str, /) -> list[Share | None]:
    """How one date is settled: whole (``[None]``) when it staged at most ``SETTLE_ROWS`` rows, else shared out over as
    many tasks as that takes, the largest first onto the lightest share: a partition whole, or one denser than
    ``SETTLE_ROWS`` in as many slices by device as that takes."""
    units = [unit for (day, cell), rows in partitions.items() if day == date for unit in _units(cell, rows)]
    shares = -(-sum(rows for rows, _ in units) // SETTLE_ROWS)
    if shares <= 1:
        return [None]
    load, members = [0] * shares, [Share() for _ in range(shares)]
    for rows, unit in sorted(units, key=lambda u: (-u[0], sorted(u[1].partitions), sorted(u[1].slices))):
        lightest = load.index(min(load))
        load[lightest] += rows
        members[lightest] |= unit
    return [share for share in members if share.partitions or share.slices]


def _units(cell: int, rows: int) -> list[tuple[int, Share]]:
    """A partition as one unit of settling, or, when denser than ``SETTLE_ROWS``, as slices of its devices of about
    ``SETTLE_ROWS`` rows each (expected: a slice's rows are estimated as an equal part)."""
    if rows <= SETTLE_ROWS:
        return [(rows, Share(partitions=frozenset([cell])))]
    of = -(-rows // SETTLE_ROWS)
    return [(rows // of, Share(slices=frozenset([(cell, r, of)]))) for r in range(of)]


def _settle_and_commit(lake: Lake, client, run: str, feed: Feed, staged: list[Staged], announce, began: float) -> dict[int, int]:
    """Settle every date on the cluster and commit the files on the version read; again if another writer came between."""
    files: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s in staged:  # in input order
        for date, names in s.files.items():
            files[date] += [(s.piece.number, name) for name in names]
    partitions = sum((s.partitions for s in staged), Counter())
    shares = [(named, share) for date, named in sorted(files.items()) for share in settle_shares(partitions, date)]
    announce(f"staged {sum(s.offered for s in staged):,} checked rows ({time.perf_counter() - began:.1f}s); settling {len(files)} "
             f"day(s) in {len(shares)} task(s) …")
    for _ in range(FENCED_ATTEMPTS):
        table = lake.table(feed.table)
        version, held = table.version(), bool(table.get_add_actions(flatten=True).num_rows)
        settled = client.gather([client.submit(settle, lake.uri, lake.storage, run, named, version if held else None, share, feed,
                                               pure=False) for named, share in shares])
        landed: Counter = Counter()
        for s in settled:
            landed.update(s.landed)
        try:
            announce(f"settled ({time.perf_counter() - began:.1f}s); committing {sum(len(s.adds) for s in settled)} file(s) …")
            with lake.writer_lock(feed.table):
                lake.commit_files(feed.table, [a for s in settled for a in s.adds], version=version,
                                  metadata=_commit_metadata(staged, landed))
            return dict(landed)
        except TableMoved as moved:
            announce(str(moved))
    raise RuntimeError(f"table {feed.table!r} kept changing while this run settled its rows ({FENCED_ATTEMPTS} tries); run it when "
                       "other writers pause")


def _commit_metadata(staged: list[Staged], landed: Counter) -> dict[str, str]:
    """What the ledger reads back: each piece as a chunk, with its file."""
    import json

    entries = [{"batch_id": s.piece.batch_id, "source": s.piece.source, "fingerprint": s.piece.fingerprint, "rows_in": s.rows_in,
                "rejected": s.bad.height, "inserted": landed.get(s.piece.number, 0),
                "duplicates": s.offered - landed.get(s.piece.number, 0), "started_at": s.started.isoformat()} for s in staged]
    sources = sorted({s.piece.source for s in staged})
    return {"citylake.source": sources[0] if len(sources) == 1 else f"{len(sources)} files", "citylake.chunks": json.dumps(entries),
            "citylake.inserted": str(sum(landed.values())), "citylake.duplicates": str(sum(e["duplicates"] for e in entries)),
            "citylake.run": "staged"}


def _report(feed: Feed, sources: list[str], staged: list[Staged], landed: dict[int, int], seconds: float) -> IngestReport:
    report = IngestReport(feed.table, sources[0] if len(sources) == 1 else f"{len(sources)} files", seconds=seconds)
    for s in staged:
        report.rows_in += s.rows_in
        report.rejected += s.bad.height
        report.accepted += landed.get(s.piece.number, 0)
        report.duplicates += s.offered - landed.get(s.piece.number, 0)
        if s.bad.height:
            report.reasons.update(dict(s.bad["kind"].value_counts().iter_rows()))
        for date, cell in s.partitions:  # what a merge after several files may take (``Lake.merge_ingested``)
            report.touched.setdefault(PARTITION_DATE, set()).add(dt.date.fromisoformat(date))
            report.touched.setdefault(PARTITION_CELL, set()).add(cell)
    return report


def staging_area(run: str) -> str:
    return f"{STAGING}/{run}"


def stale_runs(lake: Lake, /, *, older_than: dt.timedelta = STALE_AFTER) -> list[str]:
    """Runs that began more than ``older_than`` ago and left staged rows (their command was killed before its end); a
    run's name starts with its start time, and a run still going is younger than STALE_AFTER."""
    oldest = dt.datetime.now(UTC) - max(older_than, STALE_AFTER)
    stale = []
    for run in lake.location.folders(STAGING):
        try:
            began = dt.datetime.strptime(run.split("-")[0], RUN_TIME).replace(tzinfo=UTC)
        except ValueError:
            continue
        if began < oldest:
            stale.append(run)
    return stale


def _sweep_stale_runs(lake: Lake) -> None:
    for run in stale_runs(lake):
        lake.location.delete_tree(staging_area(run))


def _staged_file(run: str, date: str, number: int, chunk: int) -> str:
    return f"{staging_area(run)}/{date}/{number:06d}-{chunk:06d}.parquet"


# --- the input: a path the workers share, or an object on the lake's store ------------------------------------------

def _raw_chunks(piece: Piece, storage: Storage | None, checks: Checks) -> Iterator[RawChunk]:
    if piece.row_groups is not None:
        with _parquet_file(piece.source, storage) as opened:
            try:
                yield from parquet_chunks(Path(piece.source), batch_rows=checks.batch_rows, row_groups=piece.row_groups,
                                          opened=opened)
            except UnreadableInput as err:  # said of a path: say it of the source as given (s3://… is no path)
                raise UnreadableInput(piece.source, err.why) from None
        return
    with local_copy(piece.source, storage) as path:
        yield from chunks(path, batch_rows=checks.batch_rows, delimiter=checks.delimiter, suffix=Path(piece.source).suffix)


@contextmanager
def local_copy(source: str, storage: Storage | None, *, header_only: bool = False) -> Iterator[Path | None]:
    """A text file to read: the path itself, or an object's bytes (its first MiB for the header) in a file without a
    name, which the kernel frees when this process ends however it ends — raw device ids never outlive a killed task.
    None for a Parquet file (read in place, ``_parquet_file``)."""
    if source.lower().endswith(PARQUET):
        yield None
        return
    if not source.startswith("s3://"):
        if not Path(source).is_file():
            raise UnreadableInput(source, "no such file (workers read the same path: give a shared path or an s3:// object)")
        yield Path(source)
        return
    import tempfile

    import obstore

    location, name = _object(source, storage)
    with tempfile.TemporaryFile() as copy:
        if header_only:
            size = location._call(obstore.head, name)["size"]
            data = bytes(location._call(obstore.get_range, name, start=0, length=min(size, 1 << 20))) if size else b""
            copy.write(data[:data.rfind(b"\n") + 1] or data)
        else:
            for part in location._call(obstore.get, name).stream(min_chunk_size=8 << 20):
                copy.write(part)
        copy.flush()
        try:
            yield Path(f"/proc/self/fd/{copy.fileno()}")
        except UnreadableInput as err:  # said of the copy: say it of the object
            raise UnreadableInput(source, err.why) from None


@contextmanager
def _parquet_file(source: str, storage: Storage | None) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened where it is: on the store, only its footer and the row groups read are fetched."""
    import pyarrow as pa

    if not source.startswith("s3://"):
        try:
            opened = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as err:
            raise UnreadableInput(source, f"not a readable Parquet file ({err})") from None
        yield opened
        return
    import obstore

    location, name = _object(source, storage)
    reader = _StoreFile(location._call(obstore.open_reader, name))
    try:
        try:
            opened = pq.ParquetFile(reader)
        except (pa.ArrowInvalid, OSError) as err:
            raise UnreadableInput(source, f"not a readable Parquet file ({err})") from None
        yield opened
    finally:
        reader.close()


class _StoreFile(io.RawIOBase):
    """An object on the store as the seekable file pyarrow reads Parquet from (ranged reads as it seeks)."""

    def __init__(self, reader) -> None:
        self.reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return bytes(self.reader.read(size) if size >= 0 else self.reader.readall())

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.reader.seek(offset, whence)

    def tell(self) -> int:
        return self.reader.tell()

    def close(self) -> None:
        if not self.closed:
            self.reader.close()
        super().close()


def _parquet_columns(source: str, storage: Storage | None) -> list[str]:
    with _parquet_file(source, storage) as opened:
        return opened.schema_arrow.names


def _row_group_runs(source: str, storage: Storage | None, rows_per_task: int) -> list[range | None]:
    """A Parquet file's row groups in runs of about ``rows_per_task`` rows; [None] (the whole file) for text."""
    if not source.lower().endswith(PARQUET):
        return [None]
    with _parquet_file(source, storage) as opened:
        meta = opened.metadata
        runs, first, rows = [], 0, 0
        for group in range(meta.num_row_groups):
            rows += meta.row_group(group).num_rows
            if rows >= rows_per_task:
                runs.append(range(first, group + 1))
                first, rows = group + 1, 0
        if first < meta.num_row_groups or not runs:
            runs.append(range(first, meta.num_row_groups))
        return runs


def _fingerprint(source: str, storage: Storage | None) -> str:
    """A file's content hash; an object's from its entity tag and size (reading it all in the client would not scale)."""
    if not source.startswith("s3://"):
        return fingerprint(source)
    import obstore

    location, name = _object(source, storage)
    meta = location._call(obstore.head, name)
    return hashlib.sha256(f"{source}\n{meta['size']}\n{meta.get('e_tag')}".encode()).hexdigest()


def _object(source: str, storage: Storage | None) -> tuple[ObjectLocation, str]:
    """The folder and name of an ``s3://bucket/folder/name`` input, reached with the lake's storage settings."""
    folder, _, name = source.rpartition("/")
    if folder in ("s3:", "s3:/") or not name:
        raise UnreadableInput(source, "name an object: s3://BUCKET/KEY")
    return locate(folder, storage), name

"""The lake: Delta tables with the schemas of ``lake.schemas``, in a directory or under an ``s3://`` prefix (``lake.storage``).

Every write is one Delta commit, so readers see all of it or none of it, and a writer
killed mid-write leaves only files no commit names (``vacuum`` removes them).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import deltalake
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from citylake.h3_index import check_resolution, ownership
from citylake.h3_index.buckets import partition_keys
from citylake.lake.errors import (
    MARKER,
    BadLakeFile,
    BadLocation,
    BadTimezone,
    BadWriteMode,
    DiskFull,
    LakeNotFound,
    LocalOnly,
    NoSuchVersion,
    NotALakeDirectory,
    NotWritable,
    SchemaMismatch,
    TableMoved,
    TableNotEmpty,
    UnknownTable,
)
from citylake.lake.run_keys import RunKeys
from citylake.lake.schemas import PARTITION_CELL, PARTITION_DATE, TABLES, TableSpec
from citylake.lake.storage import Location, Storage, locate
from citylake.lake.writers import LOCKS, ensure_room, is_disk_full

WriteMode = Literal["error", "append", "overwrite"]
AsOf = int | str | dt.datetime | None

# Resolution of the cell stored on every row (h3_cell): res 11 cells are about 25 m
# across, so few points fall in the boundary cells of a place's cover (DESIGN: place_cells).
DEFAULT_CELL_RES = 11
# Partition cell resolution: res 5 cells (about 250 km^2) give a city a handful of
# partitions per day, so files stay large; measured against res 4 and 6 in `make bench`.
DEFAULT_PARTITION_RES = 5
LAKE_ID = re.compile(r"[0-9a-f]{16}")  # a lake's id, as `init` makes it (secrets.token_hex(8))
FORMAT_VERSION = 3  # 3: the watcher's exact alerts moved to the steward zone; 2: tables live in zones (steward/, tables/,
# releases/); 1 kept every table in tables/


@dataclass(frozen=True)
class Zone:
    """A directory of tables and who may read it: the steward zone is its owner's alone (0700, files 0600); the shared
    and release zones are readable by every OS user who can reach the lake (0755, files 0644)."""
    directory: str
    mode: int
    umask: int


ZONES = {"steward": Zone("steward", 0o700, 0o077), "shared": Zone("tables", 0o755, 0o022), "release": Zone("releases", 0o755, 0o022)}


# The umask is the process's, not a thread's: a live feed commits on one thread while it compacts on another, and two
# writes of different zones at once would each create files with the other's mode. Writes in zones take turns.
_ZONE_WRITES = threading.RLock()


def _in_zone(method):
    """Run a write with the umask of its table's zone, so every file and log entry it creates gets the zone's mode.
    One such write at a time in the process (``_ZONE_WRITES``); taken inside the table's writer lock, never around it."""
    @functools.wraps(method)
    def write(self, name, *args, **kwargs):
        self._check_writable(name)
        with _ZONE_WRITES:
            previous = os.umask(ZONES[self.spec(name).zone].umask)
            try:
                return method(self, name, *args, **kwargs)
            finally:
                os.umask(previous)
    return write


FENCED_ATTEMPTS = 5  # a fenced commit that met another writer's checks again; more than a few races in a row is a fault


class _Raced(Exception):
    """A fenced commit found the table moved on since its checks (another writer committed in between)."""


def _one_writer(method):
    """Run a write holding its table's writer lock (``Lake.writer_lock``): what it checks is still true when it commits.
    Its commit is also fenced (``_commit(fenced=True)``: it lands only on the version its checks read), so a writer that
    lost an object store's lease while paused finds the table moved and checks again, instead of landing rows twice."""
    @functools.wraps(method)
    def write(self, name, *args, **kwargs):
        self._check_writable(name)
        for attempt in range(FENCED_ATTEMPTS):
            with self.writer_lock(name):
                try:
                    return method(self, name, *args, **kwargs)
                except _Raced:
                    if attempt == FENCED_ATTEMPTS - 1:
                        raise RuntimeError(f"table {name!r} kept changing under its writer lock ({FENCED_ATTEMPTS} tries): another "
                                           "writer ignores the lock; stop it and run this again") from None
    return write


@dataclass(frozen=True)
class TableStats:
    name: str
    version: int
    rows: int
    files: int
    bytes: int
    partitions: int


class Lake:
    """A citylake lake rooted at a directory or an ``s3://bucket/prefix``. Open one with ``Lake.open`` or ``Lake.init``."""

    def __init__(self, root: str | Path | Location, *, cell_res: int, partition_res: int, lake_id: str = "", timezone: str = "UTC",
                 storage: Storage | None = None) -> None:
        self.location = root if isinstance(root, Location) else locate(root, storage)
        self.uri = self.location.uri  # what commands print and Dask tasks are given (with ``storage``)
        self.root: Path | None = getattr(self.location, "root", None)  # a local lake's directory; None on object storage
        self.storage: Storage | None = getattr(self.location, "storage", None)
        self.storage_options = self.location.storage_options
        self._readable: dict[str, bool] = {}
        self.cell_res = check_resolution(cell_res)
        self.partition_res = check_resolution(partition_res)
        self.lake_id = lake_id  # random, made with the lake: names its pseudonym key file, so no two lakes share a key
        # the city's time zone: what people read (reports, maps, hours of the day) is in it; storage stays UTC
        self.timezone = check_timezone(timezone)

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def init(
        cls, root: str | Path, /, *, cell_res: int = DEFAULT_CELL_RES, partition_res: int = DEFAULT_PARTITION_RES,
        timezone: str | None = None, storage: Storage | None = None,
    ) -> Lake:
        """Create the lake (or complete a partial one) and every table; safe to run twice.

        The resolutions are fixed when the lake is first made: every row already written
        depends on them. An existing lake keeps its own. ``timezone`` (the city's, default UTC) may be
        changed later: rows are stored in UTC, and only what people read is shown in it.
        ``root`` is a directory, ``file://…`` or ``s3://bucket/prefix`` (reached with ``storage``, else the AWS variables).
        """
        location = locate(root, storage)
        if location.local:
            _check_directory(location.root)
        if _marker_text(location) is not None:
            lake = cls.open(location)
            lake.require_writable()
            if timezone is not None and timezone != lake.timezone:
                lake.set_timezone(timezone)
            if not location.local:
                lake._make_zones()  # complete one whose making was cut short (on a disk, ``open`` does it)
            return lake
        if partition_res >= cell_res:
            raise SchemaMismatch("pings", PARTITION_CELL, "the partition resolution must be coarser than the cell resolution")
        if location.local:
            _check_owned(location.root)
        else:
            _refuse_nesting(location, storage)
        lake = cls(location, cell_res=cell_res, partition_res=partition_res, lake_id=secrets.token_hex(8), timezone=timezone or "UTC")
        if location.local:
            existing = next(p for p in (location.root, *location.root.parents) if p.exists())
            if not os.access(existing, os.W_OK | os.X_OK):
                raise NotWritable(str(location.root), str(existing), making=True)
            location.root.mkdir(parents=True, exist_ok=True)
            os.chmod(location.root, 0o755)
        facts = {"format": FORMAT_VERSION, "lake_id": lake.lake_id, "cell_res": lake.cell_res, "partition_res": lake.partition_res,
                 "timezone": lake.timezone}
        if not location.local:  # written first on a store (a refused write fails here, before any table): `init` again completes it
            location.write_text(MARKER, json.dumps(facts, indent=2) + "\n", private=False)
        lake._make_zones()
        if location.local:  # written last on a disk: a directory without it is not a lake yet, and `init` again completes it
            location.write_text(MARKER, json.dumps(facts, indent=2) + "\n", private=False)
        return lake

    @classmethod
    def open(cls, root: str | Path | Location, /, *, storage: Storage | None = None) -> Lake:
        """Open an existing lake, with the resolutions it was made with (``root`` as for ``init``)."""
        location = root if isinstance(root, Location) else locate(root, storage)
        if location.local:
            _check_directory(location.root)
        text = _marker_text(location)
        if text is None:
            raise LakeNotFound(location.uri)
        facts = _read_marker(f"{location.uri}/{MARKER}", text)
        lake = cls(location, cell_res=facts["cell_res"], partition_res=facts["partition_res"], lake_id=facts.get("lake_id", ""),
                   timezone=facts.get("timezone", "UTC"))
        if location.local and os.access(location.root, os.W_OK) and location.root.stat().st_uid == os.geteuid():
            if facts.get("format", 1) < FORMAT_VERSION:
                lake._upgrade(facts)
            lake._make_zones()  # the owner's citylake adds the tables a newer citylake knows; readers make nothing
        return lake

    def set_timezone(self, timezone: str, /) -> None:
        """The city's time zone, recorded in ``citylake.json`` (the owner's; no row changes: storage is UTC)."""
        self.timezone = check_timezone(timezone)
        text = _marker_text(self.location) or "{}"
        facts = {**_read_marker(f"{self.uri}/{MARKER}", text), "timezone": self.timezone}
        self.location.write_text(MARKER, json.dumps(facts, indent=2) + "\n", private=False)

    def require_writable(self) -> None:
        """Refuse now, before any work, when this user cannot change the lake: another user's lake, one made read-only, or
        one on a read-only file system. (Each write checks its own table again; on object storage the store's refusal of a
        write is the answer, and says so.)"""
        if not self.location.local:
            self.location.probe_writable()
            return
        for path in (self.root, *(self.root / zone.directory for zone in ZONES.values())):
            if path.exists() and (not os.access(path, os.W_OK | os.X_OK) or path.stat().st_uid != os.geteuid()):
                raise NotWritable(None, str(path))  # another user's lake is theirs to change, root's included
        _check_above(self.root)

    def _make_zones(self) -> None:
        for zone in ZONES.values() if self.location.local else ():  # a store has no directories: its policy guards the prefixes
            path = self.root / zone.directory
            path.mkdir(exist_ok=True)
            os.chmod(path, zone.mode)
        for spec in TABLES.values():
            self._create_table(spec.name)

    def _upgrade(self, facts: dict) -> None:
        """An older lake's tables move to the zones this format keeps them in (format 1 kept every table in tables/; format
        2 kept the exact alerts there): a Delta table's files are relative to it, so a move is a rename."""
        for spec in TABLES.values():
            old, new = self.root / ZONES["shared"].directory / spec.name, self.path(spec.name)
            if spec.zone != "shared" and old.is_dir() and not new.exists():
                new.parent.mkdir(exist_ok=True)
                old.rename(new)
        steward = self.root / ZONES["steward"].directory
        for path in [steward, *steward.rglob("*")]:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        self.lake_id = facts.get("lake_id") or secrets.token_hex(8)
        facts = {**facts, "format": FORMAT_VERSION, "lake_id": self.lake_id}
        self.location.write_text(MARKER, json.dumps(facts, indent=2) + "\n", private=False)

    @_in_zone
    def _create_table(self, name: str) -> None:
        spec = self.spec(name)
        uri = self.table_uri(name)
        if deltalake.DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            return
        deltalake.DeltaTable.create(
            uri,
            storage_options=self.storage_options,
            schema=spec.schema(cell_res=self.cell_res, partition_res=self.partition_res),
            partition_by=list(spec.partition_by) or None,
            name=spec.name,
            description=spec.description,
        )

    # -- tables ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(TABLES)

    def spec(self, name: str) -> TableSpec:
        try:
            return TABLES[name]
        except KeyError:
            raise UnknownTable(name, self.names) from None

    def relative(self, name: str) -> str:
        """The table's place under the lake's root: ``<zone directory>/<name>``."""
        return f"{ZONES[self.spec(name).zone].directory}/{name}"

    def table_uri(self, name: str) -> str:
        """Where the engines find the table: a path on a disk, ``s3://…`` on a store (with ``storage_options``)."""
        return self.location.table_uri(self.relative(name))

    def path(self, name: str) -> Path:
        """The table's directory: a local lake's only (``table_uri`` names a table wherever the lake is)."""
        return self.local_root("reading a table's files directly") / self.relative(name)

    def local_root(self, doing: str) -> Path:
        """The lake's directory, for what works on a local lake only; one clear line on object storage."""
        if self.root is None:
            raise LocalOnly(self.uri, doing)
        return self.root

    def readable(self, name: str) -> bool:
        """Whether this process may read the table (the steward zone is its owner's alone: by file modes on a disk, by the
        store's access policy on object storage)."""
        zone = ZONES[self.spec(name).zone].directory
        if zone not in self._readable:
            self._readable[zone] = self.location.readable(zone)
        return self._readable[zone]

    def writer_lock(self, name: str):
        """Hold the table's writer lock (``lake.writers``, ``lake.storage.LeaseLock`` on object storage)."""
        return self.location.lock(f"{ZONES[self.spec(name).zone].directory}/{LOCKS}/{name}.lock")

    def read_steward_file(self, name: str, /) -> str | None:
        """One of the steward zone's files (its policy), or None when absent; ``PermissionError`` for others."""
        return self.location.read_text(f"{ZONES['steward'].directory}/{name}")

    def budget_lock(self):
        """Held from checking the day's privacy budget to recording what a release spends: two releases at once (on
        several machines, with an s3:// lake) cannot both pass the check."""
        return self.location.lock(f"{ZONES['steward'].directory}/{LOCKS}/privacy-budget.lock")

    def write_steward_file(self, name: str, text: str, /) -> None:
        """Replace one of the steward zone's files whole, readable by its owner only."""
        self.location.write_text(f"{ZONES['steward'].directory}/{name}", text, private=True)

    @property
    def readable_names(self) -> list[str]:
        """The tables this process may read (another OS user than the owner: not the steward zone's)."""
        return [name for name in self.names if self.readable(name)]

    @property
    def steward_dir(self) -> Path:
        """The steward zone's directory on a local lake: also holds the watcher's state and the server's accounts."""
        return self.local_root("keeping files in the steward zone's directory") / ZONES["steward"].directory

    def _check_writable(self, name: str) -> None:
        """Refused here, before the Delta writer's threads meet it (and panic). (On a store, the store refuses.)"""
        if self.root is None:
            return
        path = self.path(name)
        where = path if path.exists() else path.parent
        if not os.access(where, os.W_OK | os.X_OK):
            raise NotWritable(name, str(where))

    def _delta(self, name: str) -> deltalake.DeltaTable:
        """The table's latest version, as delta-rs opens it."""
        return deltalake.DeltaTable(self.table_uri(name), storage_options=self.storage_options)

    def table(self, name: str, /, *, as_of: AsOf = None) -> deltalake.DeltaTable:
        """The Delta table, at its latest version or as of a version number or a time."""
        table = self._delta(name)
        version = self.resolve_version(name, as_of, table=table)
        if version is not None and version != table.version():
            table.load_as_version(version)
        return table

    def resolve_version(self, name: str, as_of: AsOf, *, table: deltalake.DeltaTable | None = None) -> int | None:
        """The version number ``as_of`` means: itself if a number, else the last commit at or before that time."""
        if as_of is None:
            return None
        table = table or self._delta(name)
        if isinstance(as_of, (int, np.integer)) and not isinstance(as_of, bool):
            if not 0 <= as_of <= table.version():
                raise NoSuchVersion(name, as_of, f"versions run from 0 to {table.version()}")
            return int(as_of)
        when = _as_utc(name, as_of)
        commits = sorted((c["version"], c["timestamp"]) for c in table.history())
        at_or_before = [v for v, ms in commits if ms <= when.timestamp() * 1000]
        if not at_or_before:
            first = dt.datetime.fromtimestamp(commits[0][1] / 1000, dt.timezone.utc)
            raise NoSuchVersion(name, as_of, f"the table was created at {first.isoformat()}")
        return at_or_before[-1]

    def rows(self, name: str, /, *, as_of: AsOf = None) -> int:
        return self.stats(name, as_of=as_of).rows

    def stats(self, name: str, /, *, as_of: AsOf = None) -> TableStats:
        """Rows, files, bytes and partitions of a table, read from its Delta log (no data scan)."""
        table = self.table(name, as_of=as_of)
        actions = _add_actions(table)
        partitions = 0
        spec = self.spec(name)
        if spec.partition_by and actions.num_rows:
            keys = [actions.column(f"partition.{c}") for c in spec.partition_by]
            partitions = pa.table(dict(zip(spec.partition_by, keys))).group_by(list(spec.partition_by)).aggregate([]).num_rows
        return TableStats(
            name=name,
            version=table.version(),
            rows=_row_count(actions),
            files=actions.num_rows,
            bytes=int(pc.sum(actions.column("size_bytes")).as_py() or 0) if actions.num_rows else 0,
            partitions=partitions,
        )

    def rows_per_partition(self, name: str, column: str, /) -> dict[str, int]:
        """Rows per value of a partition column (e.g. pings per ``date``), read from the Delta log (no data scan)."""
        if column not in self.spec(name).partition_by:
            raise ValueError(f"{name} is not partitioned by {column!r}; its partition columns are {self.spec(name).partition_by}")
        actions = _add_actions(self.table(name))
        if not actions.num_rows:
            return {}
        per = pa.table({"value": actions.column(f"partition.{column}"), "rows": actions.column("num_records")})
        per = per.group_by("value").aggregate([("rows", "sum")])
        return {str(v): int(n) for v, n in zip(per.column("value").to_pylist(), per.column("rows_sum").to_pylist())}

    # -- writing --------------------------------------------------------------------------
    def write(
        self,
        name: str,
        data: Any,
        /,
        *,
        mode: WriteMode = "error",
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Write rows to a table in one atomic commit and return the new version.

        ``mode="error"`` (the default) refuses to write into a table that holds rows;
        ``"append"`` adds rows; ``"overwrite"`` replaces them all. ``metadata`` is stored
        with the commit (see ``history``).
        """
        if mode not in ("error", "append", "overwrite"):
            raise BadWriteMode(mode)
        table = self._delta(name)
        if mode == "error":
            held = _row_count(_add_actions(table))
            if held:
                raise TableNotEmpty(name, held)
        rows = self.conform(name, data, schema=table.schema().to_arrow())
        return self._commit(name, table, rows, mode="overwrite" if mode == "overwrite" else "append", metadata=metadata)

    @_in_zone
    def _commit(
        self,
        name: str,
        table: deltalake.DeltaTable,
        rows: pa.Table,
        *,
        mode: str,
        metadata: dict[str, str] | None,
        fenced: bool = False,
    ) -> int:
        if self.root is not None:
            ensure_room(name, self.path(name), rows.nbytes)
        try:
            deltalake.write_deltalake(
                table,
                rows,
                mode=mode,
                writer_properties=_writer_properties(self.spec(name)),
                commit_properties=deltalake.CommitProperties(custom_metadata={"citylake.rows": str(rows.num_rows), **(metadata or {})},
                                                             max_commit_retries=0 if fenced else None),
            )
        except deltalake.exceptions.CommitFailedError:
            if fenced:
                raise _Raced from None
            raise
        except (OSError, deltalake.exceptions.DeltaError) as err:
            if self.root is not None and is_disk_full(err):
                raise DiskFull(name, str(self.path(name)), rows.nbytes, shutil.disk_usage(self.path(name)).free) from None
            raise
        return self._delta(name).version()

    def append_new(
        self,
        name: str,
        data: Any,
        /,
        *,
        metadata: dict[str, str] | None = None,
        conformed: bool = False,
    ) -> tuple[int, int, int]:
        """Append the rows whose key the table does not hold yet, in one commit (a file's run gathers its chunks
        instead: ``new_rows_of_run`` and ``commit_run_rows``).

        Rows repeated inside ``data`` count once. Returns ``(version, inserted, duplicates)``.
        Only the partitions the new rows fall in are read, and only their key columns.
        ``conformed=True`` says ``data`` already came from ``conform`` (done ahead, off the commit path).
        """
        rows = pl.from_arrow(data if conformed else self.conform(name, data))
        return self._append_new_rows(name, rows, metadata=metadata)

    @_one_writer
    def _append_new_rows(self, name: str, rows: pl.DataFrame, /, *, metadata: dict[str, str] | None) -> tuple[int, int, int]:
        table = self._delta(name)
        offered = rows.height
        rows = self._new_rows(name, rows, table)
        counts = {"citylake.inserted": str(rows.height), "citylake.duplicates": str(offered - rows.height)}
        version = self._commit(name, table, rows.to_arrow(), mode="append", metadata={**counts, **(metadata or {})}, fenced=True)
        return version, rows.height, offered - rows.height

    @_one_writer
    def commit_run_rows(self, name: str, rows: pl.DataFrame, run: RunKeys, /, *,
                        metadata: Callable[[pl.DataFrame], dict[str, str]]) -> tuple[int, pl.DataFrame]:
        """Commit rows a run gathered from several chunks (each checked by ``new_rows_of_run``) in one commit; returns
        the version and the rows committed. Each chunk came sorted (``conform``), so a partition's file holds one sorted
        run per chunk, as a compacted file does (sorting them all again cost a tenth of the ingest, bench month_of_pings).
        Columns starting with ``_`` travel back to the caller but are not written.
        Another writer's commits since the run last looked are checked against here, under the lock: their keys are
        dropped from ``rows`` and the run moves its ``version_before`` up to them. ``metadata`` gets the rows committed."""
        table = self._delta(name)
        if self._catch_up(name, run, table) and rows.height:
            keys = list(self.spec(name).key)
            rows = rows.join(self.keys_present(name, rows.select(keys + list(self.spec(name).partition_by))), on=keys,
                             how="anti", nulls_equal=True)
        data = rows.select([c for c in rows.columns if not c.startswith("_")]).to_arrow()
        version = self._commit(name, table, data, mode="append",
                               metadata=metadata(rows), fenced=True)
        run.seen_version = version
        return version, rows

    def run_keys(self, name: str) -> RunKeys:
        """A fresh memory of keys for one ingestion run into ``name`` (see ``append_new``)."""
        table = self._delta(name)
        return RunKeys(table.version() if _row_count(_add_actions(table)) else None, seen_version=table.version())

    def _catch_up(self, name: str, run: RunKeys, table: deltalake.DeltaTable) -> bool:
        """Whether another writer committed since the run's last commit; if so the run checks against it from now on.
        (Called under the table's writer lock, just before the run commits.)"""
        if table.version() == run.seen_version:
            return False
        run.version_before = table.version() if _row_count(_add_actions(table)) else None
        run.seen_version = table.version()
        return True

    def _new_rows(self, name: str, rows: pl.DataFrame, table: deltalake.DeltaTable) -> pl.DataFrame:
        keys = list(self.spec(name).key)
        key = pl.struct(keys)
        if rows.select(key.is_duplicated().any()).item():  # cheap test first: most batches have no repeats
            rows = rows.filter(key.is_first_distinct())
        if rows.height and _row_count(_add_actions(table)):
            rows = rows.join(self.keys_present(name, rows), on=keys, how="anti", nulls_equal=True)
        return rows

    def new_rows_of_run(self, name: str, rows: pl.DataFrame, run: RunKeys, /, *, pending: pl.DataFrame | None = None) -> pl.DataFrame:
        """The rows of one chunk of a run whose keys are new: not in the table as the run began, not committed by the run,
        not in ``pending`` (keys the run gathered but has not committed yet), not earlier in the chunk.

        A key whose hash the run has not seen can only be in the table as it was before the run. A seen hash (a repeat,
        or two keys with one hash) is checked exactly against the table as it is now, ``pending`` and the chunk's
        other rows; there are few of those."""
        keys = list(self.spec(name).key)
        suspect = pl.Series(run.suspects(rows, keys))
        fresh, repeated = rows.filter(~suspect), rows.filter(suspect)
        if run.version_before is not None and fresh.height:
            fresh = fresh.join(self.keys_present(name, fresh, version=run.version_before), on=keys, how="anti", nulls_equal=True)
        if not repeated.height:
            return fresh
        repeated = self._new_rows(name, repeated, self._delta(name))
        for held in (fresh, pending):
            if held is not None and held.height and repeated.height:
                repeated = repeated.join(held.select(keys), on=keys, how="anti", nulls_equal=True)
        return pl.concat([fresh, repeated], how="vertical_relaxed")

    def keys_present(self, name: str, rows: pl.DataFrame, *, version: int | None = None) -> pl.DataFrame:
        """Keys of ``rows`` the table already holds. The table's keys stream past a hash table of
        the new rows' keys, so memory follows the batch, not the table; only the partitions the
        rows fall in, only the key columns, and only files whose statistics overlap the rows' key ranges are read
        (a time-ordered feed's earlier chunks are skipped; a shuffled one's are still read)."""
        spec = self.spec(name)
        keys = list(spec.key)
        existing = pl.scan_delta(self.table_uri(name), version=version, storage_options=self.storage_options)
        for column in spec.partition_by:
            existing = existing.filter(pl.col(column).is_in(rows[column].unique().implode()))
        for column in filter(lambda c: _ranged(rows[c]), keys):  # a key present lies within the new rows' range
            existing = existing.filter(pl.col(column).is_between(rows[column].min(), rows[column].max()))
        return existing.select(keys).join(rows.lazy().select(keys), on=keys, how="semi", nulls_equal=True).collect(engine="streaming")

    @_one_writer
    @_in_zone
    def upsert(self, name: str, data: Any, /, *, metadata: dict[str, str] | None = None) -> tuple[int, int, int]:
        """Insert new rows and replace rows with the same key that differ (registries: places, sensors; ``loaded_at``
        aside). Returns ``(version, inserted, updated)``; one commit.
        """
        spec = self.spec(name)
        table = self._delta(name)
        rows = pl.from_arrow(self.conform(name, data, schema=table.schema().to_arrow()))
        rows = rows.unique(subset=list(spec.key), keep="last", maintain_order=True).to_arrow()
        on = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        # a row equal to the held one but for when it was loaded changes nothing: a rerun of the same file updates no row
        compared = [c for c in rows.column_names if c not in spec.key and c != "loaded_at"]
        changed = " OR ".join(f"(t.`{c}` IS DISTINCT FROM s.`{c}`)" for c in compared) or "false"
        result = (
            table.merge(rows, predicate=on, source_alias="s", target_alias="t",
                        commit_properties=deltalake.CommitProperties(custom_metadata=metadata or {}))
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .execute()
        )
        return table.version(), result["num_target_rows_inserted"], result["num_target_rows_updated"]

    def conform(self, name: str, data: Any, /, *, schema: Any = None) -> pa.Table:
        """Cast ``data`` to the table's current schema, add partition keys, sort as the table wants."""
        spec = self.spec(name)
        rows = _as_arrow(data)
        if schema is None:
            schema = self._delta(name).schema().to_arrow()
        target = pa.schema([pa.field(f.name, f.type, f.nullable) for f in pa.schema(schema)])
        extra = set(rows.column_names) - set(target.names)
        if extra:
            column = sorted(extra)[0]
            raise SchemaMismatch(name, column, "the table has no such column; add it first with Lake.add_column")
        if spec.partitioned_by_cell:
            rows = self._with_partition_keys(name, rows)
        columns = [_conform_column(name, rows, f) for f in target]
        out = pa.Table.from_arrays(columns, schema=target)
        return _sorted(out, spec.sort_by) if spec.sort_by and out.num_rows else out

    def _with_partition_keys(self, name: str, rows: pa.Table) -> pa.Table:
        for column in ("h3_cell", "ts"):
            if column not in rows.column_names or rows.column(column).null_count:
                raise SchemaMismatch(name, column, "is required to place each row in its partition")
        cells = rows.column("h3_cell").to_numpy().astype(np.int64)
        ts = _utc_microseconds(name, rows.column("ts"))
        parents, dates = partition_keys(cells, ts, self.partition_res)
        rows = rows.drop_columns([c for c in (PARTITION_CELL, PARTITION_DATE) if c in rows.column_names])
        return rows.append_column(PARTITION_CELL, pa.array(parents)).append_column(PARTITION_DATE, pa.array(dates, pa.date32()))

    @_one_writer
    @_in_zone
    def replace_keys(self, name: str, data: Any, /, *, column: str, values: list[str]) -> int:
        """Make the rows whose ``column`` is in ``values`` exactly ``data``, in one commit.

        Rows of those values missing from ``data`` are deleted (a place's old cover cells);
        identical rows are left untouched, so a rerun changes nothing.
        """
        spec = self.spec(name)
        table = self._delta(name)
        rows = self.conform(name, data, schema=table.schema().to_arrow())
        on = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
        others = [c for c in rows.column_names if c not in spec.key]
        changed = " OR ".join(f"(t.`{c}` IS DISTINCT FROM s.`{c}`)" for c in others) or "false"
        quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
        (
            table.merge(rows, predicate=on, source_alias="s", target_alias="t")
            .when_matched_update_all(predicate=changed)
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(predicate=f"t.{column} IN ({quoted})")
            .execute()
        )
        return table.version()

    @_one_writer
    @_in_zone
    def replace_where(self, name: str, data: Any, /, *, predicate: str, metadata: dict[str, str] | None = None) -> int:
        """Make the rows matching ``predicate`` (SQL, e.g. ``bucket >= '…' AND bucket < '…'``) exactly ``data``, in one
        commit; returns the new version."""
        table = self._delta(name)
        rows = self.conform(name, data, schema=table.schema().to_arrow())
        deltalake.write_deltalake(
            table, rows, mode="overwrite", predicate=predicate, writer_properties=_writer_properties(self.spec(name)),
            commit_properties=deltalake.CommitProperties(custom_metadata={"citylake.rows": str(rows.num_rows), **(metadata or {})}),
        )
        return self._delta(name).version()

    @_in_zone
    def commit_files(self, name: str, adds: list, /, *, version: int, metadata: dict[str, str]) -> int:
        """Name data files written apart (``lake.data_files``) in one commit on ``version``, and return the new version.
        The caller holds the table's writer lock and checked the files' rows against ``version``: when another writer
        committed since, nothing lands and ``TableMoved`` says so (the caller checks again against the new version)."""
        table = self._delta(name)
        if table.version() != version:
            raise TableMoved(name, version, table.version())
        rows = sum(json.loads(add.stats)["numRecords"] for add in adds)
        try:
            table.create_write_transaction(adds, mode="append", schema=table.schema(), partition_by=list(self.spec(name).partition_by),
                                           commit_properties=deltalake.CommitProperties(
                                               custom_metadata={"citylake.rows": str(rows), **metadata}, max_commit_retries=0))
        except deltalake.exceptions.CommitFailedError:
            raise TableMoved(name, version, self._delta(name).version()) from None
        return self._delta(name).version()

    @_one_writer  # a writer between writing its files and committing them must not lose them
    @_in_zone
    def forget_superseded(self, name: str, /) -> list[str]:
        """Delete every file the latest version does not need, now: earlier versions become unreadable (a replaced
        release must not stay readable through time travel). Returns the files removed."""
        return self._delta(name).vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)

    # -- maintenance ----------------------------------------------------------------------
    def history(self, name: str, /, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of a table, newest first: version, time, operation and its metrics."""
        return self._delta(name).history(limit)

    @_one_writer
    @_in_zone
    def compact(self, name: str, /, *, target_mb: int = 128) -> dict[str, Any]:
        """Merge small files into files of about ``target_mb`` (one commit; old files stay until vacuum)."""
        table = self._delta(name)
        return table.optimize.compact(target_size=target_mb * 1024 * 1024, writer_properties=_writer_properties(self.spec(name)))

    def merge_crowded(self, name: str, partitions: dict[str, set], /) -> int:
        """Merge the files of each of these partitions held in more than one file (one commit); how many were merged."""
        crowded = self.crowded(name, partitions)
        if crowded:
            self.compact_partitions(name, {c: {p[c] for p in crowded} for c in partitions})
        return len(crowded)

    def crowded(self, name: str, partitions: dict[str, set], /, *, min_files: int = 2) -> list[dict[str, str]]:
        """Each partition where every column takes one of the given values and that is held in ``min_files`` files or
        more, as {column: value} (values as the log has them, text), most files first (read from the log)."""
        actions = pl.from_arrow(_add_actions(self.table(name)))
        if not actions.height or not partitions:
            return []
        columns = [f"partition.{c}" for c in partitions]
        wanted = pl.all_horizontal(pl.col(f"partition.{c}").cast(pl.String).is_in([str(v) for v in values])
                                   for c, values in partitions.items())
        crowded = (actions.filter(wanted).group_by(columns).len().filter(pl.col("len") >= min_files)
                   .sort("len", *columns, descending=[True, *[False] * len(columns)]))
        return [{c: str(row[f"partition.{c}"]) for c in partitions} for row in crowded.iter_rows(named=True)]

    @_one_writer  # two compactions of one partition at once would each add the merged rows
    @_in_zone
    def compact_partitions(self, name: str, partitions: dict[str, set], /, *, target_mb: int = 128) -> dict[str, Any]:
        """``compact`` only where a partition column takes one of the given values (e.g. the dates an ingest touched);
        a partition already in one file is left as it is."""
        filters = [(column, "in", sorted(map(str, values))) for column, values in partitions.items() if values]
        table = self._delta(name)
        return table.optimize.compact(partition_filters=filters or None, target_size=target_mb * 1024 * 1024,
                                      writer_properties=_writer_properties(self.spec(name)))

    def vacuum(self, name: str, /, *, retention_hours: int = 168, dry_run: bool = True) -> list[str]:
        """Files older than ``retention_hours`` that no retained version needs (deleted unless dry_run).

        That includes files a killed writer left behind (a full vacuum: every file the log does
        not name). The retention window protects time travel: versions older than it stop working once their files are
        removed. Deleting holds the table's writer lock, so no writer (of this process or another) is between writing
        a file and committing it, whatever the window.
        """
        if dry_run:
            return self._vacuum(name, retention_hours, dry_run=True)
        self._check_writable(name)
        with self.writer_lock(name):
            return self._vacuum(name, retention_hours, dry_run=False)

    @_in_zone
    def _vacuum(self, name: str, retention_hours: int, /, *, dry_run: bool) -> list[str]:
        table = self._delta(name)
        return table.vacuum(retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True)

    @_in_zone
    def add_column(self, name: str, column: str, type_: str, /) -> int:
        """Add a nullable column (schema evolution); existing rows read it as NULL."""
        table = self._delta(name)
        if column in table.schema().to_arrow().names:
            raise SchemaMismatch(name, column, "the column already exists")
        table.alter.add_columns([deltalake.Field(column, type_, nullable=True)])
        return self._delta(name).version()


def _check_owned(root: Path) -> None:
    """Refuse to make or complete a lake in a directory another user owns, or through a symbolic link another user made
    (root too: a directory planted where a lake will be made, writable by all, would hand its maker the people's data,
    and a planted link would have ``init`` open up the directory it points to)."""
    for status in (_status(root, follow=False), _status(root, follow=True)):
        if status is not None and status.st_uid != os.geteuid():
            raise NotWritable(str(root), str(root), making=True)
    _check_above(root, making=True)


def _check_above(root: Path, *, making: bool = False) -> None:
    """Refuse a lake another user could swap through a directory above it (``h3_index.ownership``): between this
    command's checks and its writes, the lake would be exchanged for theirs, and the people's rows written there."""
    above = ownership.untrusted_above(root)
    if above:
        raise NotWritable(str(root) if making else None, str(root), making=making,
                          reason=f"another user could swap it ({above}); keep the lake where only you (or root) can change "
                                 "the directories above it")


def _status(path: Path, *, follow: bool) -> os.stat_result | None:
    try:
        return path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return None


def _check_directory(root: Path) -> None:
    """A lake is a directory: refuse a regular file as the lake, or on the way to it."""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise NotALakeDirectory(str(root), str(path))
            return


def check_timezone(name: object) -> str:
    """An IANA time zone name (``Asia/Shanghai``), checked; ``BadTimezone`` says how to write one."""
    import zoneinfo

    if not isinstance(name, str) or not name:
        raise BadTimezone(str(name))
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadTimezone(name) from None
    return name


def _refuse_nesting(location: Location, storage: Storage | None) -> None:
    """A lake on a store may not start inside another lake: under its tables/ or releases/ prefix, the store's policy
    would let that lake's readers read this one's steward zone (on a disk, the zone's file modes still guard it)."""
    prefix = location.uri[len("s3://"):].split("/")
    for end in range(len(prefix) - 1, 0, -1):
        outer = "s3://" + "/".join(prefix[:end])
        try:
            found = _marker_text(locate(outer, storage))
        except PermissionError:  # a prefix these keys may not read: not one they could nest under unseen by its readers
            continue
        if found is not None:
            raise BadLocation(location.uri, f"it is inside the lake at {outer}; give each lake a prefix of its own")


def _marker_text(location: Location) -> str | None:
    """citylake.json's text, or None where there is no lake (a directory of that name is not one)."""
    try:
        return location.read_text(MARKER)
    except (IsADirectoryError, NotADirectoryError):
        return None
    except UnicodeDecodeError:
        raise BadLakeFile(f"{location.uri}/{MARKER}", "it is not text") from None


def _read_marker(marker: str, text: str) -> dict:
    """The lake's facts from citylake.json, checked: a damaged file is named, never a KeyError or a JSON traceback."""
    try:
        facts = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadLakeFile(marker, f"not JSON: {err}") from None
    if not isinstance(facts, dict):
        raise BadLakeFile(marker, f"it holds a JSON {type(facts).__name__}, not an object")
    for key in ("cell_res", "partition_res"):
        value = facts.get(key)
        if key not in facts:
            raise BadLakeFile(marker, f"{key!r} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 15:
            raise BadLakeFile(marker, f"{key!r} is {value!r}, not an H3 resolution 0..15")
    if facts["partition_res"] >= facts["cell_res"]:
        raise BadLakeFile(marker, "'partition_res' must be coarser (smaller) than 'cell_res'")
    if "timezone" in facts:
        try:
            check_timezone(facts["timezone"])
        except BadTimezone:
            raise BadLakeFile(marker, f"'timezone' is {facts['timezone']!r}, not a known time zone") from None
    for key, kind in (("lake_id", str), ("format", int)):
        if key in facts and (isinstance(facts[key], bool) or not isinstance(facts[key], kind)):
            raise BadLakeFile(marker, f"{key!r} is {facts[key]!r}, not {'text' if kind is str else 'a whole number'}")
    if facts.get("lake_id") and not LAKE_ID.fullmatch(facts["lake_id"]):  # it names the key file: never a path
        raise BadLakeFile(marker, f"'lake_id' is {facts['lake_id']!r}, not the 16 hex digits `citylake init` makes")
    return facts


def _writer_properties(spec: TableSpec) -> deltalake.WriterProperties:
    return deltalake.WriterProperties(compression=spec.compression)


def _ranged(values: pl.Series) -> bool:
    """Whether a key column's min..max bounds every key equal to one of its values (numbers and times with no NULL or NaN)."""
    if not (values.dtype.is_numeric() or values.dtype.is_temporal()) or values.null_count():
        return False
    return not (values.dtype.is_float() and values.is_nan().any())


def _add_actions(table: deltalake.DeltaTable) -> pa.Table:
    """The data files of a table version with their sizes, row counts and partition values (from the log)."""
    return pa.table(table.get_add_actions(flatten=True))


def _row_count(actions: pa.Table) -> int:
    return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0


def _as_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    return pa.table(data)


def _sorted(rows: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Rows in ``keys`` order, rows of equal keys in their input order (the row number is the last key: ingest keeps the
    first row of each table key, which must be the first in the input, not whichever a sort put first; as fast as the
    unstable sort, where ``maintain_order`` cost 45% more). The Delta writer splits rows into partitions keeping their
    order, so sorting by the in-file keys alone is enough; Polars' multi-threaded argsort on just those columns is about
    3x faster than sorting the whole table (bench: lake_write)."""
    order = pl.from_arrow(rows.select(list(keys))).with_row_index("_row").sort([*keys, "_row"])["_row"]
    return rows.take(order.to_arrow())


def _conform_column(name: str, rows: pa.Table, target: pa.Field) -> pa.ChunkedArray:
    if target.name not in rows.column_names:
        if not target.nullable:
            raise SchemaMismatch(name, target.name, "is required but missing from the data")
        return pa.chunked_array([pa.nulls(rows.num_rows, target.type)])
    column = rows.column(target.name)
    try:
        column = column.cast(target.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaMismatch(name, target.name, f"cannot be read as {target.type}: {err}") from None
    if not target.nullable and column.null_count:
        raise SchemaMismatch(name, target.name, f"has {column.null_count} NULL values but is required")
    return column


def _utc_microseconds(name: str, column: pa.ChunkedArray) -> np.ndarray:
    if not pa.types.is_timestamp(column.type):
        raise SchemaMismatch(name, "ts", f"must be a timestamp, not {column.type}")
    if column.type.tz is None:
        raise SchemaMismatch(name, "ts", "has no time zone; give UTC timestamps (naive local times are ambiguous)")
    return column.cast(pa.timestamp("us", tz="UTC")).to_numpy().astype("datetime64[us]")


def _as_utc(name: str, as_of: str | dt.datetime) -> dt.datetime:
    if isinstance(as_of, str):
        try:
            as_of = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise NoSuchVersion(name, as_of, "give a version number or an ISO time such as 2026-11-22T10:00:00Z") from None
    if not isinstance(as_of, dt.datetime):
        raise NoSuchVersion(name, as_of, "give a version number or an ISO time such as 2026-11-22T10:00:00Z")
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.timezone.utc)

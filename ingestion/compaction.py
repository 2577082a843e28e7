"""Background compaction for a live feed, so its table's files stay few and large while it runs.

A feed that commits every few seconds writes a small file per partition per commit: left alone, a day's partition
would hold thousands, and every read would open them all. A ``Compactor`` runs beside the feed on a thread of its
own. Every ``every_s`` seconds it merges each partition the feed touched since its last round that now holds
``CROWDED_FILES`` files or more (``Lake.crowded``, from the log), one partition per OPTIMIZE commit, then vacuums the
table as ``citylake maintain vacuum --apply`` does: files removed (by these merges or anything else) more than
``retention_hours`` ago, and files a killed writer left.

It never holds the feed up for long: a merge takes the table's writer lock, as the feed's commits do, so the two take
turns one partition's rewrite at a time. It never blocks readers: they read Delta snapshots, which a merge leaves
whole (the merged-away files stay until vacuum, past the retention window, so time travel within it still works).
A merge that fails (a full disk) is said and tried again next round; the feed goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from deltalake.exceptions import DeltaError

from citylake.h3_index.errors import CitylakeError
from citylake.lake import Lake

CROWDED_FILES = 4  # a partition is merged once it holds this many files: at 2, its merged file would be rewritten after nearly every commit


@dataclass
class Compacted:
    """What a compactor did in one session, for the feed's summary."""

    partitions: int = 0  # merges (a partition merged in two rounds counts twice)
    files_merged: int = 0
    files_written: int = 0
    files_vacuumed: int = 0
    failures: int = 0

    def note(self) -> str:
        """The summary line's note: ``compacted 12 partitions (96 files → 12), 40 files vacuumed``."""
        said = f"compacted {self.partitions:,} partitions ({self.files_merged:,} files → {self.files_written:,})"
        if self.files_vacuumed:
            said += f", {self.files_vacuumed:,} files vacuumed"
        return said + (f", {self.failures:,} rounds failed" if self.failures else "")


class Compactor:
    """Merges the crowded partitions a feed touches, on a thread of its own, every ``every_s`` seconds (0: never).

    Use it as a context manager around the feed; hand it the partitions each commit touched (``touched``) and call
    ``check`` now and then, which raises in the feed's thread an unexpected error that ended the compactor's."""

    def __init__(self, lake: Lake, table: str, /, *, every_s: float, retention_hours: int, target_mb: int,
                 announce: Callable[[str], None] | None = None) -> None:
        self.lake, self.table = lake, table
        self.every_s, self.retention_hours, self.target_mb = every_s, retention_hours, target_mb
        self.announce = announce or (lambda line: None)
        self.done = Compacted()
        self.error: BaseException | None = None
        self._pending: dict[str, set] = {column: set() for column in lake.spec(table).partition_by}
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Compactor:
        if self.every_s > 0 and self._pending:  # an unpartitioned table has no partitions to merge
            self._thread = threading.Thread(target=self._rounds, name=f"compact-{self.table}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # a merge under way finishes (it is one commit); no new one starts
        if self._thread is not None:
            self._thread.join()

    def touched(self, partitions: dict[str, set]) -> None:
        """Partition values a commit touched (``BatchWriter.take_touched``): candidates for the next round."""
        with self._pending_lock:
            for column, values in partitions.items():
                self._pending[column] |= values

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _rounds(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                self.round()
        except BaseException as err:  # noqa: BLE001 - a bug: handed to the feed's thread (check), never lost
            self.error = err

    def round(self) -> None:
        """Merge each crowded partition touched since the last round, one commit each, then vacuum."""
        with self._pending_lock:
            touched, self._pending = self._pending, {column: set() for column in self._pending}
        merged = written = vacuumed = 0
        try:
            crowded = self.lake.crowded(self.table, touched, min_files=CROWDED_FILES) if any(touched.values()) else []
            for partition in crowded:
                if self._stop.is_set():
                    break
                metrics = self.lake.compact_partitions(self.table, {c: {v} for c, v in partition.items()}, target_mb=self.target_mb)
                merged, written = merged + metrics["numFilesRemoved"], written + metrics["numFilesAdded"]
                self.done.partitions += 1
            vacuumed = len(self.lake.vacuum(self.table, retention_hours=self.retention_hours, dry_run=False))
        except (CitylakeError, OSError, DeltaError) as err:
            self.done.failures += 1
            self.touched(touched)  # tried again next round
            self.announce(f"{self.table}: background compaction failed ({err}); trying again in {self.every_s:g}s")
        self.done.files_merged += merged
        self.done.files_written += written
        self.done.files_vacuumed += vacuumed
        if merged or vacuumed:
            self.announce(f"{self.table}: compacted {merged:,} files into {written:,}" + (f", vacuumed {vacuumed:,}" if vacuumed else ""))

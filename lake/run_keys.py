"""The keys one ingestion run has committed, so each chunk of a file is checked against the run's earlier chunks
without reading them back from the table (that read grows with every chunk: quadratic in the file's size).

Keys are kept as 64-bit hashes in an open-addressing table (``lake.hash_slots``, compiled with numba): 8 bytes per
slot, at most half the slots used, so 16 to 32 bytes per row the run has committed. A hash seen before is only a
suspicion: ``Lake.append_new`` checks those rows exactly (against each other and the table). Rows the table held
before the run began are checked against that version of the table, which the run's own commits do not change.
A run of one chunk (most small files) keeps its hashes in an array and never loads the compiled table.
Another process writing the same table meanwhile is noticed by its version and checked against (``seen_version``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

FIRST_SLOTS = 1 << 16


class RunKeys:
    def __init__(self, version_before: int | None, *, seen_version: int) -> None:
        self.version_before = version_before  # the table's version when the run began; None: it held no rows then
        # the table's version after this run's last commit: a later one is another writer's, whose keys the run's hashes
        # do not hold, so the run moves ``version_before`` up to it (Lake.commit_run_rows)
        self.seen_version = seen_version
        self.first: np.ndarray | None = None  # the first chunk's hashes, until a second chunk comes
        self.slots: np.ndarray | None = None
        self.used = 0

    def suspects(self, rows: pl.DataFrame, key: list[str]) -> np.ndarray:
        """Mark every row whose key hash this run has seen (in an earlier chunk or earlier in ``rows``), and remember
        the rest. Returns a boolean mask of the suspects."""
        hashes = rows.select(pl.struct(key).hash()).to_series()
        if self.first is None and self.slots is None:
            self.first = hashes.to_numpy()
            return (~hashes.is_first_distinct()).to_numpy()
        if self.slots is None:
            self.slots = np.zeros(FIRST_SLOTS, np.uint64)
            self._add(self.first)
            self.first = None
        return self._add(hashes.to_numpy())

    def _add(self, hashes: np.ndarray) -> np.ndarray:
        from citylake.lake import hash_slots  # numba: loaded only by runs of more than one chunk

        while 2 * (self.used + hashes.size) > self.slots.size:
            self.slots = hash_slots.rehash(self.slots, np.zeros(2 * self.slots.size, np.uint64))
        seen = np.empty(hashes.size, np.bool_)
        self.used += hash_slots.insert(self.slots, hashes, seen)
        return seen

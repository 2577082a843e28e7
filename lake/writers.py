"""One writer at a time per table, and room on disk before a write starts (the lock itself: ``lake.storage``).

Delta appends never conflict with each other, so two processes that each check "which of my keys are new?" and then
append can both land the same key. A table's writers therefore take its lock (``fcntl.flock`` on a file beside the
table) from the check to the commit: the second writer checks against the first one's commit. The kernel releases
the lock when its holder dies, so a writer killed with SIGKILL never blocks the next one.

A full disk in the middle of a Delta write makes delta-rs's writer threads fail one after another (and panic); a
write whose data cannot fit is refused before it starts, with the space it needed.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from citylake.lake.errors import DiskFull

LOCKS = ".locks"  # inside each zone's directory, so a lock has the zone's owner and modes
# Parquet with zstd stores a chunk in well under its in-memory size; asking for the whole in-memory size (plus room
# for the commit and the log) errs on the side of refusing early rather than failing half-way.
HEADROOM_BYTES = 16 << 20


def ensure_room(table: str, where: Path, needed_bytes: int) -> None:
    """Refuse a write of about ``needed_bytes`` into ``where`` when the disk cannot hold it."""
    free = shutil.disk_usage(where).free
    if needed_bytes + HEADROOM_BYTES > free:
        raise DiskFull(table, str(where), needed_bytes + HEADROOM_BYTES, free)


def is_disk_full(err: BaseException) -> bool:
    """Whether a write failed because the disk filled up (an OSError, or delta-rs's error text)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(err) or "os error 28" in str(err)

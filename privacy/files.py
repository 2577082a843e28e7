"""Files of the steward zone: written whole or not at all, readable by their owner only."""

from __future__ import annotations

from pathlib import Path

from citylake.lake.storage import write_whole


def write_private(path: Path, text: str, /) -> None:
    """Replace ``path`` with ``text`` atomically (a file beside it, flushed, then renamed over it), mode 0600 from the
    start: a crash leaves the old file or the new one, and no moment where another user could read it."""
    write_whole(path, text, mode=0o600)

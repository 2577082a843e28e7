"""Files of the steward zone: written whole or not at all, readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str, /) -> None:
    """Replace ``path`` with ``text`` atomically (a file beside it, flushed, then renamed over it), mode 0600 from the
    start: a crash leaves the old file or the new one, and no moment where another user could read it."""
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, path)

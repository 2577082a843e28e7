"""citylake: a spatial-computing lakehouse and query engine for city data."""

from __future__ import annotations

from citylake.api import connect, frame, init_lake, open_lake, sql
from h3_index.errors import CitylakeError

__all__ = ["CitylakeError", "connect", "frame", "init_lake", "open_lake", "sql"]

"""citylake: a spatial-computing lakehouse and query engine for city data.

The rooms are subpackages: ``citylake.h3_index``, ``citylake.lake``, ``citylake.privacy``, ``citylake.ingestion``,
``citylake.queries``, ``citylake.analytics``, ``citylake.viz``; the Python API is ``citylake.api``, re-exported here.
Names load on first use, so ``import citylake`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citylake.api import connect, frame, init_lake, open_lake, sql
    from citylake.h3_index.errors import CitylakeError

_FROM_API = ("connect", "frame", "init_lake", "open_lake", "sql")
__all__ = ["CitylakeError", "connect", "frame", "init_lake", "open_lake", "sql"]


def __getattr__(name: str):
    if name in _FROM_API:
        from citylake import api

        return getattr(api, name)
    if name == "CitylakeError":
        from citylake.h3_index.errors import CitylakeError

        return CitylakeError
    raise AttributeError(f"module 'citylake' has no attribute {name!r}")

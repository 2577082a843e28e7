"""A pool of SQL workspaces per role, shared by the HTTP API and Flight SQL.

Making a workspace reads every table's Delta log (about 0.3 s on the demo lake), so the server keeps a few and lends
them out, one statement at a time: a DuckDB connection runs one statement at once. A workspace older than
``refresh_seconds`` is remade when it is next lent, so a new release shows within that time. When every workspace of a
role is busy, a caller waits up to the statement time limit, then is told the server is busy — a slow query holds one
workspace, never the others.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from citylake.lake import Lake
from citylake.queries.sandbox import Limits, Workspace


class ServerBusy(RuntimeError):
    """Every workspace is running someone's statement; try again in a moment."""


@dataclass
class _Lent:
    workspace: Workspace
    made: float


class WorkspacePool:
    def __init__(self, lake: Lake, /, *, limits: Limits, size: int = 4, refresh_seconds: float = 10.0) -> None:
        self.lake, self.limits, self.size, self.refresh_seconds = lake, limits, size, refresh_seconds
        self._idle: dict[str, queue.LifoQueue] = {}
        self._made: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, role: str, /):
        """A workspace of ``role`` (analyst or steward) for the block; given back after."""
        lent = self._take(role)
        try:
            yield lent.workspace
        finally:
            self._idle[role].put(lent)

    def _take(self, role: str) -> _Lent:
        with self._lock:
            idle = self._idle.setdefault(role, queue.LifoQueue())
            make = idle.empty() and self._made.get(role, 0) < self.size
            if make:
                self._made[role] = self._made.get(role, 0) + 1
        if make:
            return self._fresh(role)
        try:
            lent = idle.get(timeout=self.limits.seconds)
        except queue.Empty:
            raise ServerBusy(f"all {self.size} SQL workspaces stayed busy for {self.limits.seconds:g} s; try again in a moment") from None
        if time.monotonic() - lent.made > self.refresh_seconds:
            lent.workspace.con.close()
            return self._fresh(role)
        return lent

    def _fresh(self, role: str) -> _Lent:
        try:
            return _Lent(Workspace(self.lake, role=role, limits=self.limits), time.monotonic())
        except BaseException:
            with self._lock:
                self._made[role] -= 1
            raise

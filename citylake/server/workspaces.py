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
    def __init__(self, lake: Lake, /, *, limits: Limits, size: int = 4, refresh_seconds: float = 10.0, per_account: int | None = None,
                 max_result_bytes: int = 256 * 2**20) -> None:
        self.lake, self.limits, self.size, self.refresh_seconds = lake, limits, size, refresh_seconds
        self.max_result_bytes = max_result_bytes  # what a front may hand out of one answer
        self.per_account = per_account or max(1, size - 1)  # at least one workspace stays for everyone else
        self._running: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._turns = threading.Condition()
        self._idle: dict[str, queue.LifoQueue] = {}
        self._made: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, role: str, /, *, who: str | None = None):
        """A workspace of ``role`` (analyst or steward) for the block; given back after. One account (``who``) runs at most
        ``per_account`` statements at once, so it cannot hold every workspace of its role."""
        self._admit(who)
        try:
            lent = self._take(role)
            try:
                yield lent.workspace
            finally:
                self._idle[role].put(lent)
        finally:
            self._leave(who)

    def _admit(self, who: str | None) -> None:
        """Wait (at most a statement's time limit) until the account runs fewer than ``per_account`` statements."""
        if who is None:
            return
        with self._turns:
            if self._waiting.get(who, 0) >= self.per_account:  # waiting holds a server thread: a few at most per account
                raise ServerBusy(f"this account already has {self.per_account} statements running and {self.per_account} waiting; "
                                 "wait for one to finish")
            self._waiting[who] = self._waiting.get(who, 0) + 1
            turn = 2 * self.limits.seconds + 5  # a running statement ends within its limit, plus its start and its cancelling
            admitted = self._turns.wait_for(lambda: self._running.get(who, 0) < self.per_account, timeout=turn)
            self._waiting[who] -= 1
            if not admitted:
                raise ServerBusy(f"this account already runs {self.per_account} statements at once (the most one account may) and "
                                 f"none finished within {turn:g} s; wait for one to finish")
            self._running[who] = self._running.get(who, 0) + 1

    def _leave(self, who: str | None) -> None:
        if who is None:
            return
        with self._turns:
            self._running[who] -= 1
            self._turns.notify_all()

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

"""``citylake serve``: the lake behind one service — an HTTP API and planner web app (``app``) and Arrow Flight SQL for
analysts' tools (``flight``), both behind the accounts of ``citylake.privacy.accounts``. The process runs as the lake's OS
user and holds its key; nobody else needs a shell on the lake's host."""

from __future__ import annotations

from citylake.server.run import serve

__all__ = ["serve"]

"""Accounts of the served lake (``citylake serve``): a name, a role and, for a pilot, its area — reached by a bearer token.

A token is shown once, when the steward makes the account; the lake keeps only its SHA-256 (a token is 256 random bits, so
a fast hash is enough: nothing to guess), in ``accounts.json`` in the steward zone, which only the lake's OS user reads.
The server re-reads the file when it changes, so ``citylake users revoke`` takes effect on the next request.

Roles of an account, and what each reads through the server:
- planner: the releases (maps, footfall, flows, hotspots), the alerts, and the reports the steward published;
- analyst: that, and SQL over the shared tables and releases (the analyst workspace);
- pilot: its own area's releases, and uploads of its area's files, which get their first report;
- steward: everything; the server holds the lake's key.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from citylake.lake import Lake
from citylake.privacy.errors import Refused
from citylake.privacy.files import write_private

PLANNER, ANALYST, PILOT, STEWARD = "planner", "analyst", "pilot", "steward"
ACCOUNT_ROLES = (PLANNER, ANALYST, PILOT, STEWARD)
ACCOUNTS_FILE = "accounts.json"
TOKEN_PREFIX = "clk_"
TOKEN_SHAPE = re.compile(r"^clk_[A-Za-z0-9_-]{43}$")
NAME_SHAPE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created: str
    area: str | None = None  # a pilot's place_id once its boundary is uploaded

    @property
    def reads_sql(self) -> bool:
        return self.role in (ANALYST, STEWARD)


class Accounts:
    """The served lake's accounts. ``who(token)`` is the only way from a token to an account."""

    def __init__(self, lake: Lake, /) -> None:
        self.path = lake.steward_dir / ACCOUNTS_FILE
        self._seen: tuple[int, int] | None = None
        self._by_hash: dict[str, dict] = {}

    def add(self, name: str, role: str, /) -> str:
        """Make an account and return its token (shown once; the lake keeps only its hash)."""
        _check_name(name)
        if role not in ACCOUNT_ROLES:
            raise Refused(f"role {role!r} is not known; use one of {', '.join(ACCOUNT_ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._changing() as entries:
            if any(entry["name"] == name for entry in entries):
                raise Refused(f"an account named {name!r} exists; revoke it first (`citylake users revoke {name}`) or pick another name")
            created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
            entries.append({**asdict(Account(name, role, created)), "token_sha256": _digest(token)})
        return token

    def revoke(self, name: str, /) -> None:
        with self._changing() as entries:
            kept = [entry for entry in entries if entry["name"] != name]
            if len(kept) == len(entries):
                raise Refused(f"no account named {name!r}; `citylake users list` shows them")
            entries[:] = kept

    def set_area(self, name: str, area: str, /) -> None:
        """Bind a pilot to its area (the place its boundary became); a pilot's area is set once."""
        with self._changing() as entries:
            for entry in entries:
                if entry["name"] == name:
                    if entry.get("area") not in (None, area):
                        raise Refused(f"pilot {name} already has its area {entry['area']}; the steward makes a new account for "
                                      "another area")
                    entry["area"] = area

    def list(self) -> list[Account]:
        return [_account(entry) for entry in _read(self.path)]

    def who(self, token: str | None, /) -> Account | None:
        """The account a token belongs to, or None (no token, a malformed one, a revoked or unknown one)."""
        if not token or not TOKEN_SHAPE.match(token):
            return None
        self._reload()
        presented = _digest(token)
        for stored, entry in self._by_hash.items():
            if hmac.compare_digest(stored, presented):
                return _account(entry)
        return None

    def _reload(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._by_hash = None, {}
            return
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            self._by_hash = {entry["token_sha256"]: entry for entry in _read(self.path)}
            self._seen = (stat.st_mtime_ns, stat.st_size)

    @contextmanager
    def _changing(self):
        """The entries, written back atomically (mode 0600) when the block ends; one change at a time."""
        lock = os.open(self.path.with_name(".accounts.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _read(self.path)
            yield entries
            write_private(self.path, json.dumps(entries, indent=1))
        finally:
            os.close(lock)


def _read(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return []


def _account(entry: dict) -> Account:
    return Account(entry["name"], entry["role"], entry["created"], entry.get("area"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> None:
    if not NAME_SHAPE.match(name):
        raise Refused(f"account name {name!r}: use lower-case letters, digits, '.', '_' or '-' (up to 63), starting with a letter "
                      "or digit")

"""Pseudonyms for device identifiers: HMAC-SHA256 with a key held outside the lake,
truncated to 64 bits. The same device gets the same pseudonym in every batch; without the
key nobody can recompute it from a raw id, and the raw id is never written."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from citylake.h3_index import ownership
from citylake.privacy.errors import BadKeyFile, NoPseudonymKey

KEY_ENV = "CITYLAKE_PSEUDONYM_KEY"
KEY_BYTES = 32  # a full SHA-256 block of entropy
MIN_KEY_BYTES = 32  # a key given in $CITYLAKE_PSEUDONYM_KEY must be at least this long (made keys are 64 hex digits)


def create_key(key_file: str | Path, /, *, lake_root: str | Path | None = None) -> Path:
    """Create the key file (readable by its owner only) unless it exists; return its path."""
    path = Path(key_file).expanduser()
    if lake_root is not None and _inside(path, Path(lake_root)):
        raise BadKeyFile(str(path), "the key must live outside the lake directory; choose a path outside it")
    _check_above(path)
    if not path.exists():
        write_key_file(path, new_key())
    return path


def new_key() -> bytes:
    """A fresh key: 32 random bytes, as 64 hex digits."""
    return secrets.token_hex(KEY_BYTES).encode()


def write_key_file(path: Path, key: bytes, /) -> None:
    """``key`` into a new file at ``path``, readable by its owner only (refuses to overwrite)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.decode() + "\n")


def load_key(key_file: str | Path, /, *, env: Mapping[str, str] | None = None) -> bytes:
    """The key from $CITYLAKE_PSEUDONYM_KEY, else from the key file; refuses a key shorter than MIN_KEY_BYTES."""
    env = os.environ if env is None else env
    if env.get(KEY_ENV):
        key, where = env[KEY_ENV].encode(), f"${KEY_ENV}"
    else:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise NoPseudonymKey(str(path))
        key, where = _read_own_key(path), str(path)
    if len(key) < MIN_KEY_BYTES:
        raise BadKeyFile(where, f"a pseudonym key is at least {MIN_KEY_BYTES} bytes ({len(key)} given); `citylake init` makes one "
                                "of 32 random bytes")
    return key


def _read_own_key(path: Path) -> bytes:
    """The key file's key, if the file is this user's (or root's) and no one else can change or swap it
    (``h3_index.ownership``): a key file another user planted, can change, or can swap through a directory above it would
    let them know the key and reverse every pseudonym made with it. The file read is the file checked."""
    with path.open("rb") as file:
        status = os.fstat(file.fileno())
        if ownership.owned_by_another(status.st_uid) or ownership.owned_by_another(path.lstat().st_uid):
            raise BadKeyFile(str(path), "it belongs to another user, who would know the key; make your own with `citylake init` "
                                        "(or `citylake key rotate`)")
        why = ownership.others_can_change(status, file.fileno())
        if why:
            raise BadKeyFile(str(path), f"{why}; run chmod 600 {path}" + (
                f" and setfacl -b {path}" if "access control list" in why else ""))
        _check_above(path)
        return file.read().strip()


def _check_above(path: Path) -> None:
    above = ownership.untrusted_above(path)
    if above:
        raise BadKeyFile(str(path), f"another user could swap it ({above}); keep the key where only you (or root) can change "
                                    "the directories above it")


def pseudonym(raw_id: str, key: bytes) -> int:
    """The 64-bit pseudonym of one raw identifier (signed, to fit Delta's long)."""
    digest = hmac.new(key, raw_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def pseudonymise(ids: pl.Series, key: bytes) -> pl.Series:
    """Pseudonyms for a column of raw ids, hashing each distinct id once (and a device seen in recent chunks of a
    file not again: the same devices ping all day)."""
    raw = ids.cast(pl.String)
    distinct = raw.unique()
    hashed = pl.Series([_recent_pseudonym(v, key) for v in distinct.to_list()], dtype=pl.Int64)
    return raw.replace_strict(distinct, hashed, return_dtype=pl.Int64).alias(ids.name)


@functools.lru_cache(maxsize=1 << 18)  # ~40 MB at most, in this process only; never written anywhere
def _recent_pseudonym(raw_id: str, key: bytes) -> int:
    return pseudonym(raw_id, key)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False

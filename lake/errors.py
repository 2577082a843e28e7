"""Errors of the lake room."""

from __future__ import annotations

import os
from pathlib import Path

from citylake.h3_index.errors import CitylakeError
from citylake.h3_index.ownership import user_name

MARKER = "citylake.json"  # the lake's own file at its root: id, format and H3 resolutions


class LakeError(CitylakeError):
    """Root of the lake's errors."""


class LakeNotFound(LakeError, FileNotFoundError):
    def __init__(self, root: str) -> None:
        self.root = root
        super().__init__(f"no citylake lake at {root}; run `citylake init` (or pass --lake DIR / set CITYLAKE_LAKE)")


class UnknownTable(LakeError, KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"table {name!r} is not in the lake; tables are: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class TableNotEmpty(LakeError, FileExistsError):
    def __init__(self, name: str, rows: int) -> None:
        self.name, self.rows = name, rows
        super().__init__(
            f"table {name!r} already holds {rows:,} rows and writes refuse to clobber by default; "
            "pass mode='append' to add rows or mode='overwrite' to replace them"
        )


class BadWriteMode(LakeError, ValueError):
    def __init__(self, mode: object) -> None:
        super().__init__(f"write mode {mode!r} is not known; use 'error', 'append' or 'overwrite'")


class SchemaMismatch(LakeError, ValueError):
    def __init__(self, table: str, column: str, why: str) -> None:
        self.table, self.column = table, column
        super().__init__(f"table {table!r}, column {column!r}: {why}")


class NoSuchVersion(LakeError, ValueError):
    def __init__(self, table: str, as_of: object, why: str) -> None:
        self.table, self.as_of = table, as_of
        super().__init__(f"table {table!r} has no version as of {as_of!r}: {why}; see `citylake maintain history {table}`")


class ExtensionMissing(LakeError, ImportError):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(
            f"DuckDB extension {name!r} is not installed; pip install duckdb-extension-{name}=={version} "
            "(extensions come from PyPI, never downloaded at run time)"
        )


class NotWritable(LakeError, PermissionError):
    """A table, a lake, or the directory a new lake would go in, that this user may not change; the message says why
    (another user's, no write permission, a read-only file system) and so what to do."""

    def __init__(self, name: str | None, path: str, *, making: bool = False, reason: str | None = None) -> None:
        self.name, self.path = name, path
        root = _lake_root(Path(path))
        if making:
            what = f"cannot make a lake at {name}: {path} is not writable by you"
        elif name:
            what = f"table {name!r} is not writable by you ({path})"
        else:
            what = f"the lake at {root} is not writable by you" + ("" if str(root) == path else f" ({path})")
        super().__init__(f"{what}: {reason or _why_not_writable(Path(path), root, making=making)}")

    @classmethod
    def inside_lake(cls, path: str) -> NotWritable | None:
        """The error for a write refused at ``path`` (a file, or one to be made), when it is in a lake and not writable."""
        where = next((p for p in (Path(path), *Path(path).parents) if p.exists()), None)
        if where is None or not (_lake_root(where) / MARKER).is_file() or os.access(where, os.W_OK):
            return None
        return cls(None, str(where if where.is_dir() else where.parent))


class BadLakeFile(LakeError, ValueError):
    """The lake's ``citylake.json`` cannot be read as the lake's facts."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"the lake's file {path} is damaged ({why}); restore it from a backup of the lake: it records the "
                         "lake's id (which names its pseudonym key file) and the H3 resolutions its rows were written with")


class BadTimezone(LakeError, ValueError):
    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"time zone {value!r} is not known; give an IANA name such as Asia/Shanghai, Europe/Berlin or UTC")


class NotALakeDirectory(LakeError, NotADirectoryError):
    def __init__(self, root: str, path: str) -> None:
        self.root = root
        where = "is a file" if root == path else f"is inside {path}, which is a file"
        super().__init__(f"the lake {root} {where}, not a directory: pass --lake DIR (or set CITYLAKE_LAKE) with a directory, "
                         "new or a lake's")


def _lake_root(path: Path) -> Path:
    """The lake ``path`` is in (the nearest directory holding citylake.json), else ``path`` itself."""
    for candidate in (path, *path.parents):
        if (candidate / MARKER).is_file():
            return candidate
    return path


def _why_not_writable(path: Path, root: Path, *, making: bool) -> str:
    try:
        read_only_disk = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        owner = (path.lstat() if making else path.stat()).st_uid  # making: a link's own owner, who chose where it points
    except OSError:
        return "only the lake's owner changes the lake; run the command as the lake's owner"
    if read_only_disk:
        return "it is on a read-only file system; remount it read-write, or copy the lake to a writable disk"
    if making and owner != os.geteuid():
        return f"it belongs to {user_name(owner)}; make a lake only in a directory of your own (--lake DIR)"
    if making:
        return "choose a directory you can write (--lake DIR)"
    if owner != os.geteuid():
        who = user_name(owner)
        return f"it belongs to {who}, and only the lake's owner changes the lake; run the command as {who}"
    return f"it is read-only; make the lake writable again with `chmod -R u+w {root}`"


class DiskFull(LakeError, OSError):
    def __init__(self, name: str, path: str, needed: int, free: int) -> None:
        self.name, self.needed, self.free = name, needed, free
        super().__init__(f"not enough disk space for table {name!r} at {path}: this write needs about {_mb(needed)} and "
                         f"{_mb(free)} is free; free some space and rerun the same command: it resumes where it stopped")

    def __str__(self) -> str:  # OSError would print its args as a tuple
        return self.args[0]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 1024:,.0f} KB"


class BadLocation(LakeError, ValueError):
    def __init__(self, location: str, why: str) -> None:
        self.location = location
        super().__init__(f"lake location {location!r} is not usable: {why}")


class BadStorage(LakeError, ValueError):
    def __init__(self, setting: str, value: str, why: str) -> None:
        self.setting = setting
        super().__init__(f"{setting} = {value!r} is not usable: {why}")


class StorageRefused(LakeError, PermissionError):
    """The object store refused these credentials (the steward zone of a lake on S3 is kept from others this way)."""

    def __init__(self, lake: str, key: str, why: str) -> None:
        self.lake, self.key = lake, key
        super().__init__(f"the object store refused access to {lake}/{key} with the credentials given ({why}); check "
                         "storage.access_key_id / AWS_ACCESS_KEY_ID and the bucket's policy for this user")


class StorageUnreachable(LakeError, OSError):
    def __init__(self, lake: str, endpoint: str, why: str) -> None:
        self.lake, self.endpoint = lake, endpoint
        where = f" at {endpoint}" if endpoint else ""
        super().__init__(f"cannot reach the object store of {lake}{where} ({why}); check storage.endpoint "
                         "(or AWS_ENDPOINT_URL) and that the server is running")


class LocalOnly(LakeError, NotImplementedError):
    """A feature that keeps files in a local lake's directories, asked of a lake on object storage."""

    def __init__(self, lake: str, doing: str) -> None:
        self.lake = lake
        super().__init__(f"{doing} needs a lake on a local disk, and {lake} is on object storage; run it against a local "
                         "lake (`citylake watch`, `citylake serve` and the live feed keep their state beside the lake's files)")


class TableMoved(LakeError, RuntimeError):
    """A commit prepared on one version of a table found another writer's commit after it (``Lake.commit_files``)."""

    def __init__(self, table: str, expected: int, found: int) -> None:
        self.table, self.expected, self.found = table, expected, found
        super().__init__(f"table {table!r} moved from version {expected} to {found} while this run prepared its files; "
                         "its rows are checked again against the new version")

"""Errors of the lake room."""

from __future__ import annotations

from citylake.h3_index.errors import CitylakeError


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
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        super().__init__(f"table {name!r} is not writable by you ({path}): only the lake's owner changes the lake; "
                         "run the command as the lake's owner")


class DiskFull(LakeError, OSError):
    def __init__(self, name: str, path: str, needed: int, free: int) -> None:
        self.name, self.needed, self.free = name, needed, free
        super().__init__(f"not enough disk space for table {name!r} at {path}: this write needs about {_mb(needed)} and "
                         f"{_mb(free)} is free; free some space and rerun the same command: it resumes where it stopped")

    def __str__(self) -> str:  # OSError would print its args as a tuple
        return self.args[0]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 1024:,.0f} KB"

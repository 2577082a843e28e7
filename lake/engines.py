"""Engine access to the lake: DuckDB with spatial, delta and H3 loaded; Polars lazy frames.

Both read the Delta tables themselves (DuckDB's delta extension, Polars' ``scan_delta``),
so both honour the Delta log (deletes, time travel) and prune partitions by their values.
Extensions come from the ``duckdb-extension-*`` packages on PyPI: installed from the
package's file into a private extension directory with auto-install off, never downloaded.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import duckdb
import polars as pl

from citylake.h3_index.sql import register_h3
from citylake.lake.errors import ExtensionMissing, NoSuchVersion
from citylake.lake.lake import AsOf, Lake

EXTENSIONS = ("spatial", "delta")
DEFAULT_EXTENSION_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "citylake" / "duckdb-extensions"


def extension_file(name: str) -> Path:
    """The extension binary shipped inside the PyPI package ``duckdb-extension-<name>``."""
    version = duckdb.__version__
    try:
        package = import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise ExtensionMissing(name, version) from None
    path = Path(package.__file__).parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ExtensionMissing(name, version)
    return path


def connect(
    *,
    extension_dir: str | Path = DEFAULT_EXTENSION_DIR,
    memory_limit: str | None = None,
    threads: int | None = None,
    database: str = ":memory:",
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in UTC with spatial, delta and the H3 functions loaded."""
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    config["extension_directory"] = str(extension_dir)
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    con = duckdb.connect(database, config=config)
    load_extensions(con)
    con.execute("SET TimeZone = 'UTC'")
    register_h3(con, spatial=True)
    return con


_INSTALLING = threading.Lock()


def load_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...] = EXTENSIONS) -> None:
    """Install (once, from the PyPI packages' files) and load ``names``. Installs take turns — threads of this process and
    other processes alike — since a connection opened while another installs would find a half-written file."""
    if set(names) - _installed(con):
        with _INSTALLING, _install_lock(con):
            for name in sorted(set(names) - _installed(con)):
                con.execute(f"INSTALL '{extension_file(name)}'")
    for name in names:
        con.execute(f"LOAD {name}")


def _installed(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE installed").fetchall()}


@contextmanager
def _install_lock(con: duckdb.DuckDBPyConnection):
    folder = Path(con.execute("SELECT current_setting('extension_directory')").fetchone()[0])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".citylake-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def delta_scan_sql(lake: Lake, name: str, *, as_of: AsOf = None) -> str:
    """``delta_scan(...)`` of one table, pinned to a version when ``as_of`` is given."""
    path = lake.table_uri(name).replace("'", "''")
    version = lake.resolve_version(name, as_of)
    return f"delta_scan('{path}')" if version is None else f"delta_scan('{path}', version => {version})"


def create_views(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    *,
    as_of: str | dt.datetime | None = None,
    versions: dict[str, int] | None = None,
    tables: list[str] | None = None,
) -> None:
    """One view per lake table, named as the table: the lake as of a time, or per-table versions."""
    if isinstance(as_of, int):
        raise NoSuchVersion("*", as_of, "a version number belongs to one table; pass versions={'pings': 3} or a time")
    reach_storage(con, lake)
    for name in tables or lake.names:
        pinned = (versions or {}).get(name, as_of)
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM {delta_scan_sql(lake, name, as_of=pinned)}')


def reach_storage(con: duckdb.DuckDBPyConnection, lake: Lake, /) -> None:
    """Give a connection what it needs to read a lake on object storage: httpfs (from its PyPI package) and a secret
    scoped to the lake's prefix. Nothing for a local lake."""
    if lake.storage is None:
        return
    load_extensions(con, ("httpfs",))
    con.execute(lake.storage.duckdb_secret("citylake_lake", lake.uri))
    for setting in ("s3_access_key_id", "s3_secret_access_key", "s3_session_token"):  # httpfs copies them from the AWS
        con.execute(f"SET {setting} = ''")  # variables, where current_setting() would show them; the secret is enough


def duckdb_for(
    lake: Lake,
    /,
    *,
    as_of: str | dt.datetime | None = None,
    versions: dict[str, int] | None = None,
    **connect_options: object,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per lake table (as of a time, or at given table versions)."""
    con = connect(**connect_options)  # type: ignore[arg-type]
    create_views(con, lake, as_of=as_of, versions=versions)
    return con


def scan(lake: Lake, name: str, /, *, as_of: AsOf = None) -> pl.LazyFrame:
    """A Polars LazyFrame over one lake table (at ``as_of`` if given); filters prune partitions."""
    return pl.scan_delta(lake.table_uri(name), version=lake.resolve_version(name, as_of), storage_options=lake.storage_options)

"""Every citylake setting in one declarative table.

Each setting is read, lowest to highest precedence, from: its default, a ``citylake.toml``
(``--config FILE``, else ``$CITYLAKE_CONFIG``, else ``./citylake.toml``), its environment
variable, and a command-line flag where one exists. ``citylake settings`` shows the values
in force and where each came from; the README documents them all (a test checks that).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citylake.h3_index import ownership
from citylake.h3_index.errors import CitylakeError

# The defaults users see. The rooms keep their own for calls that pass no setting (a test holds the two equal);
# importing the rooms here would load DuckDB, deltalake and paho for every `citylake --help`.
DEFAULT_CELL_RES = 11  # lake.lake
DEFAULT_PARTITION_RES = 5  # lake.lake
DEFAULT_EXTENSION_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "citylake" / "duckdb-extensions"  # lake.engines
DEFAULT_BATCH_ROWS = 1_000_000  # ingestion.textfile
DEFAULT_BUFFER_MB = 1024  # ingestion.batch
COMMIT_MESSAGES, COMMIT_SECONDS, COMPACT_MINUTES = 5_000, 10, 10  # ingestion.mqtt
EARLIEST = dt.date(2000, 1, 1)  # ingestion.validate
WATCH_POLL_SECONDS, WATCH_LATENESS_MINUTES, WATCH_HISTORY_DAYS = 5, 2, 28  # analytics.watch (WatchConfig)
DEFAULT_ENGINE = "polars"  # queries.DEFAULT_ENGINE: the query engine when none is named (the faster; see there)


class SettingError(CitylakeError, ValueError):
    def __init__(self, name: str, value: object, source: str, why: str) -> None:
        self.name, self.value, self.source = name, value, source
        super().__init__(f"setting {name} = {value!r} (from {source}) is not valid: {why}")


def _resolution(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 15:
        raise ValueError("H3 resolutions run from 0 to 15")
    return number


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number >= 0")
    return number


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError("must be a date such as 2000-01-01") from None


def _clock(value: Any) -> str:
    if str(value) not in ("wall", "event"):
        raise ValueError("use wall (the machine's clock: live feeds) or event (the data's time: replays of past days)")
    return str(value)


def _auto_bool(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("use true, false or auto")


def _lease_seconds(value: Any) -> int:
    number = int(value)
    if not 3 <= number <= 3600:
        raise ValueError("give 3 to 3600 seconds")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError("must be text")
    return str(value)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any]
    env: str = ""
    secret: bool = False  # never shown: `citylake settings` says only whether it is set

    @property
    def env_var(self) -> str:
        return self.env or "CITYLAKE_" + self.name.upper().replace(".", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("lake", "./citylake-data", "Where the lake is: a directory, file:///DIR or s3://BUCKET/PREFIX (also the global --lake "
            "option).", _text, env="CITYLAKE_LAKE"),
    Setting("storage.endpoint", "", "Object store endpoint of an s3:// lake, e.g. http://127.0.0.1:8333 for SeaweedFS or MinIO; "
            "empty: $AWS_ENDPOINT_URL, else AWS S3.", _text),
    Setting("storage.region", "", "Region of an s3:// lake's bucket; empty: $AWS_REGION, else us-east-1.", _text),
    Setting("storage.access_key_id", "", "Access key of an s3:// lake; empty: $AWS_ACCESS_KEY_ID.", _text),
    Setting("storage.secret_access_key", "", "Secret key of an s3:// lake (never shown); empty: $AWS_SECRET_ACCESS_KEY.", _text,
            secret=True),
    Setting("storage.path_style", "auto", "Path-style S3 addressing: true, false, or auto (path-style when an endpoint is set).",
            _auto_bool),
    Setting("storage.allow_http", "auto", "Plain HTTP to the object store: true, false, or auto (when the endpoint is http://).",
            _auto_bool),
    Setting("storage.lock_lease_seconds", 30, "An s3:// lake's writer lock expires this long after its holder stops renewing it "
            "(a writer killed mid-write blocks others at most this long); 3 to 3600.", _lease_seconds),
    Setting(
        "h3.cell_resolution",
        DEFAULT_CELL_RES,
        "H3 resolution of the h3_cell stored on every row and of place covers. Fixed when the lake is made.",
        _resolution,
    ),
    Setting(
        "h3.partition_resolution",
        DEFAULT_PARTITION_RES,
        "H3 resolution of the partition cell of readings and pings. Fixed when the lake is made.",
        _resolution,
    ),
    Setting("lake.target_file_mb", 128, "File size `citylake maintain compact` (and the MQTT feed's background merges) aims for, in MiB.",
            _positive_int),
    Setting(
        "lake.vacuum_retention_hours",
        168,
        "`maintain vacuum` keeps files that versions younger than this still need (time travel window).",
        _positive_int,
    ),
    Setting(
        "duckdb.extension_directory",
        str(DEFAULT_EXTENSION_DIR),
        "Private directory DuckDB installs the PyPI-shipped extensions into (never downloads).",
        _text,
    ),
    Setting(
        "privacy.pseudonym_key_file",
        "",
        "The lake's pseudonym key (HMAC-SHA256, 32 random bytes), made by `citylake init`, never inside the lake; empty: "
        "~/.config/citylake/keys/<lake id>.key, one per lake. $CITYLAKE_PSEUDONYM_KEY, if set, is the key itself.",
        _text,
    ),
    Setting("ingest.batch_rows", DEFAULT_BATCH_ROWS, "Rows per ingestion commit; larger files stream in batches of this many.",
            _positive_int),
    Setting("ingest.timezone", "UTC", "Time zone of naive timestamps in input files (also --tz).", _text),
    Setting("ingest.buffer_mb", DEFAULT_BUFFER_MB, "Memory a file's ingest may fill with checked rows before committing them "
            "(one file per partition per commit): more gives fewer, larger files.", _positive_int),
    Setting("ingest.earliest", EARLIEST, "Rows timed before this date (YYYY-MM-DD) are quarantined as placeholders.", _date),
    Setting("mqtt.commit_messages", COMMIT_MESSAGES, "The MQTT feed commits after this many messages…", _positive_int),
    Setting("mqtt.commit_seconds", COMMIT_SECONDS, "…or after this many seconds, whichever comes first.", _positive_int),
    Setting("mqtt.compact_minutes", COMPACT_MINUTES, "The MQTT feed merges the partitions it touched that hold several files "
            "this often, in the background, then vacuums files removed more than lake.vacuum_retention_hours ago; 0: never.",
            _positive_int),
    Setting("sandbox.timeout_seconds", 60, "An analyst's SQL statement running longer than this is cancelled.", _positive_int),
    Setting("sandbox.memory_limit", "2GB", "Memory one analyst's SQL workspace may use, e.g. '2GB'.", _text),
    Setting("sandbox.threads", 2, "Threads one analyst's SQL workspace may use.", _positive_int),
    Setting("duckdb.memory_limit", "", "DuckDB memory limit such as '8GB'; empty means DuckDB's default (80% of RAM).", _text),
    Setting("duckdb.threads", 0, "DuckDB worker threads; 0 means one per core.", _positive_int),
    Setting("analysis.scheduler", "", "Dask scheduler (tls://HOST:PORT; plain tcp:// is refused; workers: `citylake worker`) for "
            "`citylake report`, `pilot`, `map hotspots` and `detect`; empty: a local cluster.", _text),
    Setting("analysis.tls_ca_file", "", "CA certificate of a tls:// Dask cluster (with analysis.tls_cert and analysis.tls_key; "
            "`citylake report --scheduler tls://…` and `citylake worker`).", _text),
    Setting("analysis.tls_cert", "", "This machine's certificate for a tls:// Dask cluster, signed by its CA.", _text),
    Setting("analysis.tls_key", "", "The private key of analysis.tls_cert.", _text),
    Setting("analysis.workers", 2, "Worker processes of the local Dask cluster.", _positive_int),
    Setting("analysis.worker_memory", "", "Memory limit per local Dask worker such as '2GB'; empty: Dask's share of RAM.", _text),
    Setting("watch.poll_seconds", WATCH_POLL_SECONDS, "`citylake watch` looks for newly landed pings and readings this often.",
            _positive_int),
    Setting("watch.lateness_minutes", WATCH_LATENESS_MINUTES, "`citylake watch` judges a 5-minute step once the newest data is "
            "this many minutes past it (room for late pings).", _positive_int),
    Setting("watch.history_days", WATCH_HISTORY_DAYS, "Days of history `citylake watch` learns what is usual from.", _positive_int),
    Setting("watch.released_clock", "wall", "When `citylake watch` asks the private test behind analysts' crowd alerts: wall "
            "(each quarter-hour 15 minutes after it by the machine's clock, whatever has landed: no device's timing decides "
            "what is counted) or event (by the data's own time: for replays of past days; the guarantee then assumes "
            "the feed's timing is honest).", _clock),
    Setting("serve.host", "127.0.0.1", "Address `citylake serve` listens on (also --host); 0.0.0.0 for every interface.", _text),
    Setting("serve.port", 8080, "Port of the HTTP API and web app (also --port).", _positive_int),
    Setting("serve.flight_port", 8081, "Port of Arrow Flight SQL (also --flight-port); 0: no Flight SQL.", _positive_int),
    Setting("serve.tls_cert", "", "PEM certificate: with serve.tls_key, HTTPS and Flight SQL over TLS (empty: plain, loopback use).",
            _text),
    Setting("serve.tls_key", "", "PEM private key of serve.tls_cert.", _text),
    Setting("serve.upload_mb", 512, "Largest file a pilot may upload; a larger one is refused mid-stream.", _positive_int),
    Setting("serve.pilot_max_km2", 100, "Largest area a pilot's boundary may cover, in km².", _positive_int),
    Setting("serve.sql_workspaces", 4, "SQL statements the server runs at once per role (each in its own workspace, under the "
            "sandbox.* limits); more wait, at most sandbox.timeout_seconds.", _positive_int),
    Setting("serve.max_rows", 1_000_000, "Most rows one SQL answer returns over HTTP; a larger answer is refused (aggregate, or "
            "add LIMIT).", _positive_int),
    Setting("serve.max_result_mb", 256, "Largest SQL answer (in memory) the server returns; a larger one is refused.", _positive_int),
    Setting("serve.cors_origins", "", "Comma-separated origins whose pages may call the API from a browser; empty: none (CORS off).",
            _text),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def shown(self, name: str) -> str:
        """The value as ``citylake settings`` prints it: a secret only as set or not."""
        value = self.values[name]
        if BY_NAME[name].secret:
            return "(set)" if value else ""
        return "auto" if value is None else str(value)

    def with_overrides(self, overrides: Mapping[str, Any], /) -> Settings:
        """These settings with some values replaced (as a command line would)."""
        values = {**self.values, **{n: _parse(BY_NAME[n], v, "command line") for n, v in overrides.items()}}
        return Settings(values, {**self.sources, **{n: "command line" for n in overrides}})


def load(
    *, config: str | Path | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings in force: defaults, then the TOML file, then environment, then ``overrides``."""
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}
    path = Path(config or env.get("CITYLAKE_CONFIG") or "citylake.toml")
    if config or path.is_file():
        for name, value in _read_toml(path).items():
            values[name], sources[name] = value, str(path)
    for s in SETTINGS:
        if s.env_var in env:
            values[s.name], sources[s.name] = env[s.env_var], f"${s.env_var}"
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name], sources[name] = value, "command line"
    return Settings({n: _parse(BY_NAME[n], v, sources[n]) for n, v in values.items()}, sources)


def _parse(setting: Setting, value: Any, source: str) -> Any:
    try:
        return setting.parse(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise SettingError(setting.name, "(not shown)" if setting.secret else value, source, str(err)) from None


def _check_trusted(path: Path, status: os.stat_result, descriptor: int) -> None:
    """A settings file another OS user can change could point the lake, its object store or the key file elsewhere (a
    ``citylake.toml`` left in a shared working directory, say): refuse one owned by another user (root excepted), one
    others can change (``h3_index.ownership``: mode, a group not the owner's own, an access control list), anything but a
    regular file, and one another user could swap through a directory or link above it (ssh's StrictModes rule).
    ``status`` is the opened file's: what is read is what was checked."""
    if not stat.S_ISREG(status.st_mode):
        raise SettingError("config", str(path), str(path), "not a regular file; give a settings file (--config FILE)")
    link = path.lstat()
    if ownership.owned_by_another(status.st_uid) or (path.is_symlink() and ownership.owned_by_another(link.st_uid)):
        owner = status.st_uid if ownership.owned_by_another(status.st_uid) else link.st_uid
        raise SettingError("config", str(path), str(path), f"it belongs to {ownership.user_name(owner)}, not you, and a settings "
                                                          "file another user controls could point your lake, object store or "
                                                          "key elsewhere; use a file of your own (--config FILE)")
    why = ownership.others_can_change(status, descriptor)
    if why:
        fix = f"setfacl -b {path}" if "access control list" in why else f"chmod go-w {path}"
        raise SettingError("config", str(path), str(path), f"{why}, and it could point your lake, object store or key "
                                                          f"elsewhere; run {fix}")
    above = ownership.untrusted_above(path)
    if above:
        raise SettingError("config", str(path), str(path), f"another user could swap it ({above}); keep settings where only "
                                                          "you (or root) can change the directories above them")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        # non-blocking: a FIFO planted as the file would hang the open (refused below: not a regular file)
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            _check_trusted(path, os.fstat(file.fileno()), file.fileno())
            document = tomllib.loads(file.read().decode())
    except FileNotFoundError:
        raise SettingError("config", str(path), "--config", "no such file") from None
    except UnicodeDecodeError:
        raise SettingError("config", str(path), str(path), "not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingError("config", str(path), str(path), f"not valid TOML ({err})") from None
    flat = dict(_flatten(document))
    for name in flat:
        if name not in BY_NAME:
            raise SettingError(name, "(not shown)", str(path), f"no such setting; known: {', '.join(BY_NAME)}")  # a mistyped secret
    return flat


def _flatten(document: Mapping[str, Any], prefix: str = ""):
    for key, value in document.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value

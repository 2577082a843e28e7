"""Where a lake lives: a local directory, or a prefix of a bucket on an S3-compatible object store.

A lake's location is a URI (``/srv/lake``, ``file:///srv/lake``, ``s3://bucket/prefix``). ``locate`` turns one into a
``Location``, which gives the engines each table's URI and storage options (deltalake, Polars and DuckDB all read through
the Delta log), and the lake its few files of its own (``citylake.json``, the steward zone's policy) and its writer locks.

On a disk a table's writer lock is ``flock`` on a file beside it. An object store has no ``flock``: the lock is an object
made with a conditional put (``If-None-Match: *``: of two writers only one creates it), holding an expiry its holder renews
while it works; a writer killed while holding it blocks the next one until the lease runs out (``storage.lock_lease_seconds``),
never for ever. Delta's own commits on S3 use the same conditional put, so no commit is lost either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from citylake.lake.errors import BadLocation, BadStorage, StorageRefused, StorageUnreachable

# The usual AWS environment variables, read when a storage setting is left empty (as the AWS tools read them).
AWS_ENV = {
    "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
}
DEFAULT_REGION = "us-east-1"  # what S3-compatible servers (SeaweedFS, MinIO) accept when none is configured
DEFAULT_LEASE_SECONDS = 30
MAX_LEASE_SECONDS = 3600  # a lease object claiming more is damaged or forged, and is treated as lapsed
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket names
PREFIX_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=-]*$")  # no "..", ".", "%", spaces: one spelling per prefix everywhere


@dataclass(frozen=True)
class Storage:
    """How to reach an object store: endpoint, region, keys, path-style addressing and plain HTTP. Secrets stay out of
    ``repr`` (and so out of logs, Dask's dashboard and error messages). Empty fields are filled from the AWS variables."""

    endpoint: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    path_style: bool | None = None  # None: path-style when an endpoint is given (MinIO, SeaweedFS), else virtual-hosted
    allow_http: bool | None = None  # None: when the endpoint is http://
    lock_lease_seconds: int = DEFAULT_LEASE_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **given: object) -> Storage:
        """``given`` settings, each empty one filled from its AWS environment variable."""
        env = os.environ if env is None else env
        values = {name: value for name, value in given.items() if value not in ("", None)}
        for name, variables in AWS_ENV.items():
            if name not in values:
                values[name] = next((env[v] for v in variables if env.get(v)), "")
        return cls(**values)  # type: ignore[arg-type]

    def checked(self) -> Storage:
        """Refuse an endpoint that is not ``http(s)://HOST[:PORT]`` (a port out of range, a query, a password in it)."""
        if not self.endpoint:
            return self
        try:
            parsed = urlparse(self.endpoint)
            port_ok = parsed.port is None or 0 < parsed.port < 65536
        except ValueError:
            port_ok = False
        else:
            if parsed.scheme in ("http", "https") and parsed.hostname and port_ok and not (parsed.query or parsed.fragment
                                                                                            or parsed.username or parsed.path.strip("/")):
                return self
        shown = self.endpoint.split("@")[-1]
        raise BadStorage("storage.endpoint", shown, "give http://HOST:PORT or https://HOST[:PORT], with no path, query or password")

    @property
    def uses_path_style(self) -> bool:
        return bool(self.endpoint) if self.path_style is None else self.path_style

    @property
    def uses_http(self) -> bool:
        return self.endpoint.startswith("http://") if self.allow_http is None else self.allow_http

    def delta_options(self) -> dict[str, str]:
        """Storage options of deltalake and Polars' ``scan_delta`` (both the Rust ``object_store``)."""
        options = {"AWS_REGION": self.region or DEFAULT_REGION,
                   "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": str(not self.uses_path_style).lower(),
                   "AWS_ALLOW_HTTP": str(self.uses_http).lower()}
        for key, value in (("AWS_ENDPOINT_URL", self.endpoint), ("AWS_ACCESS_KEY_ID", self.access_key_id),
                           ("AWS_SECRET_ACCESS_KEY", self.secret_access_key), ("AWS_SESSION_TOKEN", self.session_token)):
            if value:
                options[key] = value
        return options

    def duckdb_secret(self, name: str, scope: str) -> str:
        """A ``CREATE SECRET`` for DuckDB's httpfs, scoped to the lake's bucket prefix."""
        parts = {"TYPE": "s3", "REGION": _sql(self.region or DEFAULT_REGION), "SCOPE": _sql(scope),
                 "URL_STYLE": _sql("path" if self.uses_path_style else "vhost"), "USE_SSL": str(not self.uses_http).lower()}
        if self.endpoint:
            parts["ENDPOINT"] = _sql(urlparse(self.endpoint).netloc or self.endpoint)
        for key, value in (("KEY_ID", self.access_key_id), ("SECRET", self.secret_access_key), ("SESSION_TOKEN", self.session_token)):
            if value:
                parts[key] = _sql(value)
        return f"CREATE OR REPLACE SECRET {name} (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"


def _sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def locate(root: str | os.PathLike, storage: Storage | None = None, /) -> Location:
    """The location a lake URI names: ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    text = os.fspath(root)
    if text.startswith("file://"):
        return LocalLocation(Path(unquote(urlparse(text).path)))
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://"):].partition("/")
        if not BUCKET.match(bucket):
            raise BadLocation(text, "name the bucket (3-63 lowercase letters, digits, dots, hyphens): s3://BUCKET/PREFIX")
        parts = [part for part in prefix.split("/") if part] if prefix.strip("/") else []
        if prefix.strip("/") and (any(not PREFIX_PART.match(part) for part in parts) or "//" in prefix.strip("/")):
            raise BadLocation(text, "write the prefix plainly: folders of letters, digits, '_', '-', '.', '=' (no '..', '.', '%' or "
                                    "spaces, which stores and engines spell differently)")
        return ObjectLocation(bucket, "/".join(parts), (storage or Storage.from_env()).checked())
    if "://" in text and not text.startswith(("/", ".")):
        scheme = text.split("://", 1)[0]
        raise BadLocation(text, f"{scheme}:// is not supported; give a directory, file:///DIR or s3://BUCKET/PREFIX "
                                "(S3-compatible stores: set storage.endpoint)")
    return LocalLocation(Path(text))


class Location:
    """A lake's root: each table's URI for the engines, and the lake's own files and locks."""

    uri: str
    local: bool

    def table_uri(self, relative: str) -> str:
        raise NotImplementedError

    @property
    def storage_options(self) -> dict[str, str] | None:
        return None

    def read_text(self, relative: str) -> str | None:
        """A file's text, or None when there is none (refused reads raise ``PermissionError``)."""
        raise NotImplementedError

    def write_text(self, relative: str, text: str, /, *, private: bool) -> None:
        """Replace a file whole: readers see the old text or the new, never part."""
        raise NotImplementedError

    def readable(self, relative: str) -> bool:
        """Whether this process may read what is under ``relative`` (a zone's directory)."""
        raise NotImplementedError

    def write_bytes(self, relative: str, data: bytes, /, *, private: bool) -> None:
        """Put a file whole (a data file a commit will name, a staged part of a run), its folders made as needed."""
        raise NotImplementedError

    def read_bytes(self, relative: str) -> bytes:
        raise NotImplementedError

    def delete_tree(self, relative: str) -> None:
        """Remove everything under ``relative`` (a run's staging area); nothing when there is none."""
        raise NotImplementedError

    def folders(self, relative: str) -> list[str]:
        """The names of the folders directly under ``relative`` (none when it does not exist)."""
        raise NotImplementedError

    def lock(self, relative: str) -> contextlib.AbstractContextManager[None]:
        """Hold the writer lock named ``relative`` (waiting for the current holder)."""
        raise NotImplementedError

    def probe_writable(self) -> None:
        """Raise (``StorageRefused``) now when this user may not write the lake; nothing on a disk (file modes say it)."""


class LocalLocation(Location):
    """A lake in a directory: OS file modes keep the steward zone its owner's."""

    local = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def table_uri(self, relative: str) -> str:
        return str(self.root / relative)

    def read_text(self, relative: str) -> str | None:
        try:
            return (self.root / relative).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, relative: str, text: str, /, *, private: bool) -> None:
        write_whole(self.root / relative, text, mode=0o600 if private else 0o644)

    def readable(self, relative: str) -> bool:
        return os.access(self.root / relative, os.R_OK | os.X_OK)

    def write_bytes(self, relative: str, data: bytes, /, *, private: bool) -> None:
        path = self.root / relative
        missing = [folder for folder in reversed(path.relative_to(self.root).parents) if not (self.root / folder).is_dir()]
        for folder in missing:  # each level with the zone's mode (mkdir's parents=True gives the in-between ones the umask's)
            (self.root / folder).mkdir(exist_ok=True)
            os.chmod(self.root / folder, 0o700 if private else 0o755)
        write_whole(path, data, mode=0o600 if private else 0o644)

    def read_bytes(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def delete_tree(self, relative: str) -> None:
        shutil.rmtree(self.root / relative, ignore_errors=True)

    def folders(self, relative: str) -> list[str]:
        """(Never through a symbolic link: what is listed here may be deleted with ``delete_tree``.)"""
        where = self.root / relative
        if any((self.root / part).is_symlink() for part in [relative, *map(str, Path(relative).parents)][:-1]):
            return []
        return sorted(p.name for p in where.iterdir() if p.is_dir() and not p.is_symlink()) if where.is_dir() else []

    @contextlib.contextmanager
    def lock(self, relative: str) -> Iterator[None]:
        path = self.root / relative
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel releases it when its holder dies, so SIGKILL never blocks the next
            yield
        finally:
            os.close(fd)


def write_whole(path: Path, text: str | bytes, /, *, mode: int) -> None:
    """Replace ``path`` with ``text`` atomically (a file beside it, flushed, then renamed over it), with ``mode`` from the
    start: a crash leaves the old file or the new one, and a private file is never readable by others, even briefly."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb" if isinstance(text, bytes) else "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(staged, mode)  # the umask may have narrowed it
    os.replace(staged, path)


class ObjectLocation(Location):
    """A lake under ``s3://bucket/prefix``. Who may read a zone is the store's access policy (e.g. the steward's keys may
    read ``steward/``, an analyst's only ``tables/`` and ``releases/``): citylake asks the store and reports its refusal."""

    local = False

    def __init__(self, bucket: str, prefix: str, storage: Storage) -> None:
        from obstore.store import S3Store

        self.bucket, self.prefix, self.storage = bucket, prefix, storage
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        config = {"region": storage.region or DEFAULT_REGION, "virtual_hosted_style_request": not storage.uses_path_style,
                  "allow_http": storage.uses_http}
        for key, value in (("endpoint", storage.endpoint), ("access_key_id", storage.access_key_id),
                           ("secret_access_key", storage.secret_access_key), ("token", storage.session_token)):
            if value:
                config[key] = value
        self.store = S3Store(bucket, prefix=prefix or None, **config,
                             client_options={"connect_timeout": "5s", "timeout": "60s"},
                             retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30),
                                           "backoff": {"init_backoff": timedelta(seconds=0.1), "max_backoff": timedelta(seconds=2),
                                                       "base": 2}})

    def table_uri(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    @property
    def storage_options(self) -> dict[str, str]:
        return self.storage.delta_options()

    def read_text(self, relative: str) -> str | None:
        import obstore

        try:
            return bytes(self._call(obstore.get, relative).bytes()).decode("utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, relative: str, text: str, /, *, private: bool) -> None:
        import obstore

        self._call(obstore.put, relative, text.encode("utf-8"))  # a PUT is whole or nothing

    def write_bytes(self, relative: str, data: bytes, /, *, private: bool) -> None:
        import obstore

        self._call(obstore.put, relative, data)

    def read_bytes(self, relative: str) -> bytes:
        import obstore

        return bytes(self._call(obstore.get, relative).bytes())

    def delete_tree(self, relative: str) -> None:
        import obstore

        listed = self._call(lambda store, prefix: obstore.list(store, prefix=prefix).collect(), relative.rstrip("/") + "/")
        paths = [item["path"] for item in listed]
        for start in range(0, len(paths), 1000):
            self._call(lambda store, batch: obstore.delete(store, batch), paths[start:start + 1000])

    def folders(self, relative: str) -> list[str]:
        import obstore

        listed = self._call(lambda store, prefix: obstore.list_with_delimiter(store, prefix), relative.rstrip("/") + "/")
        return sorted(prefix.rstrip("/").rsplit("/", 1)[-1] for prefix in listed["common_prefixes"])

    def probe_writable(self) -> None:
        import obstore

        probe = f".citylake-probe-{secrets.token_hex(6)}"
        self._call(obstore.put, probe, b"")
        self._call(obstore.delete, probe)

    def readable(self, relative: str) -> bool:
        import obstore

        try:
            self._call(lambda store, prefix: obstore.list(store, prefix=prefix, chunk_size=1).collect(), relative + "/")
        except PermissionError:
            return False
        return True

    def lock(self, relative: str) -> contextlib.AbstractContextManager[None]:
        return LeaseLock(self, relative)

    def _call(self, operation, relative: str, *args, **kwargs):
        """An object-store call, its errors as citylake's: missing → FileNotFoundError, refused → StorageRefused (a
        PermissionError), unreachable → StorageUnreachable, each naming the lake and the fix."""
        from obstore import exceptions as E

        try:
            return operation(self.store, relative, *args, **kwargs)
        except E.NotFoundError:
            raise FileNotFoundError(f"{self.uri}/{relative}") from None
        except (E.PermissionDeniedError, E.UnauthenticatedError) as err:
            raise StorageRefused(self.uri, relative, _first_line(err)) from None
        except (E.AlreadyExistsError, E.PreconditionError):
            raise
        except E.BaseError as err:
            if "403" in str(err) or "AccessDenied" in str(err) or "InvalidAccessKeyId" in str(err) or "SignatureDoesNotMatch" in str(err):
                raise StorageRefused(self.uri, relative, _first_line(err)) from None
            raise StorageUnreachable(self.uri, self.storage.endpoint, _first_line(err)) from None


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300]


class LeaseLock:
    """A writer lock on an object store: an object created only if absent, holding its holder's id and an expiry that a
    thread renews every third of the lease (a conditional put on the object's ETag, so a holder that lost it notices).
    A holder killed with SIGKILL stops renewing; the next writer takes the lock once the expiry has passed. Expiries are
    the writers' clocks: writers on several machines need them in step (NTP), well within the lease."""

    def __init__(self, location: ObjectLocation, relative: str) -> None:
        self.location, self.relative = location, relative
        self.lease = min(max(3, location.storage.lock_lease_seconds), MAX_LEASE_SECONDS)
        self.holder = secrets.token_hex(8)
        self.etag: str | None = None
        self.lost = False  # another writer took the lease while this one was paused (its fenced commit then fails)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> None:
        wait = 0.05
        while not self._try_take():
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
        self._renewer = threading.Thread(target=self._renew, name="citylake-lease", daemon=True)
        self._renewer.start()

    def __exit__(self, *exc: object) -> None:
        import obstore

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with contextlib.suppress(Exception):  # a lock that expired and was taken is not ours to delete
            if self._current() == (self.holder, self.etag):
                self.location._call(obstore.delete, self.relative)

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "pid": os.getpid(), "expires": time.time() + self.lease}).encode()

    def _try_take(self) -> bool:
        import obstore
        from obstore import exceptions as E

        try:
            self.etag = self.location._call(obstore.put, self.relative, self._body(), mode="create")["e_tag"]
            return True
        except E.AlreadyExistsError:
            pass
        try:
            got = self.location._call(obstore.get, self.relative)
        except FileNotFoundError:
            return False  # released between the two calls: try again at once
        if _expiry_of(bytes(got.bytes())) > time.time():
            return False
        try:  # expired: take it over, unless another writer did first (the ETag changed)
            self.etag = self.location._call(obstore.put, self.relative, self._body(), mode={"e_tag": got.meta["e_tag"]})["e_tag"]
            return True
        except (E.PreconditionError, E.AlreadyExistsError):
            return False

    def _renew(self) -> None:
        import obstore
        from obstore import exceptions as E

        while not self._stop.wait(self.lease / 3):
            try:
                self.etag = self.location._call(obstore.put, self.relative, self._body(), mode={"e_tag": self.etag})["e_tag"]
            except (E.PreconditionError, FileNotFoundError):
                self.lost = True  # taken over after this holder's lease ran out: stop renewing someone else's lock
                return
            except Exception:  # the store away for a moment: try again at the next third of the lease
                continue

    def _current(self) -> tuple[str, str | None]:
        import obstore

        got = self.location._call(obstore.get, self.relative)
        return _lease_of(bytes(got.bytes())).get("holder", ""), got.meta["e_tag"]


def _lease_of(body: bytes) -> dict:
    try:
        lease = json.loads(body)
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) else {}


def _expiry_of(body: bytes) -> float:
    """When a lease object lapses; a damaged or forged one (no finite time, or further ahead than any lease) at once."""
    expires = _lease_of(body).get("expires")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        return 0.0
    return expires if expires <= time.time() + MAX_LEASE_SECONDS + 60 else 0.0

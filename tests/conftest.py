"""Shared fixtures: throwaway lakes, seeded data, a private DuckDB extension directory."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings

from citylake.h3_index import latlng_to_cells
from citylake.lake import Lake

settings.register_profile("default", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TEST_KEY = "citylake-test-key-0123456789abcdef-0123456789abcdef"  # a steward's key for test lakes (at least 32 bytes)


def with_key(lake: Lake, key: str = TEST_KEY) -> Lake:
    """Make ``key`` the lake's pseudonym key (as `citylake init` does with $CITYLAKE_PSEUDONYM_KEY) with the default policy."""
    from citylake.privacy import Policy, key_check, write_policy

    write_policy(lake, Policy().with_epoch(key_check(key.encode())))
    return lake


@pytest.fixture(scope="session", autouse=True)
def _private_extension_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests install DuckDB extensions from the PyPI packages into their own directory."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    # ...and keep their pseudonym key out of the developer's home
    os.environ["CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE"] = str(tmp_path_factory.mktemp("keys") / "pseudonym.key")
    os.environ.pop("CITYLAKE_PSEUDONYM_KEY", None)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.init(tmp_path / "lake")


def make_pings(n: int, *, seed: int = 0, days: int = 3, cell_res: int = 11, start: str = "2026-11-01") -> pa.Table:
    """Pings spread over a ~50 km city and ``days`` days, seeded."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(31.0, 31.5, n)
    lon = rng.uniform(121.2, 121.8, n)
    ts = np.datetime64(start, "us") + rng.integers(0, days * 86400 * 10**6, n).astype("timedelta64[us]")
    return pa.table({
        "device_id": rng.integers(0, 2**62, n),
        "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
        "lat": lat,
        "lon": lon,
        "accuracy_m": rng.uniform(3, 40, n).astype(np.float32),
        "h3_cell": latlng_to_cells(lat, lon, cell_res),
    })


@pytest.fixture
def pings() -> pa.Table:
    return make_pings(20_000)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


class Mosquitto:
    """A real Mosquitto broker on a free loopback port; ``restart`` stops it (SIGTERM: a persistent one saves its queued
    messages and sessions) and starts it again on the same port."""

    def __init__(self, where: Path, *, persistence: bool) -> None:
        import shutil
        import socket

        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(self.binary):
            pytest.fail("mosquitto is not installed; run `make system-deps` (apt-get install mosquitto)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = where / "mosquitto.conf"
        stored = f"persistence true\npersistence_location {where}/\nautosave_interval 1\n" if persistence else "persistence false\n"
        if persistence and os.geteuid() == 0:  # else mosquitto becomes its own user, who may not write the test's directory
            stored += "user root\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n{stored}")
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        import socket
        import subprocess
        import time

        self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not start: {self.process.stdout.read().decode()[:500]}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self, *, down_s: float = 0.5) -> None:
        import time

        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A real Mosquitto broker on a free loopback port, for the whole session; stopped after."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False)
    yield broker.url
    broker.stop()


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) on free loopback ports, for the whole session; stopped after."""
    import seaweed

    server = seaweed.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def restartable_mosquitto(tmp_path_factory):
    """A broker of the test's own that keeps queued messages and sessions on disk, so it may be restarted mid-stream."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-persistent"), persistence=True)
    yield broker
    broker.stop()


ALL_FEEDS = ("places", "sensors", "readings", "pings")


def generated_city_lake(root: Path, *, devices: int, days: int, seed: int, feeds: tuple[str, ...] = ALL_FEEDS) -> Lake:
    """A sample city generated under ``root / "city"`` and ingested into ``root / "lake"`` through the ingestion functions."""
    from citylake.ingestion.city import generate_city
    from citylake.ingestion.iot import ingest_readings, ingest_sensors
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places

    generate_city(root / "city", devices=devices, days=days, seed=seed)
    lake = with_key(Lake.init(root / "lake"))
    steps = {"places": lambda: ingest_places(lake, root / "city" / "places.geojson"),
             "sensors": lambda: ingest_sensors(lake, root / "city" / "sensors.csv"),
             "readings": lambda: ingest_readings(lake, root / "city" / "readings.csv"),
             "pings": lambda: ingest_pings(lake, root / "city" / "pings.csv", key=TEST_KEY.encode())}
    for feed in feeds:
        steps[feed]()
    return lake


def captured_progress(monkeypatch: pytest.MonkeyPatch, module, *, width: int = 160):
    """What ``module``'s progress bars draw, as a terminal would show it (a StringIO to read after the work)."""
    import io

    from rich.console import Console

    screen, real = io.StringIO(), module.progress_bar

    def on_screen(title, *columns, progress):
        bar = real(title, *columns, progress=progress)
        bar.live.console = Console(file=screen, force_terminal=True, width=width)
        return bar

    monkeypatch.setattr(module, "progress_bar", on_screen)
    return screen


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (PEM files in ``folder``), for the TLS tests."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


# -- a park and a plaza inside it (the live watcher's tests) ----------------------------------------------------------------
PARK = (121.40, 31.20, 121.41, 31.21)  # lon/lat box, ~1 km
PLAZA = (121.404, 31.204, 121.406, 31.206)


def box_polygon(x0, y0, x1, y1) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def quiet_park_days(rng: np.random.Generator, days: list[dt.date]) -> list[tuple]:
    """Every quarter-hour: 3 devices somewhere in the park outside the plaza, 1 in the plaza."""
    rows = []
    for day in days:
        for q in range(96):
            at = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(minutes=15 * q + 3)
            rows += [(f"walker-{rng.integers(50)}", at, 31.201 + 0.002 * i, 121.401) for i in range(3)]
            rows.append((f"sitter-{rng.integers(20)}", at, 31.205, 121.405))
    return rows


def plaza_crowd(start: dt.datetime, devices: int) -> list[tuple]:
    """``devices`` distinct devices in the plaza, each pinging every 5 minutes for 30 minutes."""
    return [(f"crowd-{d}", start + dt.timedelta(minutes=m), 31.2045 + 0.001 * (d % 10) / 10, 121.4045 + 0.001 * (d // 10) / 10)
            for d in range(devices) for m in range(0, 30, 5)]


def write_pings_csv(path: Path, rows: list[tuple]) -> Path:
    pl.DataFrame(rows, schema=["device_id", "ts", "lat", "lon"], orient="row").with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(path)
    return path


@pytest.fixture
def park_lake(tmp_path) -> Lake:
    """A park with a plaza inside, and four quiet weekdays of pings (Monday 2026-11-02 to Thursday)."""
    from citylake.ingestion.location import ingest_pings
    from citylake.ingestion.map import ingest_places

    lake = with_key(Lake.init(tmp_path / "lake"))
    features = [{"type": "Feature", "geometry": box_polygon(*box), "properties": {"id": name, "category": "park"}}
                for name, box in (("park", PARK), ("plaza", PLAZA))]
    (tmp_path / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    ingest_places(lake, tmp_path / "places.geojson")
    history = [dt.date(2026, 11, 2) + dt.timedelta(days=d) for d in range(4)]  # Monday to Thursday
    quiet = quiet_park_days(np.random.default_rng(0), history)
    ingest_pings(lake, write_pings_csv(tmp_path / "history.csv", quiet), key=TEST_KEY.encode())
    return lake

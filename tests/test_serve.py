"""`citylake serve` as users and attackers meet it: a real server process on loopback, reached with httpx and curl.

Every endpoint needs a token (401), a role that may not use it gets 403, an analyst never reaches raw pings, static routes
refuse traversal, an oversized upload is cut off mid-stream, a slow query is cancelled at its limit while others answer,
the log holds no token or query string, and a pilot gets its first report and sees only its area's releases."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import shapely
import shapely.geometry
from conftest import TEST_KEY, generated_city_lake, self_signed

from citylake.lake import registry, scan
from citylake.privacy import Accounts, Policy
from citylake.queries import release as R

pytestmark = pytest.mark.integration
ROLES = ("planner", "analyst", "pilot", "steward")
# who may call what: written out here, not read from the server
EVERYONE = set(ROLES)
READERS = {"planner", "analyst", "pilot", "steward"}
ROUTES = {
    ("GET", "/api/health"): EVERYONE,
    ("GET", "/api/me"): EVERYONE,
    ("GET", "/api/tables"): EVERYONE,
    ("GET", "/api/places"): READERS,
    ("GET", "/api/footfall"): READERS,
    ("GET", "/api/od"): READERS,
    ("GET", "/api/hotspots"): READERS,
    ("GET", "/api/alerts"): READERS,
    ("GET", "/api/maps/footfall"): READERS,
    ("POST", "/api/sql"): {"analyst", "steward"},
    ("GET", "/api/reports"): {"planner", "analyst", "steward"},
    ("GET", "/api/reports/x.html"): {"planner", "analyst", "steward"},
    ("POST", "/api/reports"): {"steward"},
    ("GET", "/api/jobs/reports"): {"steward"},
    ("PUT", "/api/pilot/files/boundary"): {"pilot"},
    ("POST", "/api/pilot/report"): {"pilot"},
    ("GET", "/api/pilot/report"): {"pilot"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A `citylake serve` subprocess on the lake, and a token per role."""

    def __init__(self, lake_root: Path, log: Path, *, env: dict | None = None, scheme: str = "http", verify=True,
                 flight: bool = False) -> None:
        self.port = free_port()
        self.flight_port = free_port() if flight else 0
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": TEST_KEY, "COLUMNS": "200", **(env or {})}
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "citylake.cli", "--lake", str(lake_root), "serve", "--port", str(self.port),
                 "--flight-port", str(self.flight_port)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.client = httpx.Client(base_url=self.url, timeout=120, verify=verify)
        for _ in range(300):
            try:
                if self.client.get("/openapi.json").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the server did not start: {log.read_text()}")

    def as_(self, token: str | None) -> dict:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    lake = generated_city_lake(root, devices=300, days=2, seed=5)
    R.publish(lake, policy=Policy(), epsilon=1.0, delta=0.0)
    return lake


@pytest.fixture(scope="module")
def tokens(city):
    accounts = Accounts(city)
    return {role: accounts.add(f"{role}-1", role) for role in ROLES} | {"pilot2": accounts.add("pilot-2", "pilot"),
                                                                       "analyst2": accounts.add("analyst-2", "analyst")}


@pytest.fixture(scope="module")
def server(city, tokens, tmp_path_factory):
    served = Served(city.root, tmp_path_factory.mktemp("log") / "serve.log", flight=True,
                    env={"CITYLAKE_SANDBOX_TIMEOUT_SECONDS": "3", "CITYLAKE_SERVE_UPLOAD_MB": "1", "CITYLAKE_SERVE_MAX_RESULT_MB": "2"})
    yield served
    served.stop()


def pilot_report(server: Served, pilot: dict) -> httpx.Response:
    """Ask for the pilot's first report and wait for the answer (its report, or why not)."""
    assert server.client.post("/api/pilot/report", headers=pilot).status_code == 202
    for _ in range(600):
        answer = server.client.get("/api/pilot/report", headers=pilot)
        if answer.status_code != 202:
            return answer
        time.sleep(0.2)
    raise AssertionError("the pilot's report did not finish")


def call(server: Served, method: str, path: str, token: str | None, **kwargs) -> httpx.Response:
    if method == "POST" and "json" not in kwargs and "content" not in kwargs:
        kwargs["json"] = {"sql": "SELECT 1"} if path == "/api/sql" else {"places": ["places:expo"]}
    if method == "PUT" and "content" not in kwargs:
        kwargs["content"], kwargs["params"] = b"{}", {"filename": "b.geojson"}
    return server.client.request(method, path, headers=server.as_(token), **kwargs)


def test_every_endpoint_needs_a_valid_token(server, tokens):
    documented = {(method.upper(), path) for path, item in server.client.get("/openapi.json").json()["paths"].items() for method in item}
    assert {(m, p.replace("{layer}", "footfall").replace("{name}", "x.html").replace("{kind}", "boundary")) for m, p in documented} \
        == set(ROUTES)  # the test knows every endpoint the server has
    forged = "clk_" + "A" * 43
    for method, path in ROUTES:
        for token in (None, forged, tokens["planner"] + "x", tokens["planner"][:-1] + ("B" if tokens["planner"][-1] != "B" else "C")):
            answer = call(server, method, path, token)
            assert answer.status_code == 401, (method, path, token, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    answer = server.client.get("/api/health", headers={"Authorization": f"Basic {tokens['steward']}"})
    assert answer.status_code == 401  # only the bearer scheme


def test_a_role_that_may_not_gets_403_on_every_endpoint(server, tokens):
    for (method, path), allowed in ROUTES.items():
        for role in ROLES:
            answer = call(server, method, path, tokens[role])
            if role in allowed:
                assert answer.status_code != 403 or "pilot reads the city's releases inside its own area" in answer.text, \
                    (method, path, role, answer.text)
            else:
                assert answer.status_code == 403, (method, path, role, answer.text)
                assert "may not do this" in answer.json()["error"]


def test_released_footfall_is_the_release_in_every_format(server, tokens, city):
    everything = scan(city, "footfall_hourly").collect()
    category = everything["category"].mode().sort()[0]  # the release's noise decides which places show: take one it shows
    release = everything.filter(pl.col("category") == category).select("place_id", "bucket", "devices")
    params = {"category": category}
    got = server.client.get("/api/footfall", params=params, headers=server.as_(tokens["planner"]))
    assert got.status_code == 200
    as_json = pl.DataFrame(got.json()["rows"]).select("place_id", "devices")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    as_csv = pl.read_csv(io.BytesIO(server.client.get("/api/footfall", params={**params, "format": "csv"},
                                                      headers=server.as_(tokens["planner"])).content))
    as_parquet = pl.from_arrow(pq.read_table(io.BytesIO(server.client.get("/api/footfall", params=params, headers={
        **server.as_(tokens["planner"]), "Accept": "application/vnd.apache.parquet"}).content)))
    as_arrow = pl.from_arrow(pa.ipc.open_stream(server.client.get("/api/footfall", params={**params, "format": "arrow"},
                                                                  headers=server.as_(tokens["planner"])).content).read_all())
    truth = release.sort("place_id", "bucket")["devices"].to_list()
    for frame in (as_json, as_csv, as_parquet, as_arrow):
        assert frame["devices"].to_list() == truth


def test_an_analyst_never_reaches_raw_pings(server, tokens, city):
    analyst = server.as_(tokens["analyst"])
    lake_dir = str(city.root)
    attempts = ["SELECT * FROM pings", "SELECT * FROM stays", "SELECT raw FROM quarantine", "SELECT * FROM batches",
                "SELECT * FROM privacy_ledger", f"SELECT * FROM delta_scan('{lake_dir}/steward/pings')",
                f"SELECT * FROM read_parquet('{lake_dir}/steward/pings/**/*.parquet')",
                f"SELECT * FROM read_json_auto('{lake_dir}/steward/accounts.json')", "SELECT * FROM duckdb_settings()",
                "SELECT current_setting('home_directory')", f"COPY (SELECT 1) TO '{lake_dir}/x.csv'",
                f"ATTACH '{lake_dir}/x.db' AS x", "INSTALL httpfs", "SELECT * FROM information_schema.tables",
                "CREATE TABLE t AS SELECT 1", "PRAGMA database_list", "SET enable_external_access = true",
                "SELECT 1; SELECT * FROM pings", "WITH p AS (SELECT * FROM pings) SELECT count(*) FROM p"]
    for text in attempts:
        answer = server.client.post("/api/sql", json={"sql": text}, headers=analyst)
        assert answer.status_code in (400, 403), (text, answer.status_code, answer.text)
        assert "Traceback" not in answer.text and lake_dir not in answer.text
    assert not (city.root / "x.csv").exists()
    tables = {t["name"] for t in server.client.get("/api/tables", headers=analyst).json()["tables"]}
    assert tables and not tables & {"pings", "stays", "quarantine", "batches", "privacy_ledger"}
    steward = server.client.post("/api/sql", json={"sql": "SELECT count(*) AS n FROM pings"}, headers=server.as_(tokens["steward"]))
    assert steward.json()["rows"][0]["n"] == scan(city, "pings").select(pl.len()).collect().item()  # the steward's own door works


def test_static_routes_refuse_traversal(server, tokens, city):
    secret = (city.steward_dir / "accounts.json").read_text()
    for path in ("/assets/../app.py", "/assets/..%2F..%2Fapp.py", "/assets/%2e%2e/%2e%2e/steward/accounts.json",
                 "/docs/assets/..%2F..%2F..%2Fetc%2Fpasswd", "/assets/app.js%00.css", "/../../etc/passwd",
                 "/api/reports/..%2Faccounts.json", "/api/reports/../accounts.json", "/api/reports/%2e%2e%2fpilots"):
        answer = server.client.get(path, headers=server.as_(tokens["steward"]))
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert "token_sha256" not in answer.text and "root:" not in answer.text
    curl = subprocess.run(["curl", "-s", "--path-as-is", "-H", f"Authorization: Bearer {tokens['steward']}",
                           f"{server.url}/api/reports/../../steward/accounts.json"], capture_output=True, text=True)
    assert "token_sha256" not in curl.stdout and secret not in curl.stdout
    assert server.client.get("/assets/app.js").status_code == 200


def test_an_oversized_upload_is_refused_mid_stream(server, tokens, city):
    sent = {"bytes": 0}

    def body():
        for _ in range(64):  # 4 MB against a 1 MB limit, with no Content-Length: only the stream can tell
            sent["bytes"] += 65_536
            yield b"x" * 65_536

    answer = server.client.put("/api/pilot/files/pings", params={"filename": "p.csv"}, content=body(),
                               headers=server.as_(tokens["pilot"]))
    assert answer.status_code == 413 and "serve.upload_mb" in answer.json()["error"]
    uploads = city.steward_dir / "pilots" / "pilot-1" / "uploads"
    assert not list(uploads.glob("*pings*")) if uploads.exists() else True  # nothing of it kept
    declared = server.client.put("/api/pilot/files/pings", params={"filename": "p.csv"}, content=b"x" * (2 * 2**20),
                                 headers=server.as_(tokens["pilot"]))
    assert declared.status_code == 413
    for name in ("p.exe", "../../x.csv", "p"):
        bad = server.client.put("/api/pilot/files/pings", params={"filename": name}, content=b"a", headers=server.as_(tokens["pilot"]))
        assert bad.status_code == 400 or name == "../../x.csv" and bad.status_code == 200, (name, bad.text)
    assert not (city.root.parent / "x.csv").exists()


def test_a_slow_query_is_cancelled_at_the_limit_without_starving_others(server, tokens):
    analyst = server.as_(tokens["analyst"])
    slow = {}

    def heavy():
        slow["answer"] = server.client.post("/api/sql", json={"sql": "SELECT count(*) FROM range(100000000000) a"}, headers=analyst)

    runner = threading.Thread(target=heavy)
    runner.start()
    time.sleep(0.5)
    quick = [server.client.post("/api/sql", json={"sql": "SELECT count(*) AS n FROM footfall_hourly"}, headers=analyst)
             for _ in range(5)]
    runner.join(timeout=120)
    assert all(q.status_code == 200 for q in quick)
    assert slow["answer"].status_code == 408 and "limit" in slow["answer"].json()["error"]
    huge = server.client.post("/api/sql", json={"sql": "SELECT * FROM range(2000000)"}, headers=analyst)
    assert huge.status_code == 413 and "serve.max_rows" in huge.json()["error"]
    padded = server.client.post("/api/sql", json={"sql": "SELECT 1 -- " + "x" * (2 << 20)}, headers=analyst)
    assert padded.status_code == 413  # a request body past 1 MB is refused before it is parsed


def test_analysts_tools_reach_the_same_workspace_over_flight_sql(server, tokens, city):
    import adbc_driver_flightsql.dbapi as flightsql
    import adbc_driver_manager

    def connect(token):
        return flightsql.connect(f"grpc://127.0.0.1:{server.flight_port}",
                                 db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})

    with connect(tokens["analyst"]) as con, con.cursor() as cur:
        cur.execute("SELECT sum(devices) AS devices FROM footfall_hourly")
        over_flight = cur.fetchone()[0]
        answer = server.client.post("/api/sql", json={"sql": "SELECT sum(devices) AS devices FROM footfall_hourly"},
                                    headers=server.as_(tokens["analyst"]))
        assert int(over_flight) == answer.json()["rows"][0]["devices"] == scan(city, "footfall_hourly").collect()["devices"].sum()
        with pytest.raises(adbc_driver_manager.Error, match="not visible to analysts"):
            cur.execute("SELECT count(*) FROM pings")
    with connect(tokens["planner"]) as con, con.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="analyst and steward"):
        cur.execute("SELECT 1")


def test_a_revoked_token_is_refused_at_the_next_request(server, city):
    token = Accounts(city).add("short-lived", "analyst")
    assert server.client.get("/api/me", headers=server.as_(token)).json()["name"] == "short-lived"
    revoked = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), "users", "revoke", "short-lived"],
                             capture_output=True, text=True, env=server.env)
    assert revoked.returncode == 0, revoked.stderr
    assert server.client.get("/api/me", headers=server.as_(token)).status_code == 401


def test_users_cli_shows_a_token_once_and_keeps_only_its_hash(city, server, tmp_path):
    made = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), "users", "add", "ana", "--role", "planner"],
                          capture_output=True, text=True, env=server.env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("clk_")
    listed = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), "users", "list", "--format", "json"],
                            capture_output=True, text=True, env=server.env)
    assert "ana" in listed.stdout and token not in listed.stdout
    stored = city.steward_dir / "accounts.json"
    assert token not in stored.read_text() and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert oct(city.steward_dir.stat().st_mode & 0o777) == "0o700"
    no_key = {k: v for k, v in server.env.items() if k != "CITYLAKE_PSEUDONYM_KEY"} | {
        "CITYLAKE_PRIVACY_PSEUDONYM_KEY_FILE": str(tmp_path / "absent.key")}
    refused = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), "users", "add", "eve", "--role", "steward"],
                             capture_output=True, text=True, env=no_key)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_the_log_holds_no_token_and_no_query_string(server, tokens):
    server.client.get("/api/footfall", params={"place": "places:expo", "from": "2026-11-05"}, headers=server.as_(tokens["planner"]))
    server.client.get("/api/me", headers=server.as_("clk_" + "Z" * 43))
    time.sleep(0.3)
    log = server.log.read_text()
    assert "/api/footfall 200 planner-1" in log
    assert "clk_" not in log and "places:expo" not in log and "?" not in log and not any(t in log for t in tokens.values())


def test_cors_is_off_by_default(server, tokens):
    answer = server.client.options("/api/footfall", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in answer.headers
    got = server.client.get("/api/me", headers={**server.as_(tokens["planner"]), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in got.headers


def test_a_pilot_gets_its_first_report_and_only_its_area(server, tokens, city, tmp_path):
    pilot = server.as_(tokens["pilot"])
    assert server.client.get("/api/footfall", headers=pilot).status_code == 403  # no area yet
    released = scan(city, "footfall_hourly").group_by("place_id").len().sort("len", "place_id", descending=True).collect()
    chosen = registry.shapes(registry.places(city, place_ids=[released["place_id"][0]], columns=("geometry",)))[0]  # one the release shows
    cells = scan(city, "footfall_cells_hourly").select("h3_cell").unique().collect()["h3_cell"].to_numpy()
    from citylake.h3_index import cells_to_latlng

    lat, lon = cells_to_latlng(cells)
    nearest = shapely.points(lon, lat)[shapely.distance(shapely.points(lon, lat), chosen).argmin()]  # and a released cell
    area = shapely.convex_hull(shapely.union(shapely.buffer(chosen, 0.002), shapely.buffer(nearest, 0.002)))
    boundary = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                                      "geometry": json.loads(shapely.to_geojson(area))}]})
    pings = pl.read_csv(city.root.parent / "city" / "pings.csv")
    pings = pings.filter(pl.Series(shapely.contains_xy(area, pings["lon"].to_numpy(), pings["lat"].to_numpy()))).head(8_000)
    steps = [("boundary", "area.geojson", boundary.encode()), ("pings", "pings.csv", pings.write_csv().encode())]
    bad = server.client.put("/api/pilot/files/boundary", params={"filename": "area.geojson"}, content=b"{}", headers=pilot)
    assert bad.status_code == 400 and "not GeoJSON" in bad.json()["error"]  # refused as it arrives
    empty = b'{"type": "FeatureCollection", "features": []}'  # GeoJSON, but no boundary: refused when the report is made
    assert server.client.put("/api/pilot/files/boundary", params={"filename": "area.geojson"}, content=empty,
                             headers=pilot).status_code == 200
    failed = pilot_report(server, pilot)
    assert failed.status_code == 422 and "boundary.geojson" in failed.json()["error"], failed.text
    assert str(city.root) not in failed.text
    for kind, name, body in steps:
        answer = server.client.put(f"/api/pilot/files/{kind}", params={"filename": name}, content=body, headers=pilot)
        assert answer.status_code == 200, answer.text
    report = pilot_report(server, pilot)
    assert report.status_code == 200, report.text
    assert "pilot-1" in report.text and "<html" in report.text.lower()
    # its area's releases only: places meeting its boundary, and no other
    rows = server.client.get("/api/footfall", headers=pilot).json()["rows"]
    places = registry.places(city, columns=("place_id", "geometry"))
    meeting = set(places.filter(pl.Series(shapely.intersects(registry.shapes(places), area)))["place_id"])
    assert rows and {r["place_id"] for r in rows} <= meeting
    everyone = {r["place_id"] for r in server.client.get("/api/footfall", headers=server.as_(tokens["planner"])).json()["rows"]}
    assert everyone == set(released["place_id"]) and (everyone - meeting or len(meeting) == len(places))
    for outside in everyone - meeting:
        assert server.client.get("/api/footfall", params={"place": outside}, headers=pilot).json()["rows"] == []
    cells = server.client.get("/api/footfall", params={"by": "cell"}, headers=pilot).json()["rows"]
    lat, lon = cells_to_latlng(pl.Series([r["h3_cell"] for r in cells], dtype=pl.Int64).to_numpy())
    assert cells and shapely.contains_xy(area, lon, lat).all()
    # another pilot sees neither this pilot's report nor the city before its own
    assert server.client.get("/api/pilot/report", headers=server.as_(tokens["pilot2"])).status_code == 404
    assert server.client.get("/api/od", headers=server.as_(tokens["pilot2"])).status_code == 403


def test_tls_when_given_a_certificate(city, tokens, tmp_path):
    cert, key = self_signed(tmp_path)
    served = Served(city.root, tmp_path / "tls.log", env={"CITYLAKE_SERVE_TLS_CERT": str(cert), "CITYLAKE_SERVE_TLS_KEY": str(key)},
                    scheme="https", verify=ssl.create_default_context(cafile=str(cert)))
    try:
        assert served.client.get("/api/me", headers=served.as_(tokens["analyst"])).json()["role"] == "analyst"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{served.port}/api/me", headers=served.as_(tokens["analyst"]), timeout=5)
    finally:
        served.stop()


__all__ = ["Served", "free_port", "shutil"]


def warm_pixels(png: bytes, box: tuple[int, int, int, int]) -> int:
    """Pixels in ``box`` in the layers' warm palette (orange to red), which the dark page never uses."""
    import io

    import numpy as np
    from PIL import Image

    x0, y0, x1, y1 = box
    area = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[y0:y1, x0:x1]
    r, g, b = area[..., 0], area[..., 1], area[..., 2]
    return int(((r > 150) & (r - b > 60) & (r >= g)).sum())


def test_a_planner_signs_in_picks_a_district_sees_the_layer_and_opens_the_report(server, tokens, city, tmp_path):
    from conftest import ARTIFACTS
    from playwright.sync_api import sync_playwright

    steward = server.as_(tokens["steward"])
    assert server.client.post("/api/reports", json={"places": ["places:expo"]}, headers=steward).status_code == 202
    for _ in range(600):
        job = server.client.get("/api/jobs/reports", headers=steward).json()
        if job["state"] != "running":
            break
        time.sleep(0.5)
    assert job["state"] == "done", job
    map_box = (600, 60, 1250, 450)  # right of the sign-in panel and kepler's side panel, above the playback bar
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        outside: list[str] = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url) else
                   (outside.append(route.request.url), route.abort()))
        page.goto(server.url + "/")
        page.fill("#token", tokens["planner"])
        page.click("#login button")
        page.wait_for_selector("#pick:not([hidden])")
        page.wait_for_function("document.querySelectorAll('#category option').length > 1")
        page.wait_for_timeout(1_500)
        before = warm_pixels(page.screenshot(), map_box)
        page.select_option("#category", "district")
        page.click("#show")
        page.wait_for_function("window.citylakeReady === true", timeout=90_000)
        page.wait_for_timeout(2_000)
        shot = page.screenshot(path=str(ARTIFACTS / "serve" / "planner-footfall.png"))
        after = warm_pixels(shot, map_box)
        assert before < 50 and after > 2_000, (before, after)
        assert "Footfall per H3 cell" in page.text_content("#status")
        page.wait_for_selector("#report-list a.open")
        with page.expect_popup() as popup:
            page.click("#report-list a.open")
        report = popup.value
        report.wait_for_load_state()
        shown = report.frame_locator("iframe[sandbox='']").locator("body")
        assert "Expo" in shown.inner_text(timeout=30_000)  # the report, in a frame that runs no script
        assert report.evaluate("document.querySelector('iframe').getAttribute('sandbox')") == ""
        browser.close()
    # nothing but the server was reached (no CDN, no tiles); kepler.gl's optional icon set is asked for and refused
    assert all(url.endswith("/svg-icons.json") for url in outside), outside


def test_malformed_requests_get_one_line_and_never_a_traceback(server, tokens):
    analyst = server.as_(tokens["analyst"])
    cases = [("GET", "/api/footfall", {"params": {"from": "yesterday"}}), ("GET", "/api/footfall", {"params": {"by": "street"}}),
             ("GET", "/api/footfall", {"params": {"format": "xml"}}),
             ("GET", "/api/footfall", {"params": {"from": "2026-11-05", "to": "2026-11-01"}}), ("GET", "/api/maps/weather", {}),
             ("GET", "/api/alerts", {"params": {"open": "perhaps"}}), ("POST", "/api/sql", {"content": b"SELECT 1"}),
             ("POST", "/api/sql", {"json": {"query": "SELECT 1"}}), ("POST", "/api/sql", {"json": {"sql": "   "}}),
             ("POST", "/api/sql", {"json": {"sql": "SELEC 1"}}), ("POST", "/api/sql", {"json": {"sql": "SELECT 1/0::INT"}}),
             ("GET", "/api/reports/nope.html", {}), ("GET", "/api/nothing-here", {})]
    for method, path, kwargs in cases:
        answer = server.client.request(method, path, headers=analyst, **kwargs)
        assert 400 <= answer.status_code < 500 or answer.status_code == 200 and "1/0" in str(kwargs), (path, kwargs, answer.text)
        if answer.status_code != 200:
            error = answer.json().get("error") or answer.json().get("detail")
            assert isinstance(error, str) and "\n" not in error and "Traceback" not in error, (path, error)
    assert "Traceback" not in server.log.read_text()


def test_the_api_docs_work_offline(server):
    page = server.client.get("/docs").text
    assets = [part.split('"')[1] for part in page.split("src=")[1:]] + [part.split('"')[1] for part in page.split("href=")[1:]]
    assets = [asset for asset in assets if asset]  # an empty favicon link is the page itself
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from a CDN
    for asset in assets:
        assert server.client.get(asset).status_code == 200, asset
    assert server.client.get("/openapi.json").json()["info"]["title"] == "citylake"


def test_a_kept_answer_never_outlives_a_change_of_its_tables(server, tokens, city):
    """The release endpoints keep answers while their tables are unchanged; an alert landing shows at the next request."""
    import datetime as dt

    planner = server.as_(tokens["planner"])
    before = server.client.get("/api/alerts", headers=planner).json()["rows"]
    assert server.client.get("/api/alerts", headers=planner).json()["rows"] == before  # kept
    now = dt.datetime.now(dt.UTC)
    city.write("alerts_released", pl.DataFrame({
        "alert_id": ["test-cache"], "kind": ["crowd surge"], "place_id": ["places:expo"], "sensor_ids": [None], "start": [now],
        "end": [now], "status": ["open"], "severity": ["medium"], "evidence": ["a test"], "revision": [1], "updated_at": [now]},
        schema_overrides={"sensor_ids": pl.String}), mode="append")
    after = server.client.get("/api/alerts", headers=planner).json()["rows"]
    assert [row["alert_id"] for row in after] == ["test-cache"] + [row["alert_id"] for row in before]


# --- what an attack helper found, each shown to fail now -------------------------------------------------------------

VRT = (b'<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>CSV:{target}</SrcDataSource><GeometryType>wkbNone</GeometryType>'
       b'</OGRVRTLayer></OGRVRTDataSource>')


def zipped(**members: bytes) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members.items():
            archive.writestr(name.replace("_", "."), body)
    return buffer.getvalue()


def test_a_map_upload_must_be_what_its_name_says(server, tokens, city):
    """A GDAL VRT named boundary.geojson made the server read any file (the lake's key) and fetch URLs."""
    pilot = server.as_(tokens["pilot2"])
    vrt = VRT.replace(b"{target}", str(city.steward_dir / "accounts.json").encode())
    gdalg = json.dumps({"type": "FeatureCollection", "features": []})[:-1] + ', "type\\u0000": "gdal_streamed_alg", "command_line": ' \
        + json.dumps(f"gdal vector pipeline ! read --input-format CSV --oo HEADERS=NO {city.steward_dir / 'accounts.json'}") + "}"
    cases = [("boundary", "b.geojson", vrt, 400), ("boundary", "b.json", b'{"type": "Topology"}', 400),
             ("boundary", "b.json", gdalg.encode(), 400),  # GDAL's parser cut the key at \u0000: a second "type" (a second attack)
             ("boundary", "b.json", b'{"type": "Feature", "type": "gdal_streamed_alg", "geometry": null}', 400),
             ("boundary", "b.gpkg", vrt, 400), ("boundary", "b.zip", zipped(x_vrt=vrt, x_shp=b"x"), 400),
             ("boundary", "b.csv", b"wkt\nPOLYGON((0 0,1 0,1 1,0 0))", 400), ("pois", "p.csv", vrt, 400),
             ("pois", "p.geojson", b"<html>", 400)]
    for kind, name, body, status in cases:
        answer = server.client.put(f"/api/pilot/files/{kind}", params={"filename": name}, content=body, headers=pilot)
        assert answer.status_code == status, (kind, name, answer.text)
    assert not list((city.steward_dir / "pilots" / "pilot-2" / "uploads").glob("boundary.*"))  # none of them kept
    linked = {"type": "FeatureCollection", "crs": {"type": "link", "properties": {"href": "http://127.0.0.1:9/crs"}}, "extra": 1,
              "features": [{"type": "Feature", "properties": {"name": "a", "deep": {"x": 1}}, "id": 7,
                            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0]]]}}]}
    assert server.client.put("/api/pilot/files/boundary", params={"filename": "b.geojson"}, content=json.dumps(linked).encode(),
                             headers=pilot).status_code == 200
    stored = json.loads((city.steward_dir / "pilots" / "pilot-2" / "uploads" / "boundary.geojson").read_text())
    assert set(stored) == {"type", "features"} and stored["features"][0]["properties"] == {"name": "a"}  # no crs link to fetch
    assert shapely.geometry.shape(stored["features"][0]["geometry"]).equals(shapely.geometry.shape(linked["features"][0]["geometry"]))
    # the second lock: a process that starts as the server does registers none of GDAL's referencing drivers
    probe = "from citylake.server.run import _no_referencing_gdal_drivers as skip; skip(); import pyogrio; print(*pyogrio.list_drivers())"
    drivers = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout.split()
    assert "GeoJSON" in drivers and not {"GDALG", "OGR_VRT", "HTTP", "WFS", "ADBC", "OAPIF"} & set(drivers), drivers


def test_a_pilot_area_is_set_once_and_bounded(server, tokens, city):
    """A pilot could widen its area at will, and to the whole city."""
    pilot = server.as_(tokens["pilot"])  # made its report and area in test_a_pilot_gets_its_first_report_and_only_its_area
    kept = (city.steward_dir / "pilots" / "pilot-1" / "area.wkb").read_bytes()

    def report_with(shape) -> httpx.Response:
        body = json.dumps({"type": "Feature", "properties": {}, "geometry": json.loads(shapely.to_geojson(shape))}).encode()
        assert server.client.put("/api/pilot/files/boundary", params={"filename": "b.geojson"}, content=body,
                                 headers=pilot).status_code == 200
        return pilot_report(server, pilot)

    whole_city = shapely.box(20, 50, 25, 55)  # ~180,000 km²
    assert "serve.pilot_max_km2" in report_with(whole_city).json()["error"]
    elsewhere = shapely.box(10, 10, 10.01, 10.01)
    assert "set by its first report" in report_with(elsewhere).json()["error"]
    assert (city.steward_dir / "pilots" / "pilot-1" / "area.wkb").read_bytes() == kept


def test_a_revoked_pilot_leaves_nothing_to_the_next_account_of_its_name(server, city):
    accounts = Accounts(city)
    token = accounts.add("pilot-x", "pilot")
    body = b'{"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0]]]}'
    assert server.client.put("/api/pilot/files/boundary", params={"filename": "b.geojson"}, content=body,
                             headers=server.as_(token)).status_code == 200
    folder = city.steward_dir / "pilots" / "pilot-x"
    assert folder.is_dir()
    for command in (["users", "revoke", "pilot-x"], ["users", "add", "pilot-x", "--role", "pilot"]):
        done = subprocess.run([sys.executable, "-m", "citylake.cli", "--lake", str(city.root), *command], capture_output=True, text=True,
                              env=server.env)
        assert done.returncode == 0, done.stderr
        assert not folder.exists()
    token = done.stdout.strip().splitlines()[-1]
    assert server.client.get("/api/pilot/report", headers=server.as_(token)).status_code == 404


def test_one_analyst_cannot_hold_every_workspace_nor_take_the_memory(server, tokens):
    """Four slow statements of one analyst held every workspace: now the fourth waits its turn, another account does not."""
    analyst, other = server.as_(tokens["analyst"]), server.as_(tokens["analyst2"])
    slow = "SELECT sum(hash(a.range * b.range)) FROM range(200000) a, range(200000) b"
    done: dict[str, tuple[float, int]] = {}

    def post(label: str, sql: str, headers: dict) -> None:
        answer = server.client.post("/api/sql", json={"sql": sql}, headers=headers)
        done[label] = (time.monotonic(), answer.status_code)

    warm = [threading.Thread(target=post, args=(f"warm{i}", "SELECT 1 AS one", (analyst, other)[i % 2])) for i in range(4)]
    for runner in warm:  # all four workspaces made first: making one takes a while on a busy machine
        runner.start()
    for runner in warm:
        runner.join(timeout=120)
    runners = [threading.Thread(target=post, args=(f"held{i}", slow, analyst)) for i in range(3)]  # 3 of the 4 workspaces
    for runner in runners:
        runner.start()
    time.sleep(1.0)
    fourth = threading.Thread(target=post, args=("fourth", "SELECT 1 AS one", analyst))
    fourth.start()
    time.sleep(0.3)
    post("other", "SELECT 1 AS one", other)
    for runner in (*runners, fourth):
        runner.join(timeout=120)
    first_held_done = min(done[f"held{i}"][0] for i in range(3))
    assert done["other"][1] == 200 and done["other"][0] < first_held_done  # another account's statement did not wait
    assert done["fourth"][1] == 200 and done["fourth"][0] >= first_held_done  # the same account's fourth waited for a turn
    assert [done[f"held{i}"][1] for i in range(3)] == [408, 408, 408]
    wide = server.client.post("/api/sql", json={"sql": "SELECT repeat('x', 100000) AS s FROM range(50)"}, headers=analyst)
    assert wide.status_code == 413 and "serve.max_result_mb" in wide.json()["error"]  # 5 MB past a 2 MB limit


def test_headers_redirects_and_the_log_give_an_attacker_nothing(server, tokens):
    answer = server.client.get("/", headers={"Host": "evil.example"})
    assert answer.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    slash = server.client.get("/api/me/", headers={**server.as_(tokens["planner"]), "Host": "evil.example"})
    assert slash.status_code == 404 and "location" not in slash.headers and "error" in slash.json()
    server.client.get("/api/%1b[31mred%1b[0m", headers=server.as_(tokens["planner"]))
    time.sleep(0.3)
    assert "\x1b" not in server.log.read_text()

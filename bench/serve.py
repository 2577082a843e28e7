"""`citylake serve` under load: 50 concurrent clients (planners' map calls and analysts' SQL) for 60 s, then the same with one
more client running a heavy query over and over; latency percentiles, throughput, errors and the server's peak RSS.

The server is a real `citylake serve` process; the clients run in another process (asyncio + httpx), so the figures are
what users on the same machine would see. Two lakes: the demo's city (2,000 devices, 7 days) and a denser, shorter one
(6,000 devices, 3 days, another seed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import ROOT

CLIENTS, SECONDS = 50, int(os.environ.get("BENCH_SERVE_SECONDS", "60"))  # fewer seconds only for a smoke run
KEY = "citylake-bench-key-0123456789abcdef-0123456789abcdef"
SHAPES = {"demo_city": {"devices": 2_000, "days": 7, "seed": 1}, "dense_short_city": {"devices": 6_000, "days": 3, "seed": 23}}
SQL = ["SELECT place_id, sum(devices) AS devices FROM footfall_hourly GROUP BY 1 ORDER BY 2 DESC",
       "SELECT date_trunc('day', bucket) AS day, sum(devices) AS devices FROM footfall_cells_hourly GROUP BY 1 ORDER BY 1",
       "SELECT metric, avg(value) AS mean, count(*) AS n FROM readings GROUP BY 1",
       "SELECT origin, destination, sum(devices) AS devices FROM od_daily GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20"]
HEAVY = ("SELECT count(*) AS pairs FROM readings a CROSS JOIN readings b CROSS JOIN range(20) r "
         "WHERE a.value + r.range > b.value + 1")  # billions of pairs: cancelled at the time limit on both cities


def bench_serve_load(work: Path) -> dict:
    out: dict = {"how": "baseline: the same mix from one client for 20 s (each request alone); then "
                        f"{CLIENTS} clients in one other process (asyncio + httpx), each sending its next request as soon as the last "
                        f"answers, for {SECONDS} s: map calls as a planner (footfall, footfall map, flows, hotspots, alerts, places) "
                        "and SQL as an analyst (30%); then the same with one more client sending a self-join of the readings "
                        "that runs into the 10 s limit. Server RSS sampled every 0.5 s. 2 cores for server and clients together."}
    for name, shape in SHAPES.items():
        lake_root = _city_lake(work / name, **shape)
        out[name] = {"city": shape, **_load_runs(lake_root, work / name)}
    return out


def _city_lake(folder: Path, *, devices: int, days: int, seed: int) -> Path:
    from citylake import api
    from citylake import settings as S
    from citylake.ingestion.city import generate_city

    generate_city(folder / "city", devices=devices, days=days, seed=seed)
    before = os.environ.get("CITYLAKE_PSEUDONYM_KEY")
    os.environ["CITYLAKE_PSEUDONYM_KEY"] = KEY  # the steward, for this lake only
    try:
        settings = S.load(overrides={"lake": str(folder / "lake")})
        lake = api.init_lake(settings=settings)
        api.ingest_places(lake, folder / "city" / "places.geojson")
        api.ingest_sensors(lake, folder / "city" / "sensors.csv")
        api.ingest_readings(lake, folder / "city" / "readings.csv", settings=settings)
        api.ingest_pings(lake, folder / "city" / "pings.csv", settings=settings)
        api.publish(lake, settings=settings, announce=lambda line: None)
    finally:
        os.environ.pop("CITYLAKE_PSEUDONYM_KEY") if before is None else os.environ.__setitem__("CITYLAKE_PSEUDONYM_KEY", before)
    return folder / "lake"


def _load_runs(lake_root: Path, folder: Path) -> dict:
    import psutil

    from citylake.lake import Lake
    from citylake.privacy import Accounts

    accounts = Accounts(Lake.open(lake_root))
    tokens = {role: accounts.add(f"bench-{role}-{random.randrange(10**6)}", role) for role in ("planner", "analyst")}
    port = _free_port()
    env = {**os.environ, "CITYLAKE_PSEUDONYM_KEY": KEY, "CITYLAKE_SANDBOX_TIMEOUT_SECONDS": "10"}
    server = subprocess.Popen([sys.executable, "-m", "citylake.cli", "--lake", str(lake_root), "serve", "--port", str(port),
                               "--flight-port", "0"], stdout=open(folder / "serve.log", "w"), stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(port)
        figures = {}
        for label, mode in (("one_client_baseline", "one"), ("mixed", "plain"), ("mixed_with_heavy_query", "heavy")):
            sampler = _RssSampler(psutil.Process(server.pid))
            clients = subprocess.run([sys.executable, "-m", "bench.serve", f"http://127.0.0.1:{port}", json.dumps(tokens),
                                      mode], capture_output=True, text=True, cwd=ROOT, timeout=SECONDS + 300)
            if clients.returncode:
                raise RuntimeError(f"the load clients failed: {clients.stderr[-2000:]}")
            figures[label] = {**json.loads(clients.stdout), "server_peak_rss_mb": sampler.stop()}
        figures["p50_under_load_vs_one_client"] = round(figures["mixed"]["p50_ms"] / figures["one_client_baseline"]["p50_ms"], 1)
        return figures
    finally:
        server.terminate()
        server.wait(timeout=60)


class _RssSampler:
    def __init__(self, process) -> None:
        import threading

        self.process, self.peak, self.running = process, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            rss = self.process.memory_info().rss + sum(child.memory_info().rss for child in self.process.children(recursive=True))
            self.peak = max(self.peak, rss)
            time.sleep(0.5)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return round(self.peak / 2**20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int) -> None:
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


# --- the clients (run as `python -m bench.serve URL TOKENS plain|heavy`) -----------------------------------------------


def _requests(tokens: dict, categories: list[str]) -> list[tuple[float, str, str, dict]]:
    """(weight, method, path, keyword arguments) of the mix."""
    planner = {"Authorization": f"Bearer {tokens['planner']}"}
    analyst = {"Authorization": f"Bearer {tokens['analyst']}"}
    mix = [(0.06, "GET", "/api/places", {"headers": planner}), (0.1, "GET", "/api/od", {"headers": planner}),
           (0.1, "GET", "/api/alerts", {"headers": planner}), (0.08, "GET", "/api/hotspots", {"headers": planner}),
           (0.08, "GET", "/api/maps/footfall", {"headers": planner, "params": {"category": "district"}})]
    mix += [(0.28 / len(categories), "GET", "/api/footfall", {"headers": planner, "params": {"category": c}}) for c in categories]
    mix += [(0.30 / len(SQL), "POST", "/api/sql", {"headers": analyst, "json": {"sql": text}}) for text in SQL]
    return mix


async def _client(client, mix, until: float, latencies: list, errors: list, by_path: dict) -> None:
    weights = [w for w, *_ in mix]
    while time.monotonic() < until:
        _, method, path, kwargs = random.choices(mix, weights)[0]
        began = time.perf_counter()
        try:
            answer = await client.request(method, path, **kwargs)
            ok = answer.status_code == 200
        except Exception as err:  # noqa: BLE001 — every failure counts as an error of the load
            ok, answer = False, err
        latencies.append(time.perf_counter() - began)
        by_path.setdefault(path, []).append(latencies[-1])
        if not ok:
            errors.append(f"{path}: {getattr(answer, 'status_code', answer)}")


async def _heavy_client(client, tokens: dict, until: float, outcomes: list) -> None:
    analyst = {"Authorization": f"Bearer {tokens['analyst']}"}
    while time.monotonic() < until:
        answer = await client.post("/api/sql", json={"sql": HEAVY}, headers=analyst)
        outcomes.append(answer.status_code)


async def _load(url: str, tokens: dict, heavy: bool, clients: int = CLIENTS, seconds: int = SECONDS) -> dict:
    import httpx
    import numpy as np

    limits = httpx.Limits(max_connections=CLIENTS + 2, max_keepalive_connections=CLIENTS + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        places = (await client.get("/api/places", headers={"Authorization": f"Bearer {tokens['planner']}"})).json()["rows"]
        mix = _requests(tokens, sorted({p["category"] for p in places}))
        latencies: list[float] = []
        errors: list[str] = []
        heavy_outcomes: list[int] = []
        by_path: dict[str, list[float]] = {}
        began = time.monotonic()
        until = began + seconds
        tasks = [_client(client, mix, until, latencies, errors, by_path) for _ in range(clients)]
        if heavy:
            tasks.append(_heavy_client(client, tokens, until, heavy_outcomes))
        await asyncio.gather(*tasks)
        took = time.monotonic() - began
    ms = np.array(latencies) * 1000
    figures = {"requests": len(latencies), "seconds": round(took, 1), "requests_per_s": round(len(latencies) / took, 1),
               "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
               "p99_ms": round(float(np.percentile(ms, 99)), 1), "errors": len(errors), "error_examples": errors[:5],
               "p50_ms_by_endpoint": {path: round(float(np.median(times)) * 1000, 1) for path, times in sorted(by_path.items())}}
    if heavy:
        figures["heavy_query_answers"] = {str(code): heavy_outcomes.count(code) for code in sorted(set(heavy_outcomes))}
    return figures


if __name__ == "__main__":
    mode = sys.argv[3]
    clients, seconds = (1, 20) if mode == "one" else (CLIENTS, SECONDS)
    print(json.dumps(asyncio.run(_load(sys.argv[1], json.loads(sys.argv[2]), mode == "heavy", clients, seconds))))

"""Running the service: uvicorn for HTTP (TLS when a certificate is set), Arrow Flight SQL beside it, one process."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from citylake import settings as S
from citylake.h3_index.errors import CitylakeError
from citylake.lake import Lake


class PortInUse(CitylakeError, OSError):
    pass


def serve(lake: Lake, settings: S.Settings, /, *, announce: Callable[[str], None] = print) -> None:
    """Serve ``lake`` until interrupted (Ctrl-C or SIGTERM). The caller has checked the steward's key."""
    _no_referencing_gdal_drivers()
    import uvicorn

    from citylake.server.app import create_app

    host, port, flight_port = settings["serve.host"], settings["serve.port"], settings["serve.flight_port"]
    cert, key = settings["serve.tls_cert"], settings["serve.tls_key"]
    if bool(cert) != bool(key):
        raise S.SettingError("serve.tls_cert", cert or key, "settings", "TLS needs both serve.tls_cert and serve.tls_key")
    for port_setting, number in (("--port", port), ("--flight-port", flight_port)):
        if number:
            _check_free(host, number, port_setting)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(lake, settings)
    flight = _start_flight(app.state.server, host, flight_port, (cert, key) if cert else None, announce) if flight_port else None
    scheme = "https" if cert else "http"
    announce(f"citylake serve: {scheme}://{host}:{port}/ (web app), {scheme}://{host}:{port}/docs (API); Ctrl-C stops")
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=cert or None, ssl_keyfile=key or None, access_log=False,
                            log_level="warning", timeout_graceful_shutdown=5,
                            timeout_keep_alive=75)  # uvicorn's 5 s closes connections clients are about to reuse (a lost request)
    try:
        uvicorn.Server(config).run()
    finally:
        if flight is not None:
            flight.shutdown()


GDAL_KEPT = {"GeoJSON", "CSV", "ESRI Shapefile", "GPKG", "MEM"}  # what the server reads; every other driver is skipped


def _no_referencing_gdal_drivers() -> None:
    """Pilots' uploads are read by GDAL, whose other drivers (VRT, GDALG pipelines, HTTP, WFS, ADBC…) open files and URLs
    a file names. The uploads are rewritten before GDAL sees them (``pilots.vet_map_file``); as a second lock this process
    registers only the drivers it needs (GDAL_SKIP is read when GDAL loads: the list comes from a throwaway process)."""
    import json
    import os
    import subprocess
    import sys

    if "pyogrio" in sys.modules:  # too late for this process: say so rather than pretend
        logging.getLogger("citylake.server").warning("GDAL was loaded before the server could skip its drivers; uploads rely on "
                                                     "being rewritten")
        return
    listed = subprocess.run([sys.executable, "-c", "import json, pyogrio; print(json.dumps(sorted(pyogrio.list_drivers())))"],
                            capture_output=True, text=True, timeout=120)
    drivers = set(json.loads(listed.stdout)) if listed.returncode == 0 else set()
    skipped = (drivers - GDAL_KEPT) | {"OGR_VRT", "VRT", "GDALG"} | set(os.environ.get("GDAL_SKIP", "").split())
    os.environ["GDAL_SKIP"] = " ".join(sorted(name.replace(" ", "_") for name in skipped))


def _check_free(host: str, port: int, option: str) -> None:
    """Refuse now, in one line, a port another program holds (uvicorn would log it and exit with code 3)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise PortInUse(f"cannot listen on {host}:{port} ({err.strerror}); pick another with {option}") from None


def _start_flight(server, host: str, port: int, tls: tuple[str, str] | None, announce: Callable[[str], None]):
    from pathlib import Path

    from citylake.server.flight import flight_server, serve_in_thread

    flight = flight_server(server.lake, server.accounts, server.pool, host=host, port=port,
                           tls=(Path(tls[0]), Path(tls[1])) if tls else None)
    serve_in_thread(flight)
    announce(f"citylake serve: Arrow Flight SQL on grpc{'+tls' if tls else ''}://{host}:{port}")
    return flight

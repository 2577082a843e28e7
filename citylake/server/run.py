"""Running the service: uvicorn for HTTP (TLS when a certificate is set), Arrow Flight SQL beside it, one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from citylake import settings as S
from citylake.lake import Lake


def serve(lake: Lake, settings: S.Settings, /, *, announce: Callable[[str], None] = print) -> None:
    """Serve ``lake`` until interrupted (Ctrl-C or SIGTERM). The caller has checked the steward's key."""
    import uvicorn

    from citylake.server.app import create_app

    host, port, flight_port = settings["serve.host"], settings["serve.port"], settings["serve.flight_port"]
    cert, key = settings["serve.tls_cert"], settings["serve.tls_key"]
    if bool(cert) != bool(key):
        raise S.SettingError("serve.tls_cert", cert or key, "settings", "TLS needs both serve.tls_cert and serve.tls_key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(lake, settings)
    flight = _start_flight(app.state.server, host, flight_port, (cert, key) if cert else None, announce) if flight_port else None
    scheme = "https" if cert else "http"
    announce(f"citylake serve: {scheme}://{host}:{port}/ (web app), {scheme}://{host}:{port}/docs (API); Ctrl-C stops")
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=cert or None, ssl_keyfile=key or None, access_log=False,
                            log_level="warning", timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    finally:
        if flight is not None:
            flight.shutdown()


def _start_flight(server, host: str, port: int, tls: tuple[str, str] | None, announce: Callable[[str], None]):
    try:
        from citylake.server.flight import flight_server
    except ImportError:
        announce("citylake serve: Arrow Flight SQL is not available in this build")
        return None
    flight = flight_server(server.lake, server.accounts, server.pool, host=host, port=port, tls=tls)
    threading.Thread(target=flight.serve, name="flight sql", daemon=True).start()
    announce(f"citylake serve: Arrow Flight SQL on grpc{'+tls' if tls else ''}://{host}:{port}")
    return flight

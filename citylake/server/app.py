"""The HTTP side of ``citylake serve``: a JSON API and the planner web app, on FastAPI.

FastAPI (on Starlette) because the API's OpenAPI description is made from the endpoints themselves and cannot drift from
them; its docs page is served from the PyPI package ``swagger-ui-bundle``, not a CDN.

Every ``/api`` request needs a bearer token (``citylake users add``); the account's role decides what it may do
(``ALLOWED``), and what it reads goes through the same privacy room as the CLI: planners, analysts and pilots read the
releases (differentially private, fixed public partitions) and the alerts; analysts also SQL in the analyst workspace;
pilots only their own area; the steward everything. The web app's page, its scripts and the API docs hold no data and
need no token.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Annotated

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from citylake import settings as S
from citylake.h3_index.errors import CitylakeError
from citylake.lake import Lake
from citylake.privacy import Account, Accounts, Refused
from citylake.privacy.accounts import ANALYST, PILOT, PLANNER, STEWARD
from citylake.queries import Filters
from citylake.queries.sandbox import Limits, QueryCancelled
from citylake.server import views
from citylake.server.cache import AnswerCache
from citylake.server.jobs import Jobs
from citylake.server.pilots import PilotDesk, UploadTooLarge
from citylake.server.reports import ReportShelf
from citylake.server.results import BadFormat, chosen_format, table_response
from citylake.server.workspaces import ServerBusy, WorkspacePool

log = logging.getLogger("citylake.server")
WEB = Path(__file__).resolve().parent / "web"
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
JSON_BODY_LIMIT = 1 << 20  # a request body other than a pilot's upload (SQL text, a list of places)
UPLOAD_BODY_LIMIT = 1 << 40  # uploads: the server's own check (serve.upload_mb) refuses them first, mid-stream
EVERYONE = (PLANNER, ANALYST, PILOT, STEWARD)
READERS = EVERYONE  # the releases and alerts (a pilot: its area's)
ALLOWED = {
    "sql": (ANALYST, STEWARD),
    "reports": (PLANNER, ANALYST, STEWARD),
    "make_reports": (STEWARD,),
    "pilot": (PILOT,),
}
# Annotated (not shared defaults): FastAPI copies an Annotated parameter's description for each endpoint
Format = Annotated[str | None, Query(description="json (default), csv, parquet or arrow; or send an Accept header")]
From = Annotated[str | None, Query(alias="from", description="ISO date or time, UTC unless it carries an offset; inclusive")]
To = Annotated[str | None, Query(alias="to", description="ISO date or time; exclusive")]
Categories = Annotated[list[str] | None, Query(alias="category", description="places of this category (repeat for several)")]
Places = Annotated[list[str] | None, Query(alias="place", description="this place id (repeat for several)")]


class Server:
    """What the endpoints share: the lake, its settings and accounts, the SQL workspaces, reports and pilots."""

    def __init__(self, lake: Lake, settings: S.Settings, /) -> None:
        self.lake, self.settings = lake, settings
        self.accounts = Accounts(lake)
        limits = Limits(seconds=settings["sandbox.timeout_seconds"], memory=settings["sandbox.memory_limit"],
                        threads=settings["sandbox.threads"])
        self.pool = WorkspacePool(lake, limits=limits, size=settings["serve.sql_workspaces"],
                                  max_result_bytes=settings["serve.max_result_mb"] * 2**20)
        self.reports = ReportShelf(lake)
        self.pilots = PilotDesk(lake, settings)
        self.jobs = Jobs()
        self.cache = AnswerCache(lake)


def create_app(lake: Lake, settings: S.Settings, /) -> FastAPI:
    server = Server(lake, settings)
    app = FastAPI(title="citylake", version=_version(), docs_url=None, redoc_url=None, max_body_size=JSON_BODY_LIMIT,
                  redirect_slashes=False,  # a redirect would echo the request's Host header
                  description="The city lake for planners, analysts and district pilots. Send `Authorization: Bearer <token>` "
                              "(a token from `citylake users add`).")
    app.state.server = server
    origins = [o.strip() for o in settings["serve.cors_origins"].split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_headers=["Authorization", "Content-Type"],
                           allow_methods=["GET", "POST", "PUT"])
    app.middleware("http")(_log_request)
    _errors(app)
    _web(app)
    _data_routes(app)
    _sql_routes(app)
    _report_routes(app)
    _pilot_routes(app)
    return app


# --- who is asking ----------------------------------------------------------------------------------------------------


def _account(request: Request) -> Account:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    account = request.app.state.server.accounts.who(token.strip() if scheme.lower() == "bearer" else None)
    if account is None:
        raise HTTPException(401, "a valid bearer token is needed: send `Authorization: Bearer <token>` (the steward makes one with "
                                 "`citylake users add NAME --role ROLE`)", headers={"WWW-Authenticate": "Bearer"})
    request.state.account = account.name
    return account


def role_in(*roles: str):
    def check(account: Annotated[Account, Depends(_account)]) -> Account:
        if account.role not in roles:
            article = "an" if account.role[0] in "aeiou" else "a"
            raise HTTPException(403, f"{article} {account.role} account may not do this; it is for {' or '.join(roles)} accounts")
        return account
    return check


Reader = Annotated[Account, Depends(role_in(*READERS))]
Pilot = Annotated[Account, Depends(role_in(*ALLOWED["pilot"]))]


class SqlRequest(BaseModel):
    sql: str = Field(examples=["SELECT place_id, sum(devices) AS devices FROM footfall_hourly GROUP BY 1"])


class ReportRequest(BaseModel):
    places: list[str] = Field(min_length=1, examples=[["places:expo"]])
    start: str | None = Field(None, alias="from", examples=["2026-11-04"])
    end: str | None = Field(None, alias="to", examples=["2026-11-07"])


def _server(request: Request) -> Server:
    return request.app.state.server


def _cached(request: Request, account: Account, build) -> Response:
    """The answer kept for these parameters while the tables under it are unchanged (``server.cache``), else ``build()``;
    a pilot's answers are kept apart from everyone else's (they are narrowed to its area)."""
    scope = (account.name, account.area) if account.role == PILOT else "city"
    key = (request.url.path, tuple(sorted(request.query_params.multi_items())), request.headers.get("accept", ""), scope)
    return _server(request).cache.answer(key, build)


# --- endpoints ---------------------------------------------------------------------------------------------------------


def _data_routes(app: FastAPI) -> None:
    @app.get("/api/health", tags=["service"])
    def health(request: Request, account: Annotated[Account, Depends(role_in(*EVERYONE))]) -> dict:
        """The server is up and reads the lake."""
        server = _server(request)
        return {"status": "ok", "tables": len(server.lake.readable_names), "role": account.role}

    @app.get("/api/me", tags=["service"])
    def me(account: Annotated[Account, Depends(role_in(*EVERYONE))]) -> dict:
        """The account the token belongs to."""
        return {"name": account.name, "role": account.role, "area": account.area}

    @app.get("/api/tables", tags=["data"])
    def tables(request: Request, account: Annotated[Account, Depends(role_in(*EVERYONE))]) -> dict:
        """The tables this account may read, with their descriptions."""
        return {"tables": views.tables_for(_server(request).lake, account)}

    @app.get("/api/places", tags=["data"])
    def places(request: Request, account: Reader, category: Categories = None, format: Format = None) -> Response:
        """Places (id, name, category, outline as WKT): map data, not people data. A pilot sees those in its area."""
        fmt = chosen_format(format, request.headers.get("accept"))
        return _cached(request, account, lambda: table_response(views.places(_server(request), account, tuple(category or ())), fmt))

    @app.get("/api/footfall", tags=["people (released)"])
    def footfall(request: Request, account: Reader, by: str = "place", category: Categories = None,
                 place: Places = None, start: From = None, end: To = None,
                 format: Format = None) -> Response:
        """Released devices per place (or per H3 cell: by=cell) per hour: differentially private, fixed public partitions."""
        fmt, chosen = chosen_format(format, request.headers.get("accept")), _filters(start, end, place, category)

        def build() -> Response:
            found = views.footfall(_server(request), account, by=by, filters=chosen)
            return table_response(found.table, fmt, note=found.summary())
        return _cached(request, account, build)

    @app.get("/api/od", tags=["people (released)"])
    def od(request: Request, account: Reader, start: From = None, end: To = None, format: Format = None) -> Response:
        """Released devices travelling between two districts per day."""
        fmt, chosen = chosen_format(format, request.headers.get("accept")), _filters(start, end)

        def build() -> Response:
            found = views.od(_server(request), account, filters=chosen)
            return table_response(found.table, fmt, note=found.summary())
        return _cached(request, account, build)

    @app.get("/api/hotspots", tags=["people (released)"])
    def hotspots(request: Request, account: Reader, start: From = None, end: To = None,
                 format: Format = None) -> Response:
        """Getis-Ord Gi* hot and cold cells of the released footfall per cell over the window."""
        fmt, chosen = chosen_format(format, request.headers.get("accept")), _filters(start, end)
        return _cached(request, account, lambda: table_response(views.hotspots(_server(request), account, filters=chosen).to_arrow(), fmt))

    @app.get("/api/alerts", tags=["people (released)"])
    def alerts(request: Request, account: Reader, open_only: bool = Query(False, alias="open"), since: str | None = None,
               format: Format = None) -> Response:
        """The live watcher's released alerts, newest first: faults and drops, and crowd surges from a differentially
        private test (evidence never a count)."""
        fmt, after = chosen_format(format, request.headers.get("accept")), _time("since", since)

        def build() -> Response:
            return table_response(views.alerts(_server(request), account, open_only=open_only, since=after).to_arrow(), fmt)
        return _cached(request, account, build)

    @app.get("/api/maps/{layer}", tags=["maps"])
    def map_layer(request: Request, account: Reader, layer: str, category: Categories = None, place: Places = None,
                  start: From = None, end: To = None) -> Response:
        """A kepler.gl map (datasets and config) of footfall, od, hotspots or alerts, for the web app."""
        chosen = _filters(start, end, place, category)
        return _cached(request, account, lambda: JSONResponse(views.map_payload(_server(request), account, layer, filters=chosen)))


def _sql_routes(app: FastAPI) -> None:
    @app.post("/api/sql", tags=["sql"])
    def sql(request: Request, account: Annotated[Account, Depends(role_in(*ALLOWED["sql"]))],
            body: SqlRequest, format: Format = None) -> Response:
        """SQL in the analyst workspace (a steward's: every table): SELECT only, under the sandbox's time and memory limits."""
        text = body.sql
        if not text.strip():
            raise HTTPException(400, 'send {"sql": "SELECT …"}')
        server = _server(request)
        fmt = chosen_format(format, request.headers.get("accept"))
        with server.pool.borrow(STEWARD if account.role == STEWARD else ANALYST, who=account.name) as workspace:
            table = workspace.query(text)
        if table is None:
            return JSONResponse({"columns": [], "rows": [], "note": "the statement returned no rows"})
        if table.num_rows > server.settings["serve.max_rows"]:
            raise HTTPException(413, f"the answer has {table.num_rows:,} rows, more than the server returns "
                                     f"({server.settings['serve.max_rows']:,}, setting serve.max_rows); aggregate, or add LIMIT")
        if table.nbytes > server.pool.max_result_bytes:
            raise HTTPException(413, f"the answer holds {table.nbytes / 2**20:,.0f} MB, more than the server returns "
                                     f"({server.settings['serve.max_result_mb']} MB, setting serve.max_result_mb); select fewer or "
                                     "shorter columns, or aggregate")
        return table_response(table, fmt)


def _report_routes(app: FastAPI) -> None:
    @app.get("/api/reports", tags=["reports"])
    def reports(request: Request, account: Annotated[Account, Depends(role_in(*ALLOWED["reports"]))]) -> dict:
        """The district reports the steward published for planners."""
        return {"reports": _server(request).reports.listing()}

    @app.get("/api/reports/{name}", tags=["reports"])
    def report(request: Request, account: Annotated[Account, Depends(role_in(*ALLOWED["reports"]))], name: str,
               download: bool = False) -> FileResponse:
        """One published report (HTML, figures inside); download=true to save it."""
        path = _server(request).reports.find(name)
        return FileResponse(path, media_type="text/html", filename=path.name if download else None,
                            content_disposition_type="attachment" if download else "inline")

    @app.post("/api/reports", tags=["reports"], status_code=202)
    def make_reports(request: Request, account: Annotated[Account, Depends(role_in(*ALLOWED["make_reports"]))],
                     body: ReportRequest) -> dict:
        """The steward publishes district reports for planners (k-anonymous, like `citylake report`); runs in the background."""
        server = _server(request)
        start, end = _time("from", body.start), _time("to", body.end)
        job = server.jobs.start("reports", lambda: server.reports.make(body.places, start=start, end=end, settings=server.settings))
        return {"job": "reports", "state": job.state, "message": job.message}

    @app.get("/api/jobs/reports", tags=["reports"])
    def reports_job(request: Request, account: Annotated[Account, Depends(role_in(*ALLOWED["make_reports"]))]) -> dict:
        """Whether the steward's report run is done."""
        job = _server(request).jobs.get("reports")
        return {"state": job.state if job else "none", "message": job.message if job else ""}


def _pilot_routes(app: FastAPI) -> None:
    @app.put("/api/pilot/files/{kind}", tags=["pilot"], max_body_size=UPLOAD_BODY_LIMIT)
    async def upload(request: Request, account: Pilot, kind: str, filename: str) -> dict:
        """Upload one of the area's files (the raw body): boundary, pois, sensors, readings or pings; ``filename`` gives its
        format by its ending (.geojson, .csv, .gpkg, .zip, .parquet…). Streamed to disk; refused past serve.upload_mb."""
        desk = _server(request).pilots
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > desk.limit:
            raise HTTPException(413, f"the upload is larger than the server's limit of {desk.limit // 2**20} MB (setting serve.upload_mb)")
        try:
            path = await desk.receive(account.name, kind, filename, request.stream())
        except UploadTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return {"kind": kind, "bytes": path.stat().st_size}

    @app.post("/api/pilot/report", tags=["pilot"], status_code=202)
    def start_report(request: Request, account: Pilot, start: From = None, end: To = None) -> dict:
        """Load the uploads (validated as `citylake pilot` does) into the pilot's own lake and write its first report; runs in
        the background: GET /api/pilot/report for it."""
        server = _server(request)
        window = (_time("from", start), _time("to", end))

        def work() -> str:
            line, area = server.pilots.first_report(account.name, start=window[0], end=window[1])
            server.accounts.set_area(account.name, area.place_id)
            return line

        job = server.jobs.start(f"pilot:{account.name}:{account.created}", work)
        return {"state": job.state, "message": job.message}

    @app.get("/api/pilot/report", tags=["pilot"], response_model=None)
    def pilot_report(request: Request, account: Pilot) -> Response:
        """The pilot's first report (HTML) once made; 202 while it is being made."""
        server = _server(request)
        job = server.jobs.get(f"pilot:{account.name}:{account.created}")
        if job and job.state == "running":
            return JSONResponse({"state": "running"}, status_code=202)
        if job and job.state == "failed":
            raise HTTPException(422, job.message)
        path = server.pilots.report(account.name)
        if path is None:
            raise HTTPException(404, "no report yet: upload the boundary and files, then POST /api/pilot/report")
        return FileResponse(path, media_type="text/html")


# --- the web app and the docs ------------------------------------------------------------------------------------------


def _web(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    from citylake.viz import OWN_SCRIPTS, SCRIPTS, STYLES, VENDOR

    assets = {name: VENDOR / name for name in (*SCRIPTS, *STYLES)} | {name: VENDOR.parent / name for name in OWN_SCRIPTS}
    assets |= {path.name: path for path in WEB.iterdir() if path.suffix in (".js", ".css")}
    swagger = {name: Path(swagger_ui_path) / name for name in ("swagger-ui-bundle.js", "swagger-ui.css")}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in assets:  # a fixed list: no path from the request ever reaches the file system
            raise HTTPException(404, "no such asset")
        return FileResponse(assets[name])

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        if name not in swagger:
            raise HTTPException(404, "no such asset")
        return FileResponse(swagger[name])

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="citylake API", swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css", swagger_favicon_url="")


# --- errors, logs, parameters ------------------------------------------------------------------------------------------


def _errors(app: FastAPI) -> None:
    def one_line(status: int):
        async def handler(request: Request, err: Exception) -> JSONResponse:
            return JSONResponse({"error": " ".join(str(err).split())}, status_code=status)
        return handler

    app.exception_handler(Refused)(one_line(403))
    app.exception_handler(QueryCancelled)(one_line(408))
    app.exception_handler(BadFormat)(one_line(400))
    app.exception_handler(CitylakeError)(one_line(400))
    app.exception_handler(duckdb.Error)(one_line(400))  # the statement's own fault: a syntax error, an unknown column, out of memory

    @app.exception_handler(duckdb.IOException)  # the server's own files, not the statement: said without their paths
    async def unreadable(request: Request, err: duckdb.IOException) -> JSONResponse:
        log.error("request %s %s: %s", request.method, request.url.path, " ".join(str(err).split()))
        return JSONResponse({"error": "the server could not read what this needs; try again, or tell the steward"}, status_code=503)

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, err: ServerBusy) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in err.errors()[:3])
        return JSONResponse({"error": f"the request is not what this endpoint takes ({problems}); JSON bodies need "
                                      "Content-Type: application/json, and /docs shows each endpoint's shape"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException, and the router's own 404 and 405
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "the server failed on this request; its log has the details"}, status_code=500)


async def _log_request(request: Request, call_next):
    """One line per request: method, path (never the query string, which may name places and times), status, account, ms.
    Tokens never reach the log."""
    began = time.perf_counter()
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    if request.url.path.startswith("/api/reports/"):  # a report opened on its own runs no script and reaches nothing of ours
        response.headers["Content-Security-Policy"] = "sandbox; frame-ancestors 'none'"
    account = getattr(request.state, "account", "-")
    path = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in request.url.path)  # no terminal control codes
    log.info("%s %s %s %s %.0f ms", request.method, path, response.status_code, account, 1000 * (time.perf_counter() - began))
    return response


def _filters(start: str | None, end: str | None, place_ids=None, categories=None) -> Filters:
    return Filters(start=_time("from", start), end=_time("to", end), place_ids=tuple(place_ids or ()), categories=tuple(categories or ()))


def _time(name: str, value: str | None) -> dt.datetime | None:
    if value in (None, ""):
        return None
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}={value!r} is not an ISO time such as 2026-11-07 or 2026-11-07T08:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _version() -> str:
    from importlib.metadata import version

    return version("citylake")


__all__ = ["Server", "create_app"]

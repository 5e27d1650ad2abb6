"""The routes: the page (static/), its JSON API and its event stream.

    GET  /                      the page (Fleet, Node, Commands, Rejections are views of it)
    GET  /api/config            what the page may show: commands allowed, offline timeout, CSRF token
    GET  /api/fleet             one row a node
    GET  /api/events            server-sent events: nodes, commands, rejections
    GET  /api/node/{device}     a node: its row, readings, last boot frame, actuators
    GET  /api/node/{device}/series/{name}?from=&to=&buckets=   a chart, reduced
    GET  /api/node/{device}/events?from=&to=                  boots and event frames
    GET  /api/commands          the command queue
    POST /api/commands          queue a command (only with allow_commands; CSRF-protected)
    GET  /api/rejections        recent refused datagrams
"""
from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..infra.errors import FieldnodeError
from ..store.target import Target
from . import series as node_series
from .access import TokenGate, new_csrf_token, refuse_cross_site
from .actuators import actuator_states
from .commands import command_rows, queue_from_page
from .feed import Feed
from .fleet import fleet_rows
from .reader import open_reader

STATIC = Path(__file__).parent / "static"
_DEVICE = re.compile(r"^[0-9a-f]{12}$")
# The page's own files and nothing else: an injected <img onerror> or <script> would not run even
# if some value ever reached the page as HTML (they are all set as text).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass
class WebOptions:
    db: Target  # a SQLite file (and its shards) or a PostgreSQL store
    offline_after: float = 300.0
    allow_commands: bool = False
    keys: Path | None = None  # the keystore commands are signed with (allow_commands)
    token: str | None = None
    site: str = "default"


class _Api:
    def __init__(self, opts: WebOptions) -> None:
        self.opts = opts
        self.reader = open_reader(opts.db)
        # Charts read over their own connections: a long range aggregated from the rows (a SQLite
        # shard without minute rollups, or PostgreSQL: up to seconds for a month) holds its
        # reader's lock, and the live feed must not wait.
        self.charts = open_reader(opts.db)
        self.feed = Feed(self.reader, opts.site)
        self.csrf = new_csrf_token()

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def config(self, request: Request) -> Response:
        return _json({"allow_commands": self.opts.allow_commands, "offline_after": self.opts.offline_after,
                      "csrf": self.csrf, "site": self.opts.site, "now": time.time()})

    async def fleet(self, request: Request) -> Response:
        rows = await anyio.to_thread.run_sync(fleet_rows, self.reader, self.feed.arrivals, self.opts.site)
        return _json({"now": time.time(), "nodes": rows})

    async def events(self, request: Request) -> Response:
        q = self.feed.subscribe()
        return StreamingResponse(self.feed.stream(q), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def node(self, request: Request) -> Response:
        device = _device(request)
        return _json(await anyio.to_thread.run_sync(self._node, device))

    def _node(self, device: str) -> dict:
        rows = fleet_rows(self.reader, self.feed.arrivals, self.opts.site, {device})
        if not rows:
            raise _NotFound(f"no node {device} in the database")
        return {"now": time.time(), "node": rows[0], "series": node_series.series_of(self.reader, device),
                "boot": node_series.last_boot(self.reader, device),
                "actuators": actuator_states(self.reader, self.opts.db, device)}

    async def chart(self, request: Request) -> Response:
        device = _device(request)
        start, end = _range(request)
        buckets = _number(request, "buckets", 600)
        data = await anyio.to_thread.run_sync(node_series.reduced, self.charts, device,
                                              request.path_params["name"], start, end, buckets)
        return _json({"from": start, "to": end, **data})

    async def node_events(self, request: Request) -> Response:
        device = _device(request)
        start, end = _range(request)
        found = await anyio.to_thread.run_sync(node_series.events, self.charts, device, start, end)
        return _json({"from": start, "to": end, "events": found})

    async def commands(self, request: Request) -> Response:
        rows = await anyio.to_thread.run_sync(command_rows, self.opts.db)
        return _json({"now": time.time(), "commands": rows})

    async def queue(self, request: Request) -> Response:
        if not self.opts.allow_commands:
            return _json({"error": "commands are not allowed: start fieldnode web with --allow-commands"}, 403)
        refused = refuse_cross_site(request, self.csrf)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body must be a JSON object"}, 400)
        try:
            queued = await anyio.to_thread.run_sync(
                queue_from_page, self.opts.db, self.opts.keys, body.get("node", ""), body.get("actuator", ""),
                str(body.get("value", "")), body.get("ttl", 30))
        except FieldnodeError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(queued, 201)

    async def rejections(self, request: Request) -> Response:
        rows = await anyio.to_thread.run_sync(self.reader.rejections)
        counters = await anyio.to_thread.run_sync(self.reader.counters)
        by_reason = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("rejected.")}
        return _json({"now": time.time(), "rejections": rows, "by_reason": by_reason})


class _NotFound(Exception):
    pass


class _BadRequest(Exception):
    pass


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status, headers={"cache-control": "no-store"})


def _device(request: Request) -> str:
    device = request.path_params["device"].lower()
    if not _DEVICE.match(device):
        raise _BadRequest("a device id is 12 hex digits")
    return device


def _number(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise _BadRequest(f"{name}={text!r}: a number") from None
    if not math.isfinite(value):
        raise _BadRequest(f"{name}={text!r}: a finite number")
    return value


def _range(request: Request) -> tuple[float, float]:
    end = _number(request, "to", time.time())
    start = _number(request, "from", end - 3600)
    if not start < end:
        raise _BadRequest("from must be before to")
    return start, end


async def _not_found(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 404)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 400)


async def _fieldnode_error(request: Request, exc: Exception) -> Response:
    return _json({"error": str(exc)}, 503)


class _Headers:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)
        await self.app(scope, receive, with_headers)


def create_app(opts: WebOptions) -> Starlette:
    api = _Api(opts)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await api.feed.start()
        try:
            yield
        finally:
            await api.feed.stop()
            api.reader.close()
            api.charts.close()

    routes = [
        Route("/", api.index),
        Route("/api/config", api.config),
        Route("/api/fleet", api.fleet),
        Route("/api/events", api.events),
        Route("/api/node/{device}", api.node),
        Route("/api/node/{device}/series/{name:path}", api.chart),
        Route("/api/node/{device}/events", api.node_events),
        Route("/api/commands", api.commands, methods=["GET"]),
        Route("/api/commands", api.queue, methods=["POST"]),
        Route("/api/rejections", api.rejections),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(_Headers), Middleware(TokenGate, token=opts.token)],
                    exception_handlers={_NotFound: _not_found, _BadRequest: _bad_request,
                                        FieldnodeError: _fieldnode_error})
    app.state.api = api
    return app

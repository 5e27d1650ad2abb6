"""Who may use the page. Loopback by default; any other address needs an access token, given
once as ?token=... (then kept in an HttpOnly, SameSite=Strict cookie) or as a Bearer header and
compared in constant time. A POST must also carry the page's CSRF token in a header, as JSON, from
the page's own origin: a form on another site can do none of the three."""
from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..infra.errors import FieldnodeError

TOKEN_ENV = "FIELDNODE_WEB_TOKEN"
COOKIE = "fieldnode_token"
CSRF_HEADER = "x-fieldnode-csrf"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, token: str | None) -> None:
    """A page reachable from the network without a token would hand the fleet (and, with
    --allow-commands, the actuators) to anyone on it: refused before anything is bound."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise FieldnodeError(f"the access token is {len(token)} characters; give at least {MIN_TOKEN_CHARS} "
                             "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())')")
    if not is_loopback(host) and token is None:
        raise FieldnodeError(f"listening on {host} (beyond loopback) needs an access token: --token TOKEN or "
                             f"${TOKEN_ENV}; or listen on 127.0.0.1")


def same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenGate:
    """ASGI middleware: every request carries the token (cookie, Bearer header, or ?token= which
    sets the cookie and redirects to the same URL without it, out of the address bar and history)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        query = request.query_params.get("token")
        if query is not None:
            response: Response = self._from_query(request, query)
            await response(scope, receive, send)
            return
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        if not same_token(given, self.token):
            await PlainTextResponse("access token missing or wrong: open the address with ?token=TOKEN",
                                    status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _from_query(self, request: Request, given: str) -> Response:
        if not same_token(given, self.token):
            return PlainTextResponse("access token wrong", status_code=401)
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        # One leading slash: "//host/..." would send the browser to another site.
        target = "/" + request.url.path.lstrip("/") + ("?" + urlencode(rest) if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def refuse_cross_site(request: Request, csrf: str) -> Response | None:
    """None when a POST may proceed; else the 403 that says why."""
    if not same_token(request.headers.get(CSRF_HEADER), csrf):
        return JSONResponse({"error": "missing or wrong CSRF token: queue commands from the page"}, 403)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "the body must be JSON (application/json)"}, 415)
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return JSONResponse({"error": "cross-origin request refused"}, 403)
    if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        return JSONResponse({"error": "cross-site request refused"}, 403)
    return None

"""Serving the app: uvicorn on its own thread and event loop, on a socket bound before it starts
(so a port in use is one clear error, and port 0 gives a free port whose number is known)."""
from __future__ import annotations

import socket
import threading
import time

import uvicorn

from ..infra.errors import FieldnodeError
from ..wire.hostport import parse_listen
from .access import check_listen, is_loopback
from .app import WebOptions, create_app

DEFAULT_LISTEN = "127.0.0.1:8080"


def bind(listen: str, token: str | None, what: str = "--listen") -> socket.socket:
    host, port = parse_listen(listen, what, default_host="127.0.0.1")
    check_listen(host, token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FieldnodeError(f"{what} {listen}: {exc.strerror}; pick another port or address") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class WebServer:
    """The page served from a thread: start(), url, stop(). Used by `fieldnode web`, the
    gateway's --http, the demo and the tests."""

    def __init__(self, opts: WebOptions, listen: str = DEFAULT_LISTEN, what: str = "--listen") -> None:
        self.opts = opts
        app = create_app(opts)  # first: a wrong --db is said before anything is bound
        self.sock = bind(listen, opts.token, what)
        host, port = self.sock.getsockname()[:2]
        self.address = (host, port)
        config = uvicorn.Config(app, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = socket.gethostname()
        return f"http://{shown}:{port}/"

    def describe(self, allow_option: str | None = "--allow-commands") -> str:
        """The line printed at start: where, who may use it, whether commands can be queued. The
        token itself is never printed."""
        access = ("loopback only" if is_loopback(self.address[0]) and self.opts.token is None else
                  "beyond loopback: access token required (open the address with ?token=TOKEN once)")
        if is_loopback(self.address[0]) and self.opts.token is not None:
            access = "loopback, access token required"
        commands = "commands can be queued from the page" if self.opts.allow_commands else \
            f"read-only ({allow_option} to queue commands)" if allow_option else "read-only"
        return f"web page on {self.url} ({access}; {commands}; offline after {self.opts.offline_after:g} s)"

    def start(self, timeout: float = 30.0) -> WebServer:
        self._thread = threading.Thread(target=self._run, name="fieldnode-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise FieldnodeError(f"the web page did not start: {self._error or 'see the messages above'}")
            if time.monotonic() > deadline:
                raise FieldnodeError("the web page did not start in time")
            time.sleep(0.02)
        return self

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc

    def wait(self) -> None:
        """Until stop() (or Ctrl-C in the main thread)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.sock.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""GatewayThread: a Gateway on its own event loop in a background thread (tests, the demo)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .protocol import Gateway


class GatewayThread:
    """A Gateway on its own event loop in a background thread (tests, the demo).

    ``with GatewayThread(keys, db, ("127.0.0.1", 0)) as gt: gt.address`` — subscribers' callbacks
    run on the gateway's thread; hand events over with a queue.Queue.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gateway = Gateway(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 30) -> GatewayThread:
        self._thread = threading.Thread(target=self._run, name="fieldnode-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.gateway.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs fn(*args) on the gateway's loop and returns its result (awaited if a coroutine)."""
        async def run() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    @property
    def address(self) -> tuple[str, int]:
        return self.gateway.address

    def stop(self) -> None:
        if self._loop is None or not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

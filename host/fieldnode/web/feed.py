"""Live updates: one poller a server looks at the database twice a second and pushes what changed
to every open page as server-sent events (the fleet rows of the nodes that sent frames, and a
nudge when commands or rejections changed). One poller, not one a page: 50 pages cost the
gateway's database the same reads as one."""
from __future__ import annotations

import asyncio
import json
import logging
import time

import anyio.to_thread

from ..infra.errors import FieldnodeError
from .fleet import Arrivals, fleet_rows
from .reader import Reader

log = logging.getLogger(__name__)

POLL_S = 0.5
KEEPALIVE_S = 15.0
CLIENT_QUEUE = 64  # messages a slow page may fall behind before it is told to reload its view


class Feed:
    def __init__(self, reader: Reader, site: str) -> None:
        self.reader = reader
        self.site = site
        self.arrivals = Arrivals()
        self._clients: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self._marks: dict[int, int] = {}
        self._heads: dict[int, tuple] = {}

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._prime)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for q in list(self._clients):
            q.put_nowait(None)

    def _prime(self) -> None:
        self._heads = self.reader.heads()
        self._marks = {k: v[0] for k, v in self._heads.items()}
        self.arrivals.seed(self.reader, time.time())

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._clients.discard(q)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                messages = await anyio.to_thread.run_sync(self._changes)
            except FieldnodeError as exc:  # PostgreSQL out of reach: the next round connects again
                log.warning("reading the store for live updates failed: %s", exc)
                continue
            except Exception:  # the database busy or gone a moment: the next round tries again
                log.exception("reading the database for live updates failed")
                continue
            for message in messages:
                self._publish(message)

    def _changes(self) -> list[str]:
        heads = self.reader.heads()
        out = []
        # Asked every round, not only when a highest id moved: on PostgreSQL another gateway's
        # frame may commit below the highest id seen (pg_reader.py).
        devices, self._marks = self._new_frames()
        if devices:
            rows = fleet_rows(self.reader, self.arrivals, self.site, devices, trend=1)
            out.append(_event("nodes", {"now": time.time(), "nodes": rows}))
        if any(h[1] != self._heads.get(k, (0, (0, 0)))[1] for k, h in heads.items()):
            out.append(_event("rejections", {"now": time.time()}))
        if heads.get(0, (0, 0, ()))[2] != self._heads.get(0, (0, 0, ()))[2]:
            out.append(_event("commands", {"now": time.time()}))
        self._heads = heads
        return out

    def _new_frames(self) -> tuple[set[str], dict[int, int]]:
        found, marks = self.reader.frames_after(self._marks)
        for dev, received in found:
            self.arrivals.add(dev, received)
        return {dev for dev, _ in found}, marks

    def _publish(self, message: str) -> None:
        for q in list(self._clients):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:  # a page that does not keep up reloads its view instead
                self._drain(q)
                q.put_nowait(_event("reload", {}))

    @staticmethod
    def _drain(q: asyncio.Queue) -> None:
        while not q.empty():
            q.get_nowait()

    async def stream(self, q: asyncio.Queue):
        """The text/event-stream body for one page."""
        try:
            yield _event("hello", {"now": time.time()})
            while True:
                try:
                    message = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if message is None:
                    return
                yield message
        finally:
            self.unsubscribe(q)


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

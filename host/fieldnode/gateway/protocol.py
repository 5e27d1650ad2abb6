"""The gateway: frames in over CoAP/UDP, verified, committed to the store in batches, answered.

A datagram goes through these stages (Gateway.datagram_received, one method a stage): CoAP
decode -> hand-over to the device's worker (with N workers, handover.py) -> message-id
deduplication -> request check -> frame verification (MAC, kind, SenML, device) -> replay
window. A new frame joins the open batch and is answered (2.04, with a pending downlink command
as payload) only when its batch has committed. Everything else is answered at once: 2.03 for a
frame already stored, 4.xx with the reason as diagnostic payload for a refused one, RST for a
malformed confirmable message.

The commit runs on one worker thread so the event loop keeps receiving while SQLite writes; the
next batch is whatever arrived during the previous commit (group commit), so a slow disk makes
batches bigger, not the queue longer.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..node.keystore import Keystore
from ..store.backend import TagReader, make_writer, prepare_workers, tag_reader, writer_lock
from ..store.owners import owner_of
from ..store.records import Health, Outcome, StoreItem, StoreUnavailable
from ..store.target import PgTarget, Target, parse_db
from ..wire import coap
from ..wire.frame import NODE_KINDS, Frame, FrameRejected, ReplayWindow, Verifier, parse_protected, split_envelope
from ..wire.declaration import parse_declaration
from .events import GatewayEvent, format_source
from .exchange import PENDING, MessageCache, check_request
from .handover import HandedOverProtocol, Handover, bind_receiver
from .mqtt import MqttExtra, MqttUrl, OutboxPublisher, ReadingMessages
from .mqtt_availability import DEFAULT_NODE_TIMEOUT, Availability
from .sitekeys import SiteKeys
from .sockets import bound_socket
from .updates import UpdateServer

log = logging.getLogger(__name__)

DEFAULT_PORT = 5683
# Reasons answered 4.01 Unauthorized: the sender could not prove who it is.
_UNAUTHORIZED = frozenset(("unknown-kid", "bad-mac"))
_CF_COSE = ((coap.CONTENT_FORMAT, coap.encode_uint(coap.CONTENT_FORMAT_COSE_MAC0)),)
_MAX_AGE_RETRY = ((coap.MAX_AGE, coap.encode_uint(5)),)
REJECTIONS_A_ROUND = 100
# Frame format v2 telemetry under a declaration the gateway does not hold: 4.22 Unprocessable
# Entity (RFC 8132), well-formed and authenticated but not processable as it is; the node sends
# its declaration, then the frame again (docs/frame-format.md, "Unknown declaration").
NEED_DECLARATION = b"need-declaration"
# What a failed health write or tag look-up raises: logged, and the gateway goes on.
_STORE_ERRORS = (sqlite3.Error, StoreUnavailable)


@dataclass(slots=True)
class _Waiting:
    """A verified frame waiting for its batch to commit, and every request to answer then
    (the first, plus copies of the frame that came with a new message id meanwhile)."""
    item: StoreItem
    replies: list[tuple[coap.Message, Any]] = field(default_factory=list)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.gateway.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for answers to a node that has gone away: nothing to do, the node retries.
        log.debug("udp error: %s", exc)


def site_from_keystore(path: Path | None) -> str:
    """The default MQTT site: the keystore file's name ('farm-north.json' -> 'farm-north');
    'default' for the generic name keys.json."""
    stem = path.stem if path is not None else ""
    return stem if stem and stem != "keys" else "default"



class Gateway:
    """The CoAP frame gateway as a library object (the CLI, the demo and the tests use it).

    Run it with ``await gateway.start()`` / ``await gateway.stop()`` (or ``async with``) on an
    event loop, or in a background thread with GatewayThread. ``address`` is the bound (host,
    port); pass port 0 for an ephemeral one. ``subscribe(callback)`` gets a GatewayEvent per
    datagram, on the event loop's thread.
    """

    def __init__(self, keys: Keystore, db_path: Target | str, listen: tuple[str, int] = ("0.0.0.0", DEFAULT_PORT),
                 *, mqtt: MqttUrl | str | None = None, site: str | None = None, publish_mqtt: bool = True,
                 batch_delay: float = 0.002, batch_max: int = 256, synchronous: str = "FULL",
                 reuse_port: bool = False, worker: int = 0, workers: int = 1, group: str | None = None,
                 health_interval: float = 1.0, cache: MessageCache | None = None,
                 command_resend: float = 30.0, mqtt_retry: float = 2.0,
                 mqtt_discovery: str | None = None, mqtt_commands: bool = False,
                 node_timeout: float = DEFAULT_NODE_TIMEOUT, strict_keys: bool = False,
                 updates: Path | None = None, store_backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        # A keystore changed to be readable by others: not taken (strict), or taken with a warning.
        self._keys = SiteKeys(keys, "refuse" if strict_keys else "warn")
        # A str is what --db would take: a path, or a postgresql:// URI.
        self.db_path: Target = parse_db(db_path) if isinstance(db_path, str) else db_path
        self.listen = listen
        self.mqtt = MqttUrl.parse(mqtt) if isinstance(mqtt, str) else mqtt
        self.site = site or site_from_keystore(keys.path)
        self.publish_mqtt = publish_mqtt
        self.batch_delay = batch_delay
        self.batch_max = batch_max
        self.reuse_port = reuse_port
        self.worker = worker
        self.workers = workers
        # Names the workers' hand-over sockets: the workers of one gateway share it.
        self.group = group or str(os.getpid())
        self.health_interval = health_interval
        self.mqtt_retry = mqtt_retry
        self.mqtt_discovery = mqtt_discovery
        self.mqtt_commands = mqtt_commands
        self.node_timeout = node_timeout
        self.counts: dict[str, int] = {}
        self.started = 0.0
        self._unsaved: dict[str, int] = {}
        # Refused datagrams for the store's rejections table; a flood keeps the newest of a round.
        self._rejections: collections.deque = collections.deque(maxlen=REJECTIONS_A_ROUND)
        self._window = ReplayWindow()
        self._verifier = Verifier(self._keys.lookup, None, accept_kinds=NODE_KINDS)
        self._cache = cache if cache is not None else MessageCache()  # an empty one is falsy (len 0)
        outbox = ReadingMessages(self.mqtt.prefix, self.site) if self.mqtt else None
        self._store = make_writer(self.db_path, synchronous=synchronous, outbox=outbox,
                                  command_resend=command_resend, shard=worker, backoff=store_backoff)
        self._writer_lock = writer_lock(self.db_path, worker)
        self._executor: ThreadPoolExecutor | None = None
        self._reader: TagReader | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._handover: asyncio.DatagramTransport | None = None
        self._peers: Handover | None = None  # made on the loop in start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: list[_Waiting] = []
        self._waiting: dict[tuple[bytes, int], _Waiting] = {}
        self._committing: asyncio.Future | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._housekeeping: asyncio.Task | None = None
        self._publisher: OutboxPublisher | None = None
        self._subscribers: list[Callable[[GatewayEvent], None]] = []
        self._closing = False
        self._next_mid = int.from_bytes(os.urandom(2), "big")
        self._idle: asyncio.Event | None = None  # created on the loop in start()
        self.restored_devices = 0
        # Update offers and images (docs/updates.md), from the updates directory beside the database.
        # A PostgreSQL store has no "beside": such a gateway offers no update (docs/updates.md).
        from ..updates.site import updates_dir
        if updates is None and not isinstance(self.db_path, PgTarget):
            updates = updates_dir(self.db_path)
        self._updates = UpdateServer(updates) if updates is not None else None

    # -- life cycle ------------------------------------------------------------------------------

    async def start(self) -> Gateway:
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._peers = Handover(self._loop, self.group)
        sock = self._bind()  # first: a port in use is the likeliest mistake, and opens nothing else
        try:
            self._writer_lock.acquire()
        except BaseException:
            sock.close()
            raise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fieldnode-store")
        try:
            if self.workers > 1:  # every shard there before any worker attaches the others
                await self._loop.run_in_executor(self._executor, prepare_workers, self.db_path, self.workers)
            await self._loop.run_in_executor(self._executor, self._store.open)
            await self._restore()
            self._reader = tag_reader(self.db_path, self.worker)
            if self.workers > 1:
                self._handover, _ = await self._loop.create_datagram_endpoint(
                    lambda: HandedOverProtocol(self._take_handed_over), sock=bind_receiver(self.group, self.worker))
            self._transport, _ = await self._loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
            self.started = time.time()
            await self._loop.run_in_executor(self._executor, self._store.housekeeping, {}, self._health())
        except BaseException:
            if self._transport is not None:
                self._transport.close()
            else:
                sock.close()
            if self._handover is not None:
                self._handover.close()
            if self._reader is not None:
                self._reader.close()
            await self._loop.run_in_executor(self._executor, self._store.close)
            self._executor.shutdown(wait=True)
            self._writer_lock.release()
            raise
        if self.mqtt and self.publish_mqtt:
            # Each worker publishes its own shard's outbox: a device's readings stay in order.
            self._publisher = self._make_publisher()
            self._publisher.start()
        self._housekeeping = asyncio.create_task(self._housekeeping_loop())
        return self

    async def _restore(self) -> None:
        """What the store remembers across a restart: each key id's replay window, and the
        declarations of frame format v2 nodes."""
        restored = await self._loop.run_in_executor(self._executor, lambda: list(self._store.replay_state()))
        for kid, highest, stored in restored:
            self._window.restore(kid, highest)
            # Counters in the window that never arrived stay acceptable after a restart.
            for c in range(max(1, highest - ReplayWindow.SIZE + 1), highest + 1):
                if c not in stored:
                    self._window.forget(kid, c)
        self.restored_devices = len(restored)
        for device, payload in await self._loop.run_in_executor(self._executor, self._store.declarations):
            self._verifier.declarations.add(device, parse_declaration(payload))

    def _make_publisher(self) -> OutboxPublisher:
        client_id = f"fieldnode-{self.site}-{os.getpid()}-w{self.worker}"
        if isinstance(self.db_path, PgTarget):  # one gateway on the database publishes for all
            from .mqtt_pg import PgOutboxPublisher
            return PgOutboxPublisher(self.db_path, self.mqtt, retry=self.mqtt_retry, client_id=client_id,
                                     extras=self._mqtt_extras())
        return OutboxPublisher(self._store.own_path, self.mqtt, retry=self.mqtt_retry, client_id=client_id,
                               extras=self._mqtt_extras())

    def _mqtt_extras(self) -> tuple[MqttExtra, ...]:
        """Availability always; discovery and the command topic when asked for. Commands live in
        shard 0, so worker 0 alone takes them (N subscribers would queue each one N times)."""
        extras: list[MqttExtra] = [Availability(self.mqtt.prefix, self.site, self.node_timeout)]
        if self.mqtt_discovery:
            from .mqtt_discovery import Discovery
            extras.append(Discovery(self.mqtt.prefix, self.site, self.mqtt_discovery, actuators=self.mqtt_commands))
        if self.mqtt_commands and self.worker == 0:
            from .mqtt_commands import MqttCommands
            extras.append(MqttCommands(self.db_path, self.mqtt.prefix, self.site, lambda: self.keys))
        return tuple(extras)

    def _bind(self) -> socket.socket:
        host, port = self.listen
        return bound_socket(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port), self.reuse_port,
                             lambda why: f"cannot listen on {host}:{port}: {why}; pick another --listen "
                                         "HOST:PORT (is another gateway running?)")

    async def stop(self) -> None:
        """Stops taking datagrams, commits and answers what is pending, closes the store."""
        if self._loop is None or self._closing:
            return
        self._closing = True
        try:
            await self._close()
        finally:
            self._writer_lock.release()

    async def _close(self) -> None:
        if self._housekeeping:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        await self.drain()
        try:
            health = self._health_with_rejections()
            health.stopped = time.time()
            await self._loop.run_in_executor(self._executor, self._store.housekeeping, self._take_unsaved(), health)
        except _STORE_ERRORS as exc:
            log.warning("final health write failed: %s", exc)
        if self._transport:
            self._transport.close()
        if self._handover:
            self._handover.close()
        if self._peers:
            self._peers.close()
        if self._publisher:
            await self._loop.run_in_executor(None, self._publisher.stop)
        await self._loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)
        if self._reader:
            self._reader.close()

    async def drain(self) -> None:
        """Waits until every frame received so far is committed and answered."""
        while self._batch or self._committing is not None:
            if self._committing is None:
                self._flush()
            await self._idle.wait()

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("gateway not started")
        return self._transport.get_extra_info("sockname")[:2]

    @property
    def keys(self) -> Keystore:
        """The keys in use (the keystore file is taken again when it changes)."""
        return self._keys.keys

    @property
    def store_state(self) -> str:
        """'connected', or since when and why the database is out of reach (PostgreSQL)."""
        return getattr(self._store, "state", "connected")

    @property
    def mqtt_state(self) -> str:
        if self._publisher is None:
            return "off"
        return self._publisher.state + (f" ({self._publisher.detail})" if self._publisher.detail else "")

    def subscribe(self, callback: Callable[[GatewayEvent], None]) -> Callable[[], None]:
        """callback(event) for every datagram from now on; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def pending(self) -> int:
        """Frames received and not yet committed."""
        return sum(len(w.replies) for w in self._waiting.values())

    # -- datagrams -------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any, handed_over: bool = False) -> None:
        """The handler for one datagram (the tests call it directly for speed). handed_over: it
        came from another worker, which counted it.

        Each stage answers (or drops) the datagram it stops, and says whether it goes on."""
        if self._closing:
            return  # the node retransmits to the next gateway run
        if not handed_over:
            self._count("datagrams")
        msg = self._decode(data, addr)
        if msg is None or not self._is_request(msg, addr):
            return
        if self.workers > 1 and not handed_over and self._handed_to_owner(msg, data, addr):
            return
        key = (addr, msg.mid)
        if self._retransmission(msg, key, addr) or self._served_update(msg, addr) \
                or self._refused_request(msg, addr):
            return
        frame = self._verify(msg, addr)
        if frame is not None and not self._undeclared(msg, addr, frame):
            self._replay_window(msg, key, addr, frame)

    def _take_handed_over(self, data: bytes, addr: Any) -> None:
        self.datagram_received(data, addr, handed_over=True)

    def _decode(self, data: bytes, addr: Any) -> coap.Message | None:
        """CoAP decode: a malformed confirmable message is answered RST."""
        try:
            return coap.decode(data)
        except coap.CoapError as exc:
            if exc.mtype == coap.CON and exc.mid is not None:
                self._send(coap.reset(exc.mid), addr)
            self._finish("rejected", addr, reason="bad-coap", detail=exc.detail)
            return None

    def _is_request(self, msg: coap.Message, addr: Any) -> bool:
        """ACK and RST are ignored; a CoAP ping and any other non-request are answered RST."""
        if msg.mtype >= coap.ACK:
            # The gateway sends no confirmable messages, so an ACK or RST matches nothing.
            self._finish("ignored", addr, detail=coap.TYPE_NAMES[msg.mtype])
            return False
        if msg.code != coap.EMPTY and coap.is_request(msg.code):
            return True
        if msg.mtype == coap.CON:
            self._send(coap.reset(msg.mid), addr)  # an Empty CON is a CoAP ping (§4.3)
        if msg.code == coap.EMPTY and msg.mtype == coap.CON:
            self._finish("ping", addr)
        else:
            self._finish("rejected", addr, reason="bad-coap",
                         detail=f"{coap.TYPE_NAMES[msg.mtype]} {coap.code_text(msg.code)} is not a request")
        return False

    def _handed_to_owner(self, msg: coap.Message, data: bytes, addr: Any) -> bool:
        """With N workers: a frame of another worker's device goes to that worker, undecoded."""
        owner = self._owner(msg.payload)
        if owner == self.worker:
            return False
        self._hand_over(owner, data, addr)
        return True

    def _retransmission(self, msg: coap.Message, key: tuple, addr: Any) -> bool:
        """Message-id deduplication: a message id seen before gets the cached answer again (or
        none yet, while its frame waits for the commit)."""
        cached = self._cache.get(key)
        if cached is None:
            return False
        if cached is not PENDING and msg.mtype == coap.CON:
            self._send(cached, addr)
        self._finish("retransmission", addr)
        return True

    def _served_update(self, msg: coap.Message, addr: Any) -> bool:
        """GET /u/...: a block of an update's manifest or image (gateway/updates.py)."""
        if not UpdateServer.handles(msg):
            return False
        if self._updates is None:
            self._answer(msg, addr, coap.NOT_FOUND, b"no updates here")
            self._finish("rejected", addr, code=coap.NOT_FOUND, reason="no updates here")
            return True
        c, payload, options = self._updates.answer(msg)
        self._answer(msg, addr, c, payload, options)
        self._finish("update-block" if c == coap.CONTENT else "rejected", addr, code=c,
                     reason="" if c == coap.CONTENT else payload.decode())
        return True

    def _refused_request(self, msg: coap.Message, addr: Any) -> bool:
        """Request check: method, path, options (exchange.check_request)."""
        problem = check_request(msg)
        if problem is None:
            return False
        self._answer(msg, addr, problem[0], problem[1].encode())
        self._finish("rejected", addr, reason=problem[1], code=problem[0])
        return True

    def _verify(self, msg: coap.Message, addr: Any) -> Frame | None:
        """Frame verification (MAC, kind, SenML, device); a refused frame is answered 4.01 or 4.00."""
        try:
            return self._verifier.verify(msg.payload)
        except FrameRejected as exc:
            c = coap.UNAUTHORIZED if exc.reason in _UNAUTHORIZED else coap.BAD_REQUEST
            self._answer(msg, addr, c, exc.reason.encode())
            self._finish("rejected", addr, reason=exc.reason, code=c, detail=exc.detail)
        except Exception:
            # A bug in the decoder, hit by some datagram: say so loudly, answer 5.00, keep serving
            # the other nodes. The hostile-input tests require this to stay at zero.
            log.exception("verifying a frame from %s failed unexpectedly", format_source(addr))
            self._answer(msg, addr, coap.INTERNAL_SERVER_ERROR, b"internal-error")
            self._finish("failed", addr, reason="internal-error", code=coap.INTERNAL_SERVER_ERROR)
        return None

    def _undeclared(self, msg: coap.Message, addr: Any, frame: Frame) -> bool:
        """v2 telemetry whose declaration the gateway lacks: not stored (its counter stays free),
        answered 4.22 need-declaration."""
        if not frame.undeclared:
            return False
        self._answer(msg, addr, coap.UNPROCESSABLE_ENTITY, NEED_DECLARATION)
        self._finish("rejected", addr, reason="need-declaration", code=coap.UNPROCESSABLE_ENTITY, frame=frame,
                     detail=f"declaration {frame.declaration.hex()} unknown: asked for it")
        return True

    def _replay_window(self, msg: coap.Message, key: tuple, addr: Any, frame: Frame) -> None:
        """Replay window: a new frame joins the batch; the same frame again waits with it or is
        answered 2.03; another frame with a taken counter is a replay."""
        device, kid, counter = frame.kid[:6], frame.kid, frame.counter
        wkey = (kid, counter)
        # A declaration (frame format v2) is outside the window: the store keeps it by its id.
        if (frame.declared is not None and wkey not in self._waiting) or self._window.accept(kid, counter):
            waiting = _Waiting(StoreItem(frame, msg.payload, time.time(), format_source(addr),
                                         self._keys.name(device)), [(msg, addr)])
            self._waiting[wkey] = waiting
            self._cache.put(key, PENDING)
            self._enqueue(waiting)
            return
        waiting = self._waiting.get(wkey)
        if waiting is not None and waiting.item.frame.tag == frame.tag:
            # The same frame again (new message id) before the first copy committed: answer both
            # when the commit is done.
            waiting.replies.append((msg, addr))
            self._cache.put(key, PENDING)
            return
        try:
            tag = self._reader.stored_tag(kid, counter)
        except StoreUnavailable:
            self._answer(msg, addr, coap.SERVICE_UNAVAILABLE, b"store-failed", _MAX_AGE_RETRY)
            self._finish("failed", addr, reason="store-failed", code=coap.SERVICE_UNAVAILABLE, frame=frame)
            return
        if tag is not None and hmac.compare_digest(tag, frame.tag):
            self._answer(msg, addr, coap.VALID)
            self._finish("duplicate", addr, code=coap.VALID, frame=frame)
        else:
            self._answer(msg, addr, coap.BAD_REQUEST, b"replay")
            self._finish("rejected", addr, reason="replay", code=coap.BAD_REQUEST, frame=frame,
                         detail=f"kid {kid.hex()} counter {counter}")

    def _owner(self, payload: bytes) -> int:
        """The worker of the frame's device; this one for anything that is not a frame (it is
        refused here, as by any worker)."""
        try:
            kid = parse_protected(split_envelope(payload)[0])[1]
        except Exception:
            return self.worker
        return owner_of(kid[:6], self.workers)

    def _hand_over(self, owner: int, data: bytes, addr: Any) -> None:
        self._count("handed_over" if self._peers.send(owner, data, addr) else "hand_over_dropped")

    # -- batching and commit ---------------------------------------------------------------------

    def _enqueue(self, waiting: _Waiting) -> None:
        self._batch.append(waiting)
        self._idle.clear()
        if self._committing is not None:
            return  # goes with the next batch, started when this commit is done
        if len(self._batch) >= self.batch_max:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self.batch_delay, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._committing is not None or not self._batch:
            return
        batch, self._batch = self._batch, []
        deltas = self._take_unsaved()
        fut = self._loop.run_in_executor(self._executor, self._store.commit, [w.item for w in batch],
                                         deltas, self._health())
        self._committing = fut
        fut.add_done_callback(lambda f: self._committed(batch, deltas, f))

    def _committed(self, batch: list[_Waiting], deltas: dict[str, int], fut: asyncio.Future) -> None:
        self._committing = None
        try:
            outcomes: list[Outcome] | None = fut.result()
        except Exception as exc:  # the store is broken (disk full, I/O error): tell the nodes
            # An unreachable database is logged by the store when it goes and when it comes back.
            (log.debug if isinstance(exc, StoreUnavailable) else log.error)(
                "commit of %d frames failed: %s", len(batch), exc)
            outcomes = None
            for k, v in deltas.items():
                self._unsaved[k] = self._unsaved.get(k, 0) + v
        for i, waiting in enumerate(batch):
            frame = waiting.item.frame
            self._waiting.pop((frame.kid, frame.counter), None)
            outcome = outcomes[i] if outcomes is not None else None
            if outcome is None or outcome.status == "unstorable":
                # Taken again when retransmitted (and for an unstorable one, refused again the
                # same way, not as a replay).
                self._window.forget(frame.kid, frame.counter)
            elif outcome.status == "stored" and self._publisher is not None:
                self._publisher.wake()
            for n, (msg, addr) in enumerate(waiting.replies):
                self._reply_committed(waiting, outcome, n == 0, msg, addr)
        if self._batch:
            self._flush()
        else:
            self._idle.set()

    def _reply_committed(self, waiting: _Waiting, outcome: Outcome | None, first: bool,
                         msg: coap.Message, addr: Any) -> None:
        frame, node = waiting.item.frame, waiting.item.node
        if outcome is None:
            self._answer(msg, addr, coap.SERVICE_UNAVAILABLE, b"store-failed", _MAX_AGE_RETRY)
            self._finish("failed", addr, reason="store-failed", code=coap.SERVICE_UNAVAILABLE, frame=frame, node=node)
        elif outcome.status == "stored" and first:
            if outcome.command is not None:
                self._answer(msg, addr, coap.CHANGED, outcome.command, _CF_COSE)
            else:
                offer = self._updates.offer_option(frame.kid) if self._updates else ()
                self._answer(msg, addr, coap.CHANGED, options=offer)
            self._finish("accepted", addr, code=coap.CHANGED, frame=frame, node=node, command_id=outcome.command_id)
        elif outcome.status == "unstorable":
            self._answer(msg, addr, coap.BAD_REQUEST, b"unstorable")
            self._finish("rejected", addr, reason="unstorable", code=coap.BAD_REQUEST, frame=frame, node=node,
                         detail="verified, but the database cannot hold its values")
        elif outcome.status in ("stored", "duplicate"):
            self._answer(msg, addr, coap.VALID)
            self._finish("duplicate", addr, code=coap.VALID, frame=frame, node=node)
        else:
            self._answer(msg, addr, coap.BAD_REQUEST, b"replay")
            self._finish("rejected", addr, reason="replay", code=coap.BAD_REQUEST, frame=frame, node=node,
                         detail=f"kid {frame.kid.hex()} counter {frame.counter} (in the database)")

    # -- answers, counters, events ---------------------------------------------------------------

    def _answer(self, req: coap.Message, addr: Any, c: int, payload: bytes = b"",
                options: tuple[tuple[int, bytes], ...] = ()) -> None:
        if req.mtype == coap.CON:
            msg = coap.Message(coap.ACK, c, req.mid, req.token, list(options), payload)
        else:  # a NON request gets a NON response with our own message id (§5.2.3)
            self._next_mid = (self._next_mid + 1) & 0xFFFF
            msg = coap.Message(coap.NON, c, self._next_mid, req.token, list(options), payload)
        data = coap.encode(msg)
        self._cache.put((addr, req.mid), data)
        self._send(data, addr)

    def _send(self, data: bytes, addr: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self._unsaved[name] = self._unsaved.get(name, 0) + 1

    def _finish(self, outcome: str, addr: Any, *, reason: str = "", code: int | None = None,
                frame: Frame | None = None, node: str = "", command_id: int | None = None,
                detail: str = "") -> None:
        self._count(f"rejected.{reason}" if outcome == "rejected" else outcome)
        if outcome == "rejected":
            device = frame.kid[:6].hex() if frame is not None else ""
            self._rejections.append((time.time(), format_source(addr), reason, detail[:200], device))
        if self._subscribers:
            if frame is not None and not node:
                node = self._keys.name(frame.kid[:6])
            event = GatewayEvent(outcome, addr, time.time(), reason, code, frame, node, command_id, detail)
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:  # a broken viewer must not stop the gateway
                    log.exception("gateway subscriber failed")

    def _take_unsaved(self) -> dict[str, int]:
        out, self._unsaved = self._unsaved, {}
        return out

    def _health(self) -> Health:
        host, port = self.address if self._transport else self.listen
        return Health(self.worker, os.getpid(), format_source((host, port)), self.started or time.time(),
                      batch_pending=len(self._batch), exchanges=len(self._cache), dedup_bytes=self._cache.bytes)

    def _health_with_rejections(self) -> Health:
        """The health row for a housekeeping round, with the datagrams refused since the last one
        (only housekeeping writes them: a batch's commit takes a health row too)."""
        health = self._health()
        health.rejections = list(self._rejections)
        self._rejections.clear()
        return health

    # -- housekeeping ----------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            self._cache.purge()
            self._keys.reload()
            deltas = self._take_unsaved()
            try:
                # Shielded: stop() cancels this loop, and a write still queued behind a commit
                # (a busy machine) was cancelled with it, losing the counts it had taken. It runs
                # to its end instead, before the final one (the executor has one thread).
                await asyncio.shield(self._loop.run_in_executor(self._executor, self._store.housekeeping,
                                                                deltas, self._health_with_rejections()))
            except _STORE_ERRORS as exc:  # an unreachable database: the store has said so
                (log.debug if isinstance(exc, StoreUnavailable) else log.warning)("health write failed: %s", exc)
                for k, v in deltas.items():
                    self._unsaved[k] = self._unsaved.get(k, 0) + v

"""An independent CoAP peer for a virtual node: aiocoap's server on loopback, and a tap between
the node and it that records every datagram both ways, decoded by aiocoap's own codec
(aiocoap.Message.decode), and can drop, duplicate or answer one itself (a Reset, built by
aiocoap.Message.encode). Nothing here uses fieldnode's CoAP code: a bug in the node's client and
in our codec cannot agree with each other and pass.

    node ── udp ──> Tap (127.0.0.1:tap port) ── udp ──> aiocoap server (127.0.0.1:its port)
"""
from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import aiocoap.resource
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from fieldnode.node.devicelink import DeviceLink
from fieldnode.node.keystore import Keystore
from fieldnode.infra.paths import BOARDS_DIR
from fieldnode.node.provisioning import Settings, provision
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode

import cbor2

FROM_NODE = "node->server"
TO_NODE = "server->node"


def frame_counter(frame: bytes) -> int:
    """The counter of a COSE_Mac0 frame (protected header label 6, 4 bytes big-endian; our
    docs/frame-format.md), read with cbor2 alone."""
    obj = cbor2.loads(frame)
    protected = cbor2.loads(obj.value[0])
    return int.from_bytes(protected[6], "big")


@dataclass
class Request:
    """What the aiocoap resource at /f was handed: one per exchange (aiocoap removes
    retransmissions). Its Site routed the request by Uri-Path; the rest of the path is empty."""
    mtype: Type
    code: Code
    mid: int
    token: bytes
    rest_of_path: tuple[str, ...]
    content_format: int | None
    payload: bytes


class FrameResource(aiocoap.resource.Resource):
    """POST /f: records the request and answers 2.04 Changed. delay(counter) -> seconds the
    answer waits; longer than aiocoap's EMPTY_ACK_DELAY (0.1 s) makes it a separate response
    (aiocoap sends the empty ACK, then the response as a CON of its own)."""

    def __init__(self, delay: Callable[[int], float]) -> None:
        super().__init__()
        self.delay = delay
        self.requests: list[Request] = []

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        cf = request.opt.content_format
        self.requests.append(Request(request.mtype, request.code, request.mid, request.token,
                                     tuple(request.opt.uri_path), None if cf is None else int(cf),
                                     request.payload))
        wait = self.delay(frame_counter(request.payload))
        if wait:
            await asyncio.sleep(wait)
        return aiocoap.Message(code=Code.CHANGED)


class AiocoapServer:
    """aiocoap's server context on 127.0.0.1 (a port the kernel picks), on its own event loop."""

    def __init__(self, delay: Callable[[int], float] = lambda counter: 0) -> None:
        self.resource = FrameResource(delay)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.context: aiocoap.Context | None = None
        self.address: tuple[str, int] | None = None

    def __enter__(self) -> AiocoapServer:
        self.thread.start()
        self.context, self.address = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> tuple[aiocoap.Context, tuple[str, int]]:
        site = aiocoap.resource.Site()
        site.add_resource(["f"], self.resource)
        ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0), transports=["udp6"])
        # the port the kernel gave the udp6 transport's socket (bound to ::ffff:127.0.0.1)
        (interface,) = ctx.request_interfaces
        sock = interface.token_interface.message_interface.transport.get_extra_info("socket")
        return ctx, ("127.0.0.1", sock.getsockname()[1])

    def requests(self) -> list[Request]:
        return asyncio.run_coroutine_threadsafe(self._copy(), self.loop).result(10)

    async def _copy(self) -> list[Request]:
        return list(self.resource.requests)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.context.shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Datagram:
    direction: str
    data: bytes
    message: aiocoap.Message  # as aiocoap decodes it
    action: str = "forward"  # what the tap did with it


# What the tap does with one datagram: pass it on, drop it, pass it on twice, or (from the node)
# answer it with a Reset itself.
FORWARD, DROP, DUPLICATE, RESET = "forward", "drop", "duplicate", "reset"


class Tap(threading.Thread):
    """The node's gateway address: passes datagrams between the node and the server and keeps
    them all (decoded by aiocoap). decide(direction, message, seen) -> FORWARD, DROP, DUPLICATE or
    RESET, where seen is the list of datagrams before this one."""

    def __init__(self, server: tuple[str, int],
                 decide: Callable[[str, aiocoap.Message, list[Datagram]], str] = lambda *a: FORWARD) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.decide = decide
        self.node_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.node_side.bind(("127.0.0.1", 0))
        self.server_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server_side.bind(("127.0.0.1", 0))
        self.address = self.node_side.getsockname()
        self.node: tuple[str, int] | None = None
        self.seen: list[Datagram] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            ready, _, _ = select.select([self.node_side, self.server_side], [], [], 0.2)
            for sock in ready:
                data, addr = sock.recvfrom(2048)
                if sock is self.node_side:
                    self.node = addr
                    self._pass(FROM_NODE, data, self.server_side, self.server)
                elif self.node is not None:
                    self._pass(TO_NODE, data, self.node_side, self.node)

    def _pass(self, direction: str, data: bytes, out: socket.socket, to: tuple[str, int]) -> None:
        message = aiocoap.Message.decode(data)
        with self.changed:
            action = self.decide(direction, message, list(self.seen))
            self.seen.append(Datagram(direction, data, message, action))
            self.changed.notify_all()
        if action == RESET:  # the tap answers a request from the node itself, instead of the server
            assert direction == FROM_NODE, "only a message from the node can be reset"
            rst = aiocoap.Message(_mtype=Type.RST, _mid=message.mid, code=Code.EMPTY).encode()
            with self.changed:
                self.seen.append(Datagram(TO_NODE, rst, aiocoap.Message.decode(rst)))
                self.changed.notify_all()
            self.node_side.sendto(rst, self.node)
            return
        for _ in range({FORWARD: 1, DROP: 0, DUPLICATE: 2}[action]):
            out.sendto(data, to)

    def wait(self, predicate: Callable[[list[Datagram]], object], timeout: float, what: str):
        """Blocks until predicate(datagrams so far) is true (returns its value), or fails."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                value = predicate(list(self.seen))
                if value:
                    return value
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; saw {len(self.seen)} datagrams"
                self.changed.wait(left)

    def __enter__(self) -> Tap:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping = True
        self.join(5)
        self.node_side.close()
        self.server_side.close()


def requests_of(seen: list[Datagram]) -> list[Datagram]:
    return [d for d in seen if d.direction == FROM_NODE and d.message.code.is_request()]


def start_node(tmp: Path, gateway: tuple[str, int]) -> tuple[VirtualNode, Keystore]:
    """A virtual node (board virtual.json, a frame a second) provisioned with gateway as its
    gateway, as `fieldnode provision` does it; returns it running and the keystore with its key."""
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    for sensor in doc["sensors"]:
        sensor["period_s"] = 1
    board = tmp / "board.json"
    board.write_text(json.dumps(doc))
    keys = tmp / "keys.json"
    Keystore(keys, []).save()
    install_app(tmp / "node" / "flash", board)
    node = VirtualNode(tmp / "node", sim_unique_id(1, 0x0C), board=board, devices=devices_for_board(doc))
    node.start()
    try:
        node.wait_output(b"not sending", timeout=30)
        with DeviceLink(node.port) as link:
            provision(link, Keystore.load(keys), Settings(name="oracle-1", gateway=f"{gateway[0]}:{gateway[1]}",
                                                          wifi_ssid="plant-floor", wifi_password="sim"))
            link.reset()
    except BaseException:
        node.stop()
        raise
    return node, Keystore.load(keys)

"""Virtual nodes on loopback for load tests and the bench: asyncio CoAP senders.

Each sender is one UDP socket (one source port, as a node has), sends confirmable POSTs of
pre-built frames and retransmits per RFC 7252 (ACK_TIMEOUT 2 s x random 1-1.5, doubling,
MAX_RETRANSMIT 4). It records the time from the first transmission to the answer.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

from fieldnode.wire import coap

ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
_OPTIONS = [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")]


@dataclass
class LoadResult:
    sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    gave_up: int = 0
    retransmissions: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    @property
    def acked(self) -> int:
        return sum(self.codes.values())


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future] = {}

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            msg = coap.decode(data)
        except coap.CoapError:
            return
        fut = self.waiting.pop(msg.mid, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)


class Sender:
    def __init__(self, transport: asyncio.DatagramTransport, endpoint: _Endpoint, result: LoadResult) -> None:
        self.transport, self.endpoint, self.result = transport, endpoint, result
        self.mid = random.getrandbits(16)

    async def post(self, frame: bytes) -> coap.Message | None:
        self.mid = (self.mid + 1) & 0xFFFF
        data = coap.encode(coap.Message(coap.CON, coap.POST, self.mid, os.urandom(4), _OPTIONS, frame))
        loop = asyncio.get_running_loop()
        timeout = ACK_TIMEOUT * random.uniform(1, ACK_RANDOM_FACTOR)
        start = time.perf_counter()
        self.result.sent += 1
        for attempt in range(MAX_RETRANSMIT + 1):
            fut = loop.create_future()
            self.endpoint.waiting[self.mid] = fut
            self.transport.sendto(data)
            try:
                msg = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.result.retransmissions += attempt < MAX_RETRANSMIT
                timeout *= 2
                continue
            self.result.latencies.append(time.perf_counter() - start)
            code = coap.code_text(msg.code)
            self.result.codes[code] = self.result.codes.get(code, 0) + 1
            return msg
        self.result.gave_up += 1
        return None


async def open_senders(addr: tuple[str, int], n: int, result: LoadResult) -> list[Sender]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        transport, endpoint = await loop.create_datagram_endpoint(_Endpoint, remote_addr=addr)
        out.append(Sender(transport, endpoint, result))
    return out


async def run_paced(addr: tuple[str, int], frames: list[list[bytes]], interval: float = 1.0) -> LoadResult:
    """Sender i sends frames[i] one every `interval` seconds (random phase), like nodes do."""
    result = LoadResult()
    senders = await open_senders(addr, len(frames), result)

    async def node(s: Sender, fs: list[bytes]) -> None:
        await asyncio.sleep(random.uniform(0, interval))
        t0 = time.perf_counter()
        pending = []
        for k, f in enumerate(fs):
            pending.append(asyncio.create_task(s.post(f)))
            await asyncio.sleep(max(0.0, t0 + (k + 1) * interval - time.perf_counter()))
        await asyncio.gather(*pending)

    t = time.perf_counter()
    await asyncio.gather(*(node(s, fs) for s, fs in zip(senders, frames, strict=True)))
    result.elapsed = time.perf_counter() - t
    for s in senders:
        s.transport.close()
    return result


async def run_closed(addr: tuple[str, int], frames: list[list[bytes]]) -> LoadResult:
    """Every sender sends its next frame as soon as the previous one is answered (a node emptying
    its spool): the gateway's sustained rate for this many concurrent senders."""
    result = LoadResult()
    senders = await open_senders(addr, len(frames), result)

    async def node(s: Sender, fs: list[bytes]) -> None:
        for f in fs:
            await s.post(f)

    t = time.perf_counter()
    await asyncio.gather(*(node(s, fs) for s, fs in zip(senders, frames, strict=True)))
    result.elapsed = time.perf_counter() - t
    for s in senders:
        s.transport.close()
    return result

"""Live intake of frames: console lines or datagrams in, verified frames and rejections out."""
from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..wire.console import BadFrameLine, frame_from_line
from ..infra.errors import FieldnodeError
from ..wire.frame import KIND_NAMES, Frame, FrameRejected, ReplayWindow, Verifier
from ..wire.declaration import DeclarationBook
from ..wire.hostport import format_hostport
from ..node.keystore import Keystore
from ..node.serialsource import console_lines


@dataclass
class Event:
    kind: str  # "frame", "rejected", "log", "status"
    frame: Frame | None = None
    text: str = ""


class Intake:
    """Verifies what a source delivers; shared by monitor and the demo's live view."""

    def __init__(self, keys: Keystore, declarations: DeclarationBook | None = None) -> None:
        # Frame format v2: the declarations given (a gateway database's) and those seen since.
        self.verifier = Verifier(keys.lookup, ReplayWindow(), accept_kinds=KIND_NAMES, declarations=declarations)

    def from_frame(self, data: bytes) -> Event:
        try:
            return Event("frame", frame=self.verifier.verify(data))
        except FrameRejected as exc:
            return Event("rejected", text=exc.reason)

    def from_line(self, line: bytes) -> Event:
        try:
            data = frame_from_line(line)
        except BadFrameLine:
            return Event("rejected", text="bad-cbor")
        if data is None:
            return Event("log", text=line.decode("utf-8", "replace").rstrip("\r"))
        return self.from_frame(data)


def frame_from_datagram(datagram: bytes) -> bytes:
    """A frame sent bare, or as the payload of a CoAP message (what nodes send to a gateway)."""
    if datagram[:1] == b"\xd1":
        return datagram
    from ..wire.coap import decode  # raises CoapError (a ValueError) for a malformed datagram

    return decode(datagram).payload


def serial_events(port: str, intake: Intake, stop: threading.Event) -> Iterator[Event]:
    statuses: queue.SimpleQueue[str] = queue.SimpleQueue()
    for line in console_lines(port, on_status=statuses.put, should_stop=stop.is_set):
        while not statuses.empty():
            yield Event("status", text=statuses.get())
        if line.strip():
            yield intake.from_line(line)
    while not statuses.empty():
        yield Event("status", text=statuses.get())


def bind_udp(address: tuple[str, int]) -> socket.socket:
    """The monitor's UDP socket, bound before anything is drawn: a port another program holds
    (most often the gateway) is an error the user sees at once, not a line under an empty table."""
    host, port = address
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise FieldnodeError(f"--udp {format_hostport(host, port)}: cannot listen there: {exc.strerror} "
                             "(is a gateway on that port? Its output and `fieldnode status` show what it "
                             "receives; or give another --udp port)") from None
    sock.settimeout(0.2)
    return sock


def udp_events(sock: socket.socket, intake: Intake, stop: threading.Event) -> Iterator[Event]:
    """Listens without answering on a socket from bind_udp: a tap that never acknowledges, so it
    cannot make a node drop a frame that no gateway stored."""
    host, port = sock.getsockname()[:2]
    yield Event("status", text=f"listening on udp {format_hostport(host, port)}")
    try:
        while not stop.is_set():
            try:
                datagram, _ = sock.recvfrom(2048)
            except TimeoutError:
                continue
            try:
                data = frame_from_datagram(datagram)
            except ValueError:
                yield Event("rejected", text="not-cose-mac0")
                continue
            yield intake.from_frame(data)
    finally:
        sock.close()


def run_in_thread(events: Iterator[Event], sink: Callable[[Event], None]) -> threading.Thread:
    def pump() -> None:
        try:
            for event in events:
                sink(event)
        except Exception as exc:  # the reader's failure is shown, not swallowed
            sink(Event("status", text=f"error: {exc}"))
            sink(Event("end"))
            return
        sink(Event("end"))

    thread = threading.Thread(target=pump, daemon=True, name="fieldnode-intake")
    thread.start()
    return thread

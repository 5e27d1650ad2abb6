"""CoAP datagrams out of a pcap or pcapng capture (tcpdump, Wireshark, dumpcap), read with dpkt.

Only the UDP datagrams to or from one port (the gateway's, 5683 by default) are handed on; every
other packet is counted and left alone, as a capture taken on a site network holds all sorts.
A damaged capture is not an error that stops the reading: each problem (a file that ends inside a
packet, a packet cut at the snap length, an IP fragment, which is not reassembled) is handed on as
a CaptureProblem in its place, and the reading goes on with what follows when it can.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import dpkt

DEFAULT_PORT = 5683

# The first four bytes of a capture file: pcap (micro- or nanosecond timestamps, either byte
# order) and a pcapng Section Header Block.
PCAP_MAGICS = frozenset(bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1"))
PCAPNG_MAGIC = bytes.fromhex("0a0d0d0a")
MAGIC_LENGTH = 4
# No packet record is longer than this (tcpdump's largest snap length is 256 KiB): a record header
# claiming more is damaged, and is not read, so a flipped bit cannot make us allocate gigabytes.
MAX_RECORD = 1 << 20
READ_CHUNK = 1 << 16

Endpoint = tuple[str, int]


def is_capture(head: bytes) -> bool:
    """Whether data starting with head is a pcap or pcapng file."""
    return head[:MAGIC_LENGTH] in PCAP_MAGICS or head[:MAGIC_LENGTH] == PCAPNG_MAGIC


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram on the CoAP port. number counts every packet of the capture from 1, as
    Wireshark numbers them, so a line here can be found there."""

    number: int
    time: float
    src: Endpoint
    dst: Endpoint
    payload: bytes


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    """Something in the capture that could not be read; number is None for the file as a whole."""

    number: int | None
    detail: str


def endpoint_text(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Rejoined:
    """A stream whose first bytes were already read (to recognise the format), put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest
        self.name = getattr(rest, "name", "<stream>")
        self.cut = False  # a read met the end of the stream before it had what it asked for
        self.damaged = False  # a read asked for more than any packet record holds

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > MAX_RECORD:
            self.damaged = True
            return b""
        data, self._head = self._head[:n], self._head[n:]
        return data + self._read_fully(n - len(data)) if len(data) < n else data

    def _read_fully(self, n: int) -> bytes:
        # A pipe hands over what is there; the readers want whole headers and blocks.
        out = b""
        while len(out) < n:
            chunk = self._rest.read(min(n - len(out), READ_CHUNK))
            if not chunk:
                self.cut = True
                break
            out += chunk
        return out


# Link layers: what a capture's packets start with, down to the IP packet.
def _ip_by_version(buf: bytes) -> dpkt.Packet | None:
    version = buf[0] >> 4 if buf else 0
    return dpkt.ip.IP(buf) if version == 4 else dpkt.ip6.IP6(buf) if version == 6 else None


_LINK_LAYERS: dict[int, Callable[[bytes], object]] = {
    dpkt.pcap.DLT_EN10MB: lambda buf: dpkt.ethernet.Ethernet(buf).data,  # tcpdump -i eth0 / -i lo
    dpkt.pcap.DLT_LINUX_SLL: lambda buf: dpkt.sll.SLL(buf).data,  # tcpdump -i any (older)
    276: lambda buf: dpkt.sll2.SLL2(buf).data,  # LINKTYPE_LINUX_SLL2: tcpdump -i any (4.99+)
    dpkt.pcap.DLT_NULL: lambda buf: dpkt.loopback.Loopback(buf).data,  # BSD/macOS loopback
    dpkt.pcap.DLT_LOOP: lambda buf: dpkt.loopback.Loopback(buf).data,
    dpkt.pcap.DLT_RAW: _ip_by_version,  # LINKTYPE_RAW: tun devices, some routers
    12: _ip_by_version,  # DLT_RAW as most BSDs number it in files written by old libpcaps
    14: _ip_by_version,  # DLT_RAW as OpenBSD numbers it
    228: lambda buf: dpkt.ip.IP(buf),  # LINKTYPE_IPV4
    229: lambda buf: dpkt.ip6.IP6(buf),  # LINKTYPE_IPV6
}


class CaptureReader:
    """Reads a capture and yields the CoAP-port datagrams and the problems met, in capture order.

    After the iteration, packets and other hold how many packets the capture had and how many of
    them were other traffic (not UDP on the port).
    """

    def __init__(self, stream: BinaryIO, head: bytes = b"", port: int = DEFAULT_PORT) -> None:
        self._stream = _Rejoined(head, stream)
        self.port = port
        self.packets = 0
        self.other = 0

    def __iter__(self) -> Iterator[Datagram | CaptureProblem]:
        try:
            reader = self._reader()
        except (ValueError, dpkt.Error, EOFError):
            yield CaptureProblem(None, "not a pcap or pcapng capture, or its header is cut short")
            return
        link = _LINK_LAYERS.get(reader.datalink())
        if link is None:
            yield CaptureProblem(None, f"link type {reader.datalink()} is not one this reader knows "
                                 "(Ethernet, Linux cooked, loopback, raw IP); capture with tcpdump -i <interface>")
            return
        packets = iter(reader)
        while True:
            try:
                ts, buf = next(packets)
            except StopIteration:
                return
            except (dpkt.Error, ValueError, EOFError, struct.error):
                # dpkt reads a packet's record header, then its data: a file cut in the middle of
                # either, or a damaged record, ends the reading here, after everything before it.
                yield self._ended(self.packets + 1)
                return
            self.packets += 1
            if self._stream.cut or self._stream.damaged:  # dpkt hands over what there was
                yield self._ended(self.packets)
                return
            found = self._datagram(self.packets, float(ts), buf, link)
            if found is None:
                self.other += 1
            else:
                yield found

    def _ended(self, number: int) -> CaptureProblem:
        if self._stream.damaged:
            what = "this packet's record is damaged (it claims an impossible length)"
        elif self._stream.cut:
            what = "the capture ends inside this packet (file cut short)"
        else:
            what = "this packet's record is damaged"
        return CaptureProblem(number, f"{what}; everything before it was read, nothing after")

    def _reader(self):
        # The format is chosen from the magic, not by trying one reader then seeking back for the
        # other as dpkt's UniversalReader does: a pipe (tcpdump -w - | ...) cannot seek.
        head = self._stream.read(MAGIC_LENGTH)
        self._stream = _Rejoined(head, self._stream)
        return dpkt.pcapng.Reader(self._stream) if head == PCAPNG_MAGIC else dpkt.pcap.Reader(self._stream)

    def _datagram(self, number: int, ts: float, buf: bytes, link) -> Datagram | CaptureProblem | None:
        try:
            ip = link(buf)
        except (dpkt.Error, ValueError, IndexError, KeyError):
            return None  # a link layer or IP header dpkt cannot read: not a datagram of ours
        if isinstance(ip, dpkt.ip.IP):
            if ip.p != dpkt.ip.IP_PROTO_UDP:
                return None
            if ip.mf or ip.offset:
                return CaptureProblem(number, f"IPv4 fragment (id {ip.id}, offset {ip.offset}) of a UDP "
                                      "datagram: fragments are not reassembled, so it is skipped")
            family = socket.AF_INET
        elif isinstance(ip, dpkt.ip6.IP6):
            if ip.p != dpkt.ip.IP_PROTO_UDP:
                return None
            fragment = ip.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT)
            if fragment is not None:
                return CaptureProblem(number, f"IPv6 fragment (id {fragment.id}, offset {fragment.frag_off}) of a "
                                      "UDP datagram: fragments are not reassembled, so it is skipped")
            family = socket.AF_INET6
        else:
            return None
        udp = ip.data
        if not isinstance(udp, dpkt.udp.UDP):
            return CaptureProblem(number, "UDP header cut short (snap length or damaged packet)")
        if self.port not in (udp.sport, udp.dport):
            return None
        if udp.ulen < udp.__hdr_len__ or len(udp.data) < udp.ulen - udp.__hdr_len__:
            return CaptureProblem(number, f"UDP datagram cut short: {len(udp.data)} of {udp.ulen - 8} bytes "
                                  "captured (raise the snap length: tcpdump -s 0)")
        payload = bytes(udp.data[:udp.ulen - udp.__hdr_len__])
        return Datagram(number, ts, (socket.inet_ntop(family, ip.src), udp.sport),
                        (socket.inet_ntop(family, ip.dst), udp.dport), payload)

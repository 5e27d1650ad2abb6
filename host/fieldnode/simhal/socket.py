# socket for the virtual node: the unix port's real sockets (packets really go over the host's
# loopback to the gateway), shaped like the ESP32 port's and gated by the simulated Wi-Fi link.
#  - addresses are (host, port) tuples, as on the ESP32: getaddrinfo() returns them, bind/
#    connect/sendto take them, recvfrom() returns them (raw sockaddr bytes are accepted too)
#  - while network.link_up() is False (no IP, or world.json says "wifi": "down"), connect() and
#    datagram sends raise OSError(EHOSTUNREACH) as lwIP does with no route, datagrams arriving
#    are dropped, and getaddrinfo() of a name (not a numeric address) fails with OSError(-202)
#  - world.json "dns": "fail" makes every name lookup fail so, link up or not (no DNS server
#    answers): the ESP32 port raises lwIP's code negated (ports/esp32/modsocket.c)
#  - a zero-length datagram marks a datagram socket peer-closed, as the ESP32 port does
#    (ports/esp32/modsocket.c, _socket_read_data: lwIP's 0 is taken for a closed peer): from
#    then on every read returns 0 bytes at once, whatever arrives; only a new socket hears again
#  - readinto()/read() are the stream functions (py/stream.c): on a non-blocking socket they
#    read datagram after datagram until the buffer is full or none is queued, joining them
#  - TCP streams already connected are not cut by a link drop (lwIP would retransmit, then time
#    out); sockets returned by accept() are the plain built-in type, outside the link gate
import sys

_path = sys.path
sys.path = ()  # with no path, the import below finds the built-in module, not this file
try:
    import socket as _builtin
finally:
    sys.path = _path
    del _path

AF_INET = _builtin.AF_INET
AF_INET6 = _builtin.AF_INET6
SOCK_STREAM = _builtin.SOCK_STREAM
SOCK_DGRAM = _builtin.SOCK_DGRAM
SOCK_RAW = _builtin.SOCK_RAW
SOL_SOCKET = _builtin.SOL_SOCKET
SO_REUSEADDR = _builtin.SO_REUSEADDR
SO_BROADCAST = _builtin.SO_BROADCAST
IPPROTO_IP = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IP_ADD_MEMBERSHIP = _builtin.IP_ADD_MEMBERSHIP

# The ESP32 port takes errno values from ESP-IDF's newlib (ports/esp32/mpconfigport.h:
# MICROPY_USE_INTERNAL_ERRNO 0; newlib sys/errno.h), not Linux's: EHOSTUNREACH is 118 there (113,
# Linux's number, is ECONNABORTED in newlib).
EHOSTUNREACH = 118
EAI_FAIL = -202  # lwIP's getaddrinfo failure as the ESP32 port reports it

# Datagram sockets by id(): an attribute on the instance would break select.poll on this
# port (poll then cannot find the descriptor of a native subclass instance that has a dict).
_dgram = set()
_peer_closed = set()  # datagram sockets that have read a zero-length datagram
_NOWHERE = ("0.0.0.0", 0)


def _up():
    net = sys.modules.get("network")
    return net is not None and net.link_up()


def _numeric(host):
    try:
        _builtin.inet_pton(AF_INET, host)
        return True
    except (OSError, ValueError, TypeError):
        return False


_last = [None, None]  # the last (host, port) converted, and its sockaddr: sends repeat one address


def _sockaddr(addr):
    if isinstance(addr, (bytes, bytearray)):
        return addr
    if addr == _last[0]:
        return _last[1]
    sa = _resolve(addr)
    _last[0], _last[1] = addr, sa
    return sa


def _resolve(addr):
    host, port = addr[0], addr[1]
    if not host:
        host = "0.0.0.0"
    for entry in _builtin.getaddrinfo(host, port):
        if entry[0] == AF_INET:
            return entry[4]
    raise OSError(EAI_FAIL)


def _tuple(sockaddr):
    family, ip, port = _builtin.sockaddr(sockaddr)
    return (_builtin.inet_ntop(family, ip), port)


def _dns_fails():
    import simworld  # here: simworld needs simnode, which a bare socket user may not have set up
    return simworld.value("dns") == "fail"


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if not _numeric(host) and (not _up() or _dns_fails()):
        raise OSError(EAI_FAIL)
    sa = _sockaddr((host, port))
    return [(AF_INET, type or SOCK_STREAM, proto, "", _tuple(sa))]


def inet_pton(af, text):
    return _builtin.inet_pton(af, text)


def inet_ntop(af, packed):
    return _builtin.inet_ntop(af, packed)


class socket(_builtin.socket):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        super().__init__(af, type, proto)
        if type == SOCK_DGRAM:
            _dgram.add(id(self))
        else:
            _dgram.discard(id(self))

    def close(self):
        _dgram.discard(id(self))
        _peer_closed.discard(id(self))
        super().close()

    def _got(self, n):
        # After a datagram of n bytes was read: a zero-length one closes the socket for reading.
        if n == 0 and id(self) in _dgram:
            _peer_closed.add(id(self))

    def bind(self, addr):
        return super().bind(_sockaddr(addr))

    def connect(self, addr):
        if not _up():
            raise OSError(EHOSTUNREACH)
        return super().connect(_sockaddr(addr))

    def accept(self):
        s, addr = super().accept()
        return s, _tuple(addr)

    def sendto(self, data, addr):
        if not _up():
            raise OSError(EHOSTUNREACH)
        return super().sendto(data, _sockaddr(addr))

    def send(self, data):
        if id(self) in _dgram and not _up():
            raise OSError(EHOSTUNREACH)
        return super().send(data)

    def write(self, data):
        if id(self) in _dgram and not _up():
            raise OSError(EHOSTUNREACH)
        return super().write(data)

    def recvfrom(self, n):
        # A datagram that arrived while the link was down never reached the node: drop it and
        # look for the next one (a non-blocking socket then raises EAGAIN, as with none queued).
        if id(self) in _peer_closed:
            return b"", _NOWHERE
        while True:
            data, addr = super().recvfrom(n)
            if _up():
                self._got(len(data))
                return data, _tuple(addr)

    def recv(self, n):
        if id(self) not in _dgram:
            return super().recv(n)
        if id(self) in _peer_closed:
            return b""
        while True:
            data = super().recv(n)
            if _up():
                self._got(len(data))
                return data

    def readinto(self, buf, nbytes=None):
        # The stream read of py/stream.c: datagram after datagram into buf until it is full, a
        # zero-length one (EOF) comes, or none is queued (None if that was at once).
        if id(self) not in _dgram:
            return super().readinto(buf) if nbytes is None else super().readinto(buf, nbytes)
        want = len(buf) if nbytes is None else min(nbytes, len(buf))
        mv = memoryview(buf)
        done = 0
        while done < want:
            try:
                data = self.recv(want - done)
            except OSError as exc:
                if exc.args[0] == 11:  # EAGAIN: what was read so far, or None for nothing
                    return done or None
                raise
            if data is None:
                return done or None
            if not data:
                return done
            mv[done:done + len(data)] = data
            done += len(data)
        return done

    def read(self, n=-1):
        if id(self) not in _dgram:
            return super().read() if n is None or n < 0 else super().read(n)
        if n is not None and n >= 0:
            buf = bytearray(n)
            got = self.readinto(buf)
            return None if got is None else bytes(buf[:got])
        out = b""  # readall: every queued datagram, joined
        while True:
            chunk = self.read(1500)
            if not chunk:
                return out if out or chunk is not None else None
            out += chunk

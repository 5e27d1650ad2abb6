# ntptime for the virtual node, as frozen into the ESP32 port (micropython-lib
# micropython/net/ntptime): time() resolves the host, asks it over UDP and reads the transmit
# timestamp with struct.unpack from bytes 40..43 of the reply; settime() sets the RTC from it.
# The server's time is the host's. The same steps fail the same ways as on a board:
#  - a host name goes through socket.getaddrinfo(), which raises the port's negative OSError
#    codes (world.json "dns": "fail", or the link down);
#  - the link down: sendto() has no route, OSError(EHOSTUNREACH), 118 on the port (newlib);
#  - no answer (world.json "ntp": "silent"): the recv times out, OSError(ETIMEDOUT), which the
#    ESP32 port raises as newlib's 116 (ports/esp32/modsocket.c, MP_ETIMEDOUT), not Linux's 110;
#  - a reply shorter than 44 bytes (world.json "ntp": "short"): struct.unpack raises ValueError.
import machine
import network
import socket
import struct
import simworld
import time as _time

host = "pool.ntp.org"
timeout = 1

_ETIMEDOUT = 116  # newlib's ETIMEDOUT, the ESP32 port's MP_ETIMEDOUT
_UNIX_TO_NTP = 2208988800  # seconds from 1900 (NTP's era 0) to 1970
_MIN_NTP_TIMESTAMP = 3913056000  # 2024-01-01: an older timestamp is in NTP era 1 (after 2036)


def _query():
    # The server's reply to a 48-byte client request, as the world has it answer.
    mode = simworld.value("ntp", "answer")
    if not network.link_up():
        raise OSError(socket.EHOSTUNREACH)  # the sendto() before the recv
    if mode == "silent":
        raise OSError(_ETIMEDOUT)  # the recv timed out
    msg = bytearray(48)
    msg[0] = 0x24  # LI 0, version 4, mode 4 (server)
    struct.pack_into("!I", msg, 40, (int(_time._builtin.time()) + _UNIX_TO_NTP) & 0xFFFFFFFF)
    return bytes(msg[:40]) if mode == "short" else bytes(msg)


def time():
    socket.getaddrinfo(host, 123)  # DNS first, as the port's ntptime does
    msg = _query()
    val = struct.unpack("!I", msg[40:44])[0]
    if val < _MIN_NTP_TIMESTAMP:
        val += 0x100000000
    # NTP_DELTA follows the port's epoch (2000 on v1.24-1.26, 1970 elsewhere) as the real one does.
    epoch_year = _time.gmtime(0)[0]
    delta = 3155673600 if epoch_year == 2000 else _UNIX_TO_NTP
    return val - delta


def settime():
    tm = _time.gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

# Wall-clock time for frames and command expiry. An ESP32 starts at the epoch after a power cut:
# until SNTP has set the RTC, times are wrong, and a command's expiry cannot be checked, so
# commands are refused ("no-clock") rather than applied on a guess.
import asyncio
from micropython import const

from fnode import log
from fnode.sensors import unix_time

# Any real time is after this (2025-01-01); the epoch a fresh RTC counts from is decades before.
VALID_AFTER = 1735689600
_RETRY_MS = 60_000
_RESYNC_MS = const(21600000)  # 6 h: the ESP32's RTC drifts by seconds a day; commands have minutes of TTL


def valid():
    return unix_time() >= VALID_AFTER


def sync(host):
    # One SNTP query (ntptime, frozen into the ESP32 port; about 1 s at worst, blocking). The
    # unix port has no ntptime: a virtual node's clock is the host's, already set.
    try:
        import ntptime
    except ImportError:
        return valid()
    ntptime.host = host
    # What the port's ntptime raises: OSError from DNS (a negative lwIP code) or a timeout,
    # ValueError from struct.unpack on a reply shorter than 44 bytes, OverflowError from
    # gmtime on a nonsense timestamp, IndexError from an empty getaddrinfo list. A failed sync
    # must not end the task: the watchdog would reset the node for it.
    try:
        ntptime.settime()
    except (OSError, ValueError, OverflowError, IndexError) as exc:
        log.warn("clock: SNTP from", host, "failed:", exc)
        return False
    return True


async def keeper(link, host, uplink=None):
    # The NTP server is the gateway host by default: sites run one there (chrony `allow`) since
    # nodes have no route to the internet. With the uplink given, the host of the gateway in use
    # (uplink.gateway: it follows a failover).
    was_valid = valid()
    while True:
        if not link.up():  # no point asking; try as soon as the link is back
            await asyncio.sleep_ms(1000)
            continue
        ok = sync(uplink.gateway[0] if uplink is not None else host)
        if ok and not was_valid:
            log.info("clock set:", unix_time())
        was_valid = was_valid or ok
        await asyncio.sleep_ms(_RESYNC_MS if ok else _RETRY_MS)

# Wi-Fi station link with reconnect backoff. The loop that calls it never blocks on it.
import network
import time
from micropython import const

_BACKOFF_MS = (1000, 2000, 5000, 10000, 30000)  # each step at most the board's "wifi_backoff_max_s"
# Association, the WPA handshake and DHCP take seconds on a real access point. connect() again
# meanwhile starts them over (ports/esp32/network_wlan.c), so the link waits this long on
# STAT_CONNECTING before it starts again; the ESP32 driver retries by itself in between.
_ASSOCIATE_MS = const(20000)


class Link:
    def __init__(self, ssid, password):
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.attempt = 0
        self.next_try = 0
        self.drops = 0
        self.backoff_max_ms = _BACKOFF_MS[-1]
        self._was_up = False
        self._connecting_since = None  # ticks_ms when STAT_CONNECTING was first seen

    def up(self):
        return self.wlan.isconnected()

    def poll(self):
        # Called from the network task: starts a connect when due; returns whether the link is up.
        wlan = self.wlan
        if wlan.isconnected():
            self._was_up = True
            self.attempt = 0
            self._connecting_since = None
            return True
        if self._was_up:
            self._was_up = False
            self.drops += 1
        now = time.ticks_ms()
        if self._associating(now):
            return False
        if self.ssid and time.ticks_diff(now, self.next_try) >= 0:
            wlan.active(True)
            try:
                wlan.connect(self.ssid, self.password)
                self._connecting_since = now
            except OSError:
                pass
            delay = min(_BACKOFF_MS[min(self.attempt, len(_BACKOFF_MS) - 1)], self.backoff_max_ms)
            self.attempt += 1
            self.next_try = time.ticks_add(now, delay)
        return False

    def _associating(self, now):
        # True while the driver is still connecting (started by us or by its own reconnect) and
        # has not taken too long about it.
        if not self.ssid or self.wlan.status() != network.STAT_CONNECTING:
            self._connecting_since = None
            return False
        if self._connecting_since is None:
            self._connecting_since = now
        return time.ticks_diff(now, self._connecting_since) < _ASSOCIATE_MS

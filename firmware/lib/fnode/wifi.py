# Wi-Fi station link with reconnect backoff. The loop that calls it never blocks on it.
import network
import time

_BACKOFF_MS = (1000, 2000, 5000, 10000, 30000)


class Link:
    def __init__(self, ssid, password):
        self.ssid = ssid
        self.password = password
        self.wlan = network.WLAN(network.STA_IF)
        self.attempt = 0
        self.next_try = 0
        self.drops = 0
        self._was_up = False

    def up(self):
        return self.wlan.isconnected()

    def poll(self):
        # Called from the network task: starts a connect when due; returns whether the link is up.
        if self.wlan.isconnected():
            self._was_up = True
            self.attempt = 0
            return True
        if self._was_up:
            self._was_up = False
            self.drops += 1
        now = time.ticks_ms()
        if self.ssid and time.ticks_diff(now, self.next_try) >= 0:
            self.wlan.active(True)
            try:
                self.wlan.connect(self.ssid, self.password)
            except OSError:
                pass
            delay = _BACKOFF_MS[min(self.attempt, len(_BACKOFF_MS) - 1)]
            self.attempt += 1
            self.next_try = time.ticks_add(now, delay)
        return False

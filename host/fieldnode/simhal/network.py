# network for the virtual node: WLAN as on the ESP32 port, its link driven by world.json.
# connect() succeeds connect_ms later while "wifi" is "up" (and the SSID/password match the
# world's, when it names them); "down" drops the link, and like the ESP32 driver the station
# reconnects by itself when the access point comes back, unless disconnect() was called.
# Sockets (the socket twin) ask link_up() before sending.
import time
import simnode
import simworld

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4

_hostname = "fieldnode"
_ifaces = {}


def hostname(name=None):
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


def country(code=None):
    return "01" if code is None else None


def link_up():
    # True while some interface could carry packets: the station has an IP, or the AP is on.
    sta = _ifaces.get(STA_IF)
    ap = _ifaces.get(AP_IF)
    return bool((sta and sta.isconnected()) or (ap and ap._active))


class WLAN:
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2
    IF_STA = STA_IF
    IF_AP = AP_IF

    def __new__(cls, interface_id=STA_IF):
        # One object per interface, as on the ESP32 port.
        w = _ifaces.get(interface_id)
        if w is None:
            w = object.__new__(cls)
            w._if = interface_id
            w._active = False
            w._want = None  # (ssid, key) while a connection is requested
            w._since = 0  # ticks_ms when the current attempt started
            w._state = STAT_IDLE
            w._associations = 0
            mac = bytearray(simnode.unique_id())
            mac[5] = (mac[5] + interface_id) & 0xFF  # the AP MAC is the base MAC + 1
            w._config = {"mac": bytes(mac), "ssid": "", "channel": 1, "hidden": False,
                         "security": AUTH_WPA2_PSK, "key": "", "reconnects": -1,
                         "txpower": 20, "pm": WLAN.PM_PERFORMANCE, "hostname": _hostname}
            _ifaces[interface_id] = w
        return w

    def __init__(self, interface_id=STA_IF):
        pass

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active:
            self._want = None
            self._state = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        if ssid is None:
            ssid, key = self._config["ssid"], self._config["key"]
        self._config["ssid"] = ssid
        self._config["key"] = key or ""
        self._want = (ssid, key or "")
        # Every connect() sets the config and calls esp_wifi_connect() (ports/esp32/
        # network_wlan.c): one made while associating starts the association again, so the IP
        # comes connect_ms after the last call.
        self._since = time.ticks_ms()
        self._state = STAT_CONNECTING
        self._associations += 1

    def sim_associations(self):
        # Simulation-side hook, not WLAN API: how many times association was started.
        return self._associations

    def disconnect(self):
        self._want = None
        self._state = STAT_IDLE

    def _update(self):
        # Moves the station along as the world says; called by every query.
        if self._if != STA_IF or self._want is None:
            return
        w = simworld.get()
        up = w.get("wifi", "up") == "up"
        ssid, key = self._want
        if not up or (w.get("ssid") is not None and w["ssid"] != ssid):
            if self._state == STAT_GOT_IP or self._state == STAT_CONNECTING:
                self._state = STAT_NO_AP_FOUND
            return
        if w.get("password") is not None and w["password"] != key:
            self._state = STAT_WRONG_PASSWORD
            self._want = None  # the driver gives up on a bad key
            return
        if self._state == STAT_NO_AP_FOUND:  # the AP is back: the driver retries
            self._state = STAT_CONNECTING
            self._since = time.ticks_ms()
        if self._state == STAT_CONNECTING and time.ticks_diff(
                time.ticks_ms(), self._since) >= w.get("connect_ms", 100):
            self._state = STAT_GOT_IP

    def isconnected(self):
        if self._if == AP_IF:
            return self._active
        self._update()
        return self._state == STAT_GOT_IP

    def status(self, param=None):
        self._update()
        if param is None:
            return self._state
        if param == "rssi":
            if self._state != STAT_GOT_IP:
                raise OSError("Wifi Not Connected")  # esp_wifi_sta_get_ap_info (network_common.c)
            return simworld.value("rssi", -60)
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def ifconfig(self, config=None):
        if config is not None:
            return None
        if self.isconnected():
            ip = simworld.value("ip", "127.0.0.1")
            return (ip, "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def ipconfig(self, name=None, **kwargs):
        if name == "addr4":
            return self.ifconfig()[:2]
        if name == "gw4":
            return self.ifconfig()[2]
        if name == "dhcp4":
            return True
        return None

    def config(self, *args, **kwargs):
        if args:
            key = args[0]
            if key == "essid":
                key = "ssid"
            if key not in self._config:
                raise ValueError("unknown config param")
            return self._config[key]
        for key, value in kwargs.items():
            if key == "essid":
                key = "ssid"
            if key == "mac":
                raise OSError("can't set MAC")  # fixed by the node identity in sim.json
            self._config[key] = value

    def scan(self):
        if not self._active:
            raise OSError("Wifi Not Started")
        w = simworld.get()
        if w.get("wifi", "up") != "up":
            return []
        ssid = w.get("ssid", "fieldnode-sim")
        return [(ssid.encode(), b"\x02\x00\x00\x00\x00\x01", 6, w.get("rssi", -60),
                 AUTH_WPA2_PSK, False)]

# The world outside the node, as the host describes it in <node dir>/world.json. The host
# replaces the file atomically (temp + rename); the node looks at its stat at most every
# CHECK_MS and parses it only when it changed. A file that does not parse (caught mid-write by
# a non-atomic writer) is ignored until it changes again.
#
# Schema (every key optional):
#   "wifi":     "up" | "down"            the access point is reachable (default "up")
#   "ssid":     "name"                   the only SSID that connects (default: any)
#   "password": "secret"                 the only key accepted (default: any)
#   "rssi":     -60                      reported by WLAN.status("rssi") and scan()
#   "connect_ms": 100                    time from WLAN.connect() to an IP address (a connect()
#                                        while associating starts it again, as the driver does)
#   "dns":      "fail"                   every host name lookup fails (OSError(-202))
#   "ntp":      "answer"|"silent"|"short" how the SNTP server answers ntptime (see ntptime.py)
#   "ip":       "127.0.0.1"              the address WLAN.ifconfig() reports
#   "devices":  {"env": {"temp": 21.5}}  per device name: keyword arguments for its set()
#   "adc":      {"34": 1.65}             volts on an ADC pin with no device on it
#   "pins":     {"4": 1}                 level driven onto an input pin from outside
#   "pulses":   {"35": 12.5}             pulses per second arriving on an input pin
#   "mcu_temp": 42.0                     esp32.mcu_temperature() in degrees Celsius
#   "nvs_full": true                     the NVS partition has no free entry: every set_* fails
#   "i2c_stall": 21                      a device holds the I2C bus on this SDA pin: every
#                                        transaction there blocks until the key is removed
#   "ticks_skip_ms": 86400000            added to the node's ticks_ms: raise it to jump the
#                                        node's tick clock forward (simclock)
#   "power_cut_after_writes": 3          the power goes just before the 3rd flash program or NVS
#                                        write from when the node sees the key (simnode.writing)
import os
from simclock import host as time  # not the node's ticks: those read this module
import simnode

CHECK_MS = 100
PATH = simnode.path("world.json")
version = 0  # bumped on every change that was read: consumers re-apply what depends on it
_data = {}
_sig = None
_checked = None


def get():
    global _data, _sig, _checked, version
    now = time.ticks_ms()
    if _checked is not None and time.ticks_diff(now, _checked) < CHECK_MS:
        return _data
    _checked = now
    try:
        st = os.stat(PATH)
        sig = (st[1], st[6], st[8])  # inode (new on each rename), size, mtime in seconds
    except OSError:
        sig = None
    if sig == _sig:
        return _data
    if sig is None:
        data = {}
    else:
        data = simnode.read_json(PATH, None)
        if not isinstance(data, dict):
            return _data  # torn or invalid: keep the last good world, look again next time
    _sig = sig
    _data = data  # replaced, never changed in place: a reader holding the old dict is safe
    version += 1
    return data


def section(name):
    return get().get(name) or {}


def value(name, default=None):
    v = get().get(name)
    return default if v is None else v


def refresh():
    # For a test that just wrote world.json and wants it seen without waiting CHECK_MS.
    global _checked
    _checked = None
    return get()

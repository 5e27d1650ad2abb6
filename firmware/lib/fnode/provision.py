# Provisioning entry points, run over the raw REPL by `fieldnode provision`. The key arrives in
# the exec'd code (raw REPL does not echo) and is never printed back: prove() answers with a MAC.
# Staging keeps the active identity untouched until activate() replaces it with one NVS entry
# write (atomic on ESP-IDF and in the simulation), so a power cut leaves the old or the new key;
# the settings are switched the same way, as one entry, just before it.
import binascii
import machine
from micropython import const
from fnode.config import Config, ID_LEN, SETTINGS, FIELDS
from fnode.hmac256 import HMAC256

PROOF_CONTEXT = b"fieldnode provision proof\0"
_KEY_LEN = const(32)
_KID_LEN = const(8)


def pack_settings(values):
    # values: {field: text}, in FIELDS -> the "cfg" blob
    out = bytearray(b"\x01")
    for field in FIELDS:
        b = values.get(field, "").encode()
        if len(b) > 255:
            raise ValueError(field + " too long")
        out.append(len(b))
        out.extend(b)
    return bytes(out)


def identity():
    print(binascii.hexlify(machine.unique_id()).decode())


def has_key():
    print(Config().key() is not None)


def stage(key_hex, kid_hex, alg):
    key = binascii.unhexlify(key_hex)
    kid = binascii.unhexlify(kid_hex)
    if len(key) != _KEY_LEN or len(kid) != _KID_LEN or alg not in (4, 5):
        raise ValueError("bad key, kid or alg")
    nvs = Config().nvs
    nvs.set_blob("pid", bytes([alg]) + kid + key)
    nvs.commit()


def prove(challenge_hex):
    staged = Config().identity("pid")
    if staged is None:
        raise ValueError("no staged key")
    mac = HMAC256(staged[2]).digest(PROOF_CONTEXT + binascii.unhexlify(challenge_hex))
    print(binascii.hexlify(mac).decode())


def _erase(nvs, name):
    try:
        nvs.erase_key(name)
    except OSError:
        pass


def unstage():
    nvs = Config().nvs
    _erase(nvs, "pid")
    nvs.commit()


# The host asks for it before giving a node more than one gateway: an application older than
# failover would take "A,B" for one unusable gateway.
FAILOVER = True


def activate(name, gateway, ssid, password, fallbacks=None):
    # fallbacks: the gateways after `gateway`, comma-separated ("" none); a new gateway without
    # them clears the old ones, so a node given one gateway again sends to it alone.
    cfg = Config()
    staged = cfg.blob("pid", ID_LEN)
    if staged is None or cfg.identity("pid") is None:
        raise ValueError("no staged key")
    nvs = cfg.nvs
    settings = cfg.settings()  # a field given as None keeps its value
    if gateway is not None and fallbacks is None:
        fallbacks = ""
    for field, value in zip(FIELDS, (name, gateway, ssid, password, fallbacks)):
        if value is not None:
            settings[field] = value
    # Settings first, as one entry: if power fails before the identity switch, the node keeps
    # its old key with the whole new set of settings, and provisioning again completes it.
    nvs.set_blob(SETTINGS, pack_settings(settings))
    for field in FIELDS:  # the entries of the older format, shadowed from here on
        _erase(nvs, field)
    nvs.set_blob("id", staged)  # the switch: one entry
    _erase(nvs, "pid")
    nvs.commit()
    print("activated")

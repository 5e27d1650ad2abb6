# Provisioning entry points, run over the raw REPL by `fieldnode provision`. The key arrives in
# the exec'd code (raw REPL does not echo) and is never printed back: prove() answers with a MAC.
# Staging keeps the active key untouched until activate() switches over in one NVS commit.
import binascii
import machine
from fnode.config import Config, KEY_LEN, KID_LEN
from fnode.hmac256 import HMAC256

PROOF_CONTEXT = b"fieldnode provision proof\0"


def identity():
    print(binascii.hexlify(machine.unique_id()).decode())


def has_key():
    print(Config().key() is not None)


def stage(key_hex, kid_hex, alg):
    key = binascii.unhexlify(key_hex)
    kid = binascii.unhexlify(kid_hex)
    if len(key) != KEY_LEN or len(kid) != KID_LEN or alg not in (4, 5):
        raise ValueError("bad key, kid or alg")
    nvs = Config().nvs
    nvs.set_blob("pkey", key)
    nvs.set_blob("pkid", kid)
    nvs.set_i32("palg", alg)
    nvs.commit()


def prove(challenge_hex):
    key = Config().blob("pkey", KEY_LEN)
    if key is None:
        raise ValueError("no staged key")
    mac = HMAC256(key).digest(PROOF_CONTEXT + binascii.unhexlify(challenge_hex))
    print(binascii.hexlify(mac).decode())


def _erase(nvs, name):
    try:
        nvs.erase_key(name)
    except OSError:
        pass


def unstage():
    nvs = Config().nvs
    for name in ("pkey", "pkid", "palg"):
        _erase(nvs, name)
    nvs.commit()


def activate(name, gateway, ssid, password):
    cfg = Config()
    key = cfg.blob("pkey", KEY_LEN)
    kid = cfg.blob("pkid", KID_LEN)
    if key is None or kid is None:
        raise ValueError("no staged key")
    nvs = cfg.nvs
    nvs.set_blob("key", key)
    nvs.set_blob("kid", kid)
    nvs.set_i32("alg", cfg.i32("palg", 4))
    for field, value in (("name", name), ("gw", gateway), ("ssid", ssid), ("wpass", password)):
        if value is not None:
            nvs.set_blob(field, value.encode())
    for field in ("pkey", "pkid", "palg"):
        _erase(nvs, field)
    nvs.commit()  # one commit: the old key or the new one, never a mix
    print("activated")

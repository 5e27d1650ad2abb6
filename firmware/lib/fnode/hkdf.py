# HKDF-SHA256 (RFC 5869) on the node's HMAC (fnode.hmac256): derives a key of its own for each
# use from the device key, so that a key for one purpose cannot stand in for another. Used by
# the update path only (fnode.ota), and imported with it.
from fnode.hmac256 import HMAC256

_HASH_LEN = 32


def hkdf(ikm, info, length=32, salt=b""):
    if length > 255 * _HASH_LEN:
        raise ValueError("hkdf: too long")
    prk = HMAC256(salt or bytes(_HASH_LEN)).digest(ikm)  # extract (no salt: HashLen zero bytes)
    mac = HMAC256(prk)
    out = b""
    t = b""
    i = 1
    while len(out) < length:  # expand
        t = mac.digest(t + info + bytes((i,)))
        out += t
        i += 1
    return out[:length]

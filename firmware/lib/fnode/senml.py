# SenML-CBOR (RFC 8428) as frame format v1 uses it: labels and the parser for packs the node
# receives (the shape rules of docs/frame-format.md), loaded only while a command is read. The
# device's base name is fnode.frame.base_name.
from micropython import const
from . import cbordecode

_BN = const(-2)
_BT = const(-3)
_N = const(0)
_U = const(1)
_V = const(2)
_VS = const(3)
_VB = const(4)
_T = const(6)

_MAX_RECORDS = const(32)
_MAX_DEPTH = const(3)  # pack, record, value


def _number(x):
    t = type(x)
    return t is int or t is float


def _value(rec):
    # (value, err) of a record that holds exactly one of v, vs, vb or err, each of its type.
    value = None
    values = 0
    if _V in rec:
        value = rec[_V]
        if not _number(value):
            raise ValueError("senml: v must be a number")
        values += 1
    if _VS in rec:
        value = rec[_VS]
        if type(value) is not str:
            raise ValueError("senml: vs must be text")
        values += 1
    if _VB in rec:
        value = rec[_VB]
        if type(value) is not bool:
            raise ValueError("senml: vb must be a boolean")
        values += 1
    err = rec.get("err")
    if "err" in rec:  # a null err is a wrong type, not an absent field
        if type(err) is not str or values:
            raise ValueError("senml: err is text and excludes a value")
    elif values != 1:
        raise ValueError("senml: needs exactly one of v, vs, vb or err")
    return value, err


def _record(rec, first):
    if type(rec) is not dict:
        raise ValueError("senml: record is not a map")
    known = 0
    if _BN in rec or _BT in rec:
        if not first:
            raise ValueError("senml: bn/bt only in the first record")
        known = 2
    name = rec.get(_N)
    if type(name) is not str:
        raise ValueError("senml: record without a text name")
    known += 1
    value, err = _value(rec)
    known += 1
    unit = rec.get(_U)
    if unit is not None:
        if type(unit) is not str:
            raise ValueError("senml: u must be text")
        known += 1
    if _T in rec:
        if not _number(rec[_T]):
            raise ValueError("senml: t must be a number")
        known += 1
    if len(rec) != known:
        raise ValueError("senml: unknown fields")
    return name, unit, value, err


def parse(payload):
    """(bn, bt, records) of a SenML-CBOR pack; records are (n, u, value, err) tuples, u None when
    absent, value None when err is set. ValueError (cbor: / senml: ...) for anything else."""
    pack = cbordecode.loads(payload, _MAX_DEPTH, _MAX_RECORDS)
    if type(pack) is not list or not pack:
        raise ValueError("senml: payload is not a non-empty array")
    first = pack[0]
    if type(first) is not dict or type(first.get(_BN)) is not str or not _number(first.get(_BT)):
        raise ValueError("senml: first record needs bn (text) and bt (number)")
    bn = first[_BN]
    bt = first[_BT]
    out = []
    for i in range(len(pack)):
        out.append(_record(pack[i], i == 0))
    return bn, bt, out

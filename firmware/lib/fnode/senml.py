# SenML-CBOR (RFC 8428) as frame format v1 uses it: labels and the parser for packs the node
# receives (the shape rules of docs/frame-format.md), loaded only while a command is read. The
# device's base name is fnode.frame.base_name.
from micropython import const
from . import cbordecode

BN = const(-2)
BT = const(-3)
N = const(0)
U = const(1)
V = const(2)
VS = const(3)
VB = const(4)
T = const(6)
ERR = "err"

_MAX_RECORDS = const(32)
_MAX_DEPTH = const(3)  # pack, record, value


def _number(x):
    t = type(x)
    return t is int or t is float


def _value(rec):
    # (value, err) of a record that holds exactly one of v, vs, vb or err, each of its type.
    value = None
    values = 0
    if V in rec:
        value = rec[V]
        if not _number(value):
            raise ValueError("senml: v must be a number")
        values += 1
    if VS in rec:
        value = rec[VS]
        if type(value) is not str:
            raise ValueError("senml: vs must be text")
        values += 1
    if VB in rec:
        value = rec[VB]
        if type(value) is not bool:
            raise ValueError("senml: vb must be a boolean")
        values += 1
    err = rec.get(ERR)
    if ERR in rec:  # a null err is a wrong type, not an absent field
        if type(err) is not str or values:
            raise ValueError("senml: err is text and excludes a value")
    elif values != 1:
        raise ValueError("senml: needs exactly one of v, vs, vb or err")
    return value, err


def _record(rec, first):
    if type(rec) is not dict:
        raise ValueError("senml: record is not a map")
    known = 0
    if BN in rec or BT in rec:
        if not first:
            raise ValueError("senml: bn/bt only in the first record")
        known = 2
    name = rec.get(N)
    if type(name) is not str:
        raise ValueError("senml: record without a text name")
    known += 1
    value, err = _value(rec)
    known += 1
    unit = rec.get(U)
    if unit is not None:
        if type(unit) is not str:
            raise ValueError("senml: u must be text")
        known += 1
    if T in rec:
        if not _number(rec[T]):
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
    if type(first) is not dict or type(first.get(BN)) is not str or not _number(first.get(BT)):
        raise ValueError("senml: first record needs bn (text) and bt (number)")
    bn = first[BN]
    bt = first[BT]
    out = []
    for i in range(len(pack)):
        out.append(_record(pack[i], i == 0))
    return bn, bt, out

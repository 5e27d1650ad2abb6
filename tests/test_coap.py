"""The host CoAP codec: RFC 7252 layout, strict refusal of malformed datagrams, aiocoap agrees."""
from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings, strategies as st

from fieldnode.wire import coap

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import aiocoap
    from aiocoap.message import Direction, Message as AioMessage


def test_frame_post_bytes():
    msg = coap.Message(coap.CON, coap.POST, 0x1234, b"\xaa\xbb",
                       [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")],
                       b"\xd1\x84")
    # 42: version 1, CON, token length 2; b1: Uri-Path (delta 11) length 1; 11: Content-Format
    # (delta 1) length 1, value 17; ff: payload marker
    assert coap.encode(msg).hex() == "420212 34aabb b166 1111 ff d184".replace(" ", "")
    assert coap.decode(coap.encode(msg)) == msg
    assert msg.uri_path == ["f"] and msg.content_format == 17


def test_extended_option_forms():
    # delta 13 (1 extra byte), delta 14 (2 extra bytes), length 13 and 14 forms
    opts = [(12, b""), (60, b"x" * 13), (2000, b"y" * 300), (2001, b"z" * 268)]
    data = coap.encode(coap.Message(coap.NON, coap.CONTENT, 1, b"", opts, b"p"))
    assert data[4] == 0xC0  # Content-Format, empty value (uint 0)
    assert data[5:7] == bytes((0xDD, 60 - 12 - 13)) and data[7] == 0  # delta 48 -> 13+35, length 13 -> 13+0
    assert coap.decode(data).options == opts
    assert coap.encode_uint(0) == b"" and coap.encode_uint(17) == b"\x11" and coap.encode_uint(256) == b"\x01\x00"


@pytest.mark.parametrize("data, why, header_known", [
    (b"\x40\x02\x00", "shorter than the 4-byte header", False),
    (b"\x80\x02\x00\x01", "version 2", False),
    (b"\x49\x02\x00\x01" + b"\x00" * 9, "token length 9", True),
    (b"\x44\x02\x00\x01\xaa", "token runs past", True),
    (b"\x40\x02\x00\x01\xf1\x00", "nibble 15", True),
    (b"\x40\x02\x00\x01\x1f", "nibble 15", True),
    (b"\x40\x02\x00\x01\xd1", "delta extension truncated", True),
    (b"\x40\x02\x00\x01\xe1\x01", "delta extension truncated", True),
    (b"\x40\x02\x00\x01\x1d", "length extension truncated", True),
    (b"\x40\x02\x00\x01\x1e\x00", "length extension truncated", True),
    (b"\x40\x02\x00\x01\xb3ab", "runs past the end", True),
    (b"\x40\x02\x00\x01\xff", "empty payload", True),
    (b"\x40\x00\x00\x01\x00", "Empty message", True),
    (b"\x41\x00\x00\x01", "Empty message", True),
    (b"\x40\x20\x00\x01", "reserved class", True),
    (b"\x40\x02\x00\x01\xe0\xff\xff\xe0\xff\xff", "exceeds 65535", True),
])
def test_malformed_datagrams_are_refused_with_a_reason(data, why, header_known):
    with pytest.raises(coap.CoapError, match=why) as exc:
        coap.decode(data)
    assert (exc.value.mid is not None) == header_known
    if header_known:
        assert exc.value.mtype == coap.CON and exc.value.mid == 1


def test_reset_and_piggybacked():
    assert coap.reset(0x0102) == b"\x70\x00\x01\x02"
    req = coap.Message(coap.CON, coap.POST, 9, b"t", [(coap.URI_PATH, b"f")], b"x")
    ack = coap.piggybacked(req, coap.CHANGED)
    assert (ack.mtype, ack.mid, ack.token, coap.code_text(ack.code)) == (coap.ACK, 9, b"t", "2.04")


options = st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=300)), max_size=6)
messages = st.builds(coap.Message, st.integers(0, 3), st.sampled_from([1, 2, 3, 4, 65, 68, 69, 128, 129, 163]),
                     st.integers(0, 0xFFFF), st.binary(max_size=8),
                     options.map(lambda o: sorted(o, key=lambda x: x[0])),
                     st.binary(max_size=64))


@given(messages)
@settings(max_examples=300, deadline=None)
def test_roundtrip(msg):
    assert coap.decode(coap.encode(msg)) == msg


@given(st.binary(max_size=64))
@settings(max_examples=2000, deadline=None)
def test_decode_never_fails_other_than_coaperror(data):
    try:
        msg = coap.decode(data)
    except coap.CoapError:
        return
    assert coap.encode(msg) == data  # anything it accepts is in the one canonical form


# aiocoap is the independent reading of RFC 7252. Unknown option numbers (>= 2048 here) are opaque
# to it, so values compare byte for byte; Uri-Path takes the 11 slot.
peer_options = st.lists(st.one_of(st.tuples(st.just(11), st.text(max_size=20).map(str.encode)),
                                  st.tuples(st.integers(2048, 65000).filter(lambda n: n % 2 == 0),
                                            st.binary(max_size=300))), max_size=5)


@given(st.sampled_from([coap.CON, coap.NON]), st.integers(0, 0xFFFF), st.binary(max_size=8), peer_options,
       st.binary(max_size=100))
@settings(max_examples=200, deadline=None)
def test_aiocoap_reads_what_we_write_and_we_read_what_it_writes(mtype, mid, token, opts, payload):
    opts = sorted(opts, key=lambda o: o[0])
    ours = coap.encode(coap.Message(mtype, coap.POST, mid, token, opts, payload))
    theirs = AioMessage.decode(ours)
    assert (int(theirs.mtype), int(theirs.code), theirs.mid, theirs.token, theirs.payload) == \
        (mtype, coap.POST, mid, token, payload)
    assert [(o.number, o.encode()) for o in theirs.opt.option_list()] == opts
    theirs.direction = Direction.OUTGOING  # send it back out as aiocoap would encode it
    back = coap.decode(theirs.encode())
    assert back == coap.Message(mtype, coap.POST, mid, token, opts, payload)


def test_aiocoap_built_request_decodes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = AioMessage(mtype=aiocoap.CON, code=aiocoap.POST, mid=5, token=b"ab", payload=b"xyz",
                       uri_path=("f",), content_format=17)
    msg = coap.decode(m.encode())
    assert (msg.mtype, msg.code, msg.mid, msg.token, msg.uri_path, msg.content_format, msg.payload) == \
        (coap.CON, coap.POST, 5, b"ab", ["f"], 17, b"xyz")

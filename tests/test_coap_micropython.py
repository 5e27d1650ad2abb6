"""The node's CoAP client (firmware/lib/fnode/coap.py) on the real MicroPython unix port: its bytes,
its matching of answers, its retransmission timing, and real exchanges with the gateway."""
from __future__ import annotations

import json
import time

import pytest

from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_COMMAND, build_frame, device_base_name
from fieldnode.gateway import GatewayThread, enqueue_command
from fieldnode.node.keystore import make_kid
from support.gateway_peers import Nodes


def test_post_is_the_rfc7252_request(micropython):
    out = micropython.eval_json(
        "import json\nfrom fnode.coap import Exchange\n"
        "ex = Exchange()\nd1 = bytes(ex.post(b'\\xd1\\x84abc'))\nm1 = ex.mid\n"
        "d2 = bytes(ex.post(memoryview(b'xyz')))\n"
        "print(json.dumps([d1.hex(), m1, d2.hex(), ex.mid]))")
    d1, m1, d2, m2 = out
    t1, t2 = bytes.fromhex(d1)[4:8], bytes.fromhex(d2)[4:8]
    assert t1 != t2  # a new random token per request
    assert bytes.fromhex(d1) == coap.encode(coap.Message(
        coap.CON, coap.POST, m1, t1,
        [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")], b"\xd1\x84abc"))
    assert m2 == (m1 + 1) & 0xFFFF and coap.decode(bytes.fromhex(d2)).payload == b"xyz"


PARSE = """
import json
from fnode import coap as c
ex = c.Exchange()
ex.post(b'frame')
ex.mid = {mid}
ex.buf[4:8] = ({token}).to_bytes(4, 'big')
out = []
for h in {datagrams!r}:
    rx = bytearray(1200)
    d = bytes.fromhex(h)
    rx[:len(d)] = d
    r = ex.parse(rx, len(d))
    pl = bytes(rx[ex.payload_start:ex.payload_start + ex.payload_len]).hex() if r > 0 else ''
    out.append([r, ex.content_format if r > 0 else None, pl, ex.need_ack, bytes(ex.ack()).hex() if ex.need_ack else ''])
print(json.dumps(out))
"""


def parse_on_node(micropython, datagrams: list[bytes], mid: int = 0x1234, token: int = 0xA1B2C3D4):
    return micropython.eval_json(PARSE.format(mid=mid, token=token, datagrams=[d.hex() for d in datagrams]))


TOKEN = bytes.fromhex("a1b2c3d4")


def ack(code: int, payload: bytes = b"", options=(), mid: int = 0x1234, token: bytes = TOKEN,
        mtype: int = coap.ACK) -> bytes:
    return coap.encode(coap.Message(mtype, code, mid, token, list(options), payload))


def test_parse_matches_answers_to_the_exchange(micropython):
    cmd = b"\xd1\x84command"
    cases = [
        (ack(coap.CHANGED), [68, -1, "", False, ""]),
        (ack(coap.VALID), [67, -1, "", False, ""]),
        (ack(coap.CHANGED, cmd, [(coap.CONTENT_FORMAT, b"\x11")]), [68, 17, cmd.hex(), False, ""]),
        (ack(coap.UNAUTHORIZED, b"bad-mac"), [129, -1, b"bad-mac".hex(), False, ""]),
        # options the node does not know, in the 13 and 14 extended forms, are skipped
        (ack(coap.CHANGED, b"p", [(coap.CONTENT_FORMAT, b"\x11"), (60, b"x" * 20), (3000, b"y" * 300)]),
         [68, 17, b"p".hex(), False, ""]),
        (ack(coap.CHANGED, mid=0x1235), [-1, None, "", False, ""]),  # another exchange
        (ack(coap.CHANGED, token=b"\x00\x00\x00\x01"), [-1, None, "", False, ""]),  # wrong token
        (ack(coap.CHANGED, token=b"\xa1"), [-1, None, "", False, ""]),
        (bytes.fromhex("70001234"), [-2, None, "", False, ""]),  # RST
        (bytes.fromhex("64441234a1b2c3d4f1"), [-1, None, "", False, ""]),  # reserved option nibble
        (bytes.fromhex("64441234a1b2c3d4ff"), [-1, None, "", False, ""]),  # marker, no payload
        (bytes.fromhex("64441234a1b2c3d4b3aa"), [-1, None, "", False, ""]),  # option runs past the end
        (bytes.fromhex("8044"), [-1, None, "", False, ""]),
    ]
    results = parse_on_node(micropython, [d for d, _ in cases])
    for (d, want), got in zip(cases, results, strict=True):
        assert got == want, d.hex()


def test_separate_response_is_acknowledged(micropython):
    empty_ack = bytes.fromhex("60001234")
    separate = ack(coap.CHANGED, mid=0x0777, mtype=coap.CON)
    (r1, r2) = parse_on_node(micropython, [empty_ack, separate])
    assert r1 == [0, None, "", False, ""]  # EMPTY_ACK: stop retransmitting, wait
    assert r2[:2] == [68, -1] and r2[3] is True and r2[4] == "60000777"  # empty ACK for its mid


@pytest.mark.parametrize("ack_timeout", [None, 500], ids=["rfc-default", "board-500ms"])
def test_retransmission_timing_follows_rfc7252(micropython, ack_timeout):
    # The default is RFC 7252's ACK_TIMEOUT of 2 s; a board's "coap_ack_timeout_ms" replaces it
    # (fnode.app sets coap.ack_timeout_ms) and everything else follows from it.
    setting = "" if ack_timeout is None else f"c.ack_timeout_ms = {ack_timeout}\n"
    out = micropython.eval_json(
        "import json\nfrom fnode import coap as c\n" + setting + "ex = c.Exchange()\nres = []\n"
        "for i in range(200):\n"
        "    ex.start(1000)\n"
        "    first = ex.timeout\n"
        "    waits = [ex.wait_ms(1000)]\n"
        "    now = 1000\n"
        "    while True:\n"
        "        now += ex.wait_ms(now)\n"
        "        if not ex.retransmit(now):\n"
        "            break\n"
        "        waits.append(ex.timeout)\n"
        "    res.append([first, waits, now + ex.wait_ms(now) - 1000])\n"
        "print(json.dumps([res, c.MAX_RETRANSMIT, c.max_transmit_wait_ms()]))")
    res, max_retransmit, max_wait = out
    ack = ack_timeout or 2000
    firsts = [r[0] for r in res]
    assert all(ack <= f <= ack * 3 // 2 for f in firsts) and len(set(firsts)) > 50  # randomised in [1, 1.5] x
    for first, waits, span in res:
        assert waits == [first * 2 ** k for k in range(max_retransmit + 1)]  # doubling, 4 retransmissions
        assert span <= max_wait  # the whole exchange within MAX_TRANSMIT_WAIT (93 s by default)
    assert max_retransmit == 4 and max_wait == ack * 31 * 3 // 2
    assert ack_timeout is not None or max_wait == 93000


NODE = """
import json, socket
from fnode import coap as c
addr = socket.getaddrinfo({host!r}, {port})[0][-1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
ex = c.Exchange()
out = []
def answer():
    while True:
        d = s.recv(1200)
        r = ex.parse(d, len(d))
        if r != c.NO_MATCH:
            return [r, bytes(d[ex.payload_start:ex.payload_start + ex.payload_len]).hex() if r > 0 else '']
for h in {frames!r}:
    dg = ex.post(bytes.fromhex(h))
    s.sendto(dg, addr)
    ex.start(0)
    out.append(answer())
# a retransmission of the last request (as if our ACK got lost): the same answer again
s.sendto(ex.datagram(), addr)
out.append(answer())
print(json.dumps(out))
"""


def test_node_posts_frames_to_the_real_gateway(micropython, tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=1)
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0)) as gt:
        d = nodes.devices[0]
        exp = time.time() + 600
        cmd = build_frame(nodes.keys[d], make_kid(d, 1), 4, 1, KIND_COMMAND, device_base_name(d), int(time.time()),
                          [{"n": "relay1", "vb": True}, {"n": "exp", "v": int(exp)}])
        f1, f2 = nodes.frame(0), nodes.frame(0)
        bad = nodes.frame(0, key=bytes(32))
        host, port = gt.address
        out = micropython.eval_json(NODE.format(host=host, port=port, frames=[f1.hex(), f1.hex(), bad.hex()]))
        assert out == [[68, ""], [67, ""], [129, b"bad-mac".hex()], [129, b"bad-mac".hex()]]
        enqueue_command(gt.gateway.db_path, d, cmd, exp)
        out = micropython.eval_json(NODE.format(host=host, port=port, frames=[f2.hex()]))
        assert out == [[68, cmd.hex()], [68, cmd.hex()]]  # the retransmission gets the cached answer
        counts = gt.call(lambda: dict(gt.gateway.counts))
        assert counts["accepted"] == 2 and counts["duplicate"] == 1 and counts["retransmission"] == 2


@pytest.mark.parametrize("board, ack", [({}, 2000), ({"coap_ack_timeout_ms": 700}, 700)],
                         ids=["default", "board-700ms"])
def test_the_board_file_sets_the_ack_timeout_frames_and_update_blocks_use(micropython, tmp_path, board, ack):
    # What fnode.app makes of the board's coap_ack_timeout_ms: the uplink's first wait for an
    # answer, and an update block's, are drawn between it and 1.5 times it.
    from fieldnode.infra.paths import SIMHAL_DIR
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "sim.json").write_text(json.dumps({"unique_id": "240ac4a1b2c3", "devices": []}))
    code = ("import json\nfrom fnode.config import Config\nfrom fnode.app import make_uplink\n"
            "from fnode.wifi import Link\nfrom fnode.blockget import BlockGet\n"
            f"up, _ = make_uplink({board!r}, Config(), ('127.0.0.1', 9), Link('plant-floor', 'pw'))\n"
            "get = BlockGet(('127.0.0.1', 9), (b'u',))\nframes, blocks = [], []\n"
            "for i in range(100):\n"
            "    up.ex.start(0)\n    frames.append(up.ex.timeout)\n"
            "    get.request(0, 6)\n    blocks.append(get.timeout)\n"
            "get.close()\nprint(json.dumps([frames, blocks]))\n")
    frames, blocks = micropython.eval_json(code, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node_dir)})
    for waits in (frames, blocks):
        assert all(ack <= w <= ack * 3 // 2 for w in waits) and len(set(waits)) > 20, waits

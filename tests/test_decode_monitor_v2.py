"""`fieldnode decode` and `monitor` with frame format v2 (the vectors of tests/vectors/frame-v2.json):
declarations seen in the input expand the telemetry after them; telemetry whose declaration is
unknown is verified and shown with its short names, marked undeclared; --db takes the declarations
a gateway stored."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fieldnode.cli.main import main
from fieldnode.node.keystore import KeyEntry, Keystore
from fieldnode.store.sqlite.connection import connect
from fieldnode.ui.liveview import LiveState
from fieldnode.ui.monitor import Intake
from fieldnode.wire.console import encode_console_line
from fieldnode.wire.render import frame_line

V2 = json.loads((Path(__file__).parent / "vectors" / "frame-v2.json").read_text())


def frame(name: str) -> bytes:
    return bytes.fromhex(next(c for c in V2["declarations"] + V2["frames"] if c["name"] == name)["frame"])


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    cases = V2["declarations"]
    return Keystore(tmp_path / "keys.json", [
        KeyEntry(kid=bytes.fromhex(c["kid"]), key=bytes.fromhex(c["key"]), alg=c["alg"], name=f"node-{i}")
        for i, c in enumerate(cases)]).save()


def decode(capsys, path: Path, *extra: str) -> tuple[int, list[dict]]:
    rc = main(["decode", str(path), "--json", *extra])
    return rc, [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_decode_expands_telemetry_after_its_declaration_and_marks_the_rest_undeclared(tmp_path, keystore, capsys):
    capture = tmp_path / "console.log"
    capture.write_bytes(encode_console_line(frame("telemetry-error"))  # before its declaration
                        + encode_console_line(frame("declaration-6"))
                        + encode_console_line(frame("telemetry-6")))
    rc, lines = decode(capsys, capture, "--keys", str(keystore))
    assert rc == 0 and [x["status"] for x in lines] == ["ok"] * 3
    undeclared, declaration, declared = lines
    assert undeclared["undeclared"] is True and undeclared["verified"] is True
    assert [r["n"] for r in undeclared["records"]] == ["a", "d"] and "u" not in undeclared["records"][0]
    assert declaration["kind"] == "declaration" and declaration["declaration"] == V2["declarations"][0]["id"]
    assert declaration["records"][0] == {"n": "temp", "short": "a", "u": "Cel", "sensor": "bme280"}
    assert "undeclared" not in declared and declared["bn"] == "urn:dev:mac:240ac4fffe123456:"
    assert declared["records"][0] == {"n": "temp", "t": 1764057600, "u": "Cel", "v": 23.45}


def test_decode_text_lines_say_undeclared(tmp_path, keystore, capsys):
    capture = tmp_path / "console.log"
    capture.write_bytes(encode_console_line(frame("telemetry-6")) + encode_console_line(frame("declaration-6")))
    assert main(["decode", str(capture), "--keys", str(keystore)]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("ok   240ac4123456 #42 telemetry (undeclared) t=1764057600 a=23.45 b=41.2")
    assert second.startswith("ok   240ac4123456 #41 declaration ") and "a=temp [Cel]" in second


def gateway_db_with_declaration(path: Path) -> Path:
    conn = connect(path)
    d = V2["declarations"][0]
    conn.execute("INSERT INTO declarations (device, id, payload, kid, counter, received) VALUES (?,?,?,?,?,?)",
                 (d["kid"][:12], d["id"], bytes.fromhex(d["payload"]), d["kid"], d["counter"], 0.0))
    conn.close()
    return path


def test_decode_db_takes_the_declarations_a_gateway_stored(tmp_path, keystore, capsys):
    capture = tmp_path / "console.log"
    capture.write_bytes(encode_console_line(frame("telemetry-6")))
    db = gateway_db_with_declaration(tmp_path / "gw.db")
    rc, (line,) = decode(capsys, capture, "--keys", str(keystore), "--db", str(db))
    assert rc == 0 and "undeclared" not in line and line["records"][2]["n"] == "press"


def test_decode_db_that_does_not_exist_is_one_clear_error(tmp_path, keystore, capsys):
    capture = tmp_path / "console.log"
    capture.write_bytes(encode_console_line(frame("telemetry-6")))
    assert main(["decode", str(capture), "--keys", str(keystore), "--db", str(tmp_path / "nope.db")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.db does not exist" in err[0] and "Traceback" not in err[0]


def test_monitor_intake_and_view_show_v2(tmp_path, keystore):
    keys = Keystore.load(keystore)
    fresh = Intake(keys)
    state = LiveState({})
    state.add_frame(fresh.from_frame(frame("telemetry-6")).frame)
    assert ("240ac4123456", "a (undeclared)") in state.rows
    state.add_frame(fresh.from_frame(frame("declaration-6")).frame)
    assert any("declaration: a=temp" in e for e in state.events)
    later = fresh.from_frame(frame("telemetry-error")).frame
    assert not later.undeclared and frame_line(later).split()[4] == "temp=23.5"
    from fieldnode.cli.options import read_declarations

    class Args:
        db = gateway_db_with_declaration(tmp_path / "gw.db")
    loaded = Intake(keys, read_declarations(Args()))
    assert not loaded.from_frame(frame("telemetry-6")).frame.undeclared
    with sqlite3.connect(Args.db) as conn:
        assert conn.execute("SELECT count(*) FROM declarations").fetchone() == (1,)


def _udp4(payload: bytes, sport: int, dport: int):
    import socket

    import dpkt
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.23"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
    ip.len = len(ip)
    return dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)


@pytest.mark.parametrize("with_db", [False, True])
def test_a_capture_shows_v2_expanded_with_db_and_undeclared_without(tmp_path, keystore, capsys, with_db):
    import dpkt

    from fieldnode.wire import coap
    post = coap.Message(coap.CON, coap.POST, 7, b"\x01", [(coap.URI_PATH, b"f"), (coap.CONTENT_FORMAT, b"\x11")],
                        frame("telemetry-6"))
    pcap = tmp_path / "site.pcap"
    with pcap.open("wb") as f:
        dpkt.pcap.Writer(f).writepkt(bytes(_udp4(coap.encode(post), 40000, 5683)), ts=1_764_057_600)
    extra = ("--db", str(gateway_db_with_declaration(tmp_path / "gw.db"))) if with_db else ()
    rc, objs = decode(capsys, pcap, "--keys", str(keystore), *extra)
    (datagram,) = [o for o in objs if o["record"] == "datagram"]
    assert datagram["verdict"] == "verified"
    names = [r["n"] for r in datagram["frame"]["records"]]
    assert names == (["temp", "hum", "press", "loop1", "vib_rms", "pulses"] if with_db else list("abcdef"))
    assert datagram["frame"].get("undeclared", False) is not with_db

"""fieldnode decode and fieldnode keys, end to end through the CLI entry point."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fieldnode.cli.main import main
from fieldnode.wire.console import encode_console_line
from fieldnode.wire.frame import build_frame, device_base_name
from fieldnode.node.keystore import KeyEntry, Keystore


@pytest.fixture
def keystore(tmp_path: Path, vectors) -> Path:
    store = Keystore(tmp_path / "keys.json", [
        KeyEntry(kid=bytes.fromhex(c["kid"]), key=bytes.fromhex(c["key"]), alg=c["alg"], name=f"node-{i}")
        for i, c in enumerate(vectors["frames"]) if c["name"] in ("telemetry-6", "telemetry-alg5")
    ])
    return store.save()


def frame_bytes(vectors, name: str) -> bytes:
    return bytes.fromhex(next(c for c in vectors["frames"] if c["name"] == name)["frame"])


def test_keystore_file_is_private(keystore: Path):
    assert stat.S_IMODE(os.stat(keystore).st_mode) == 0o600


def test_decode_console_capture_json(tmp_path, keystore, vectors, capsys):
    capture = tmp_path / "console.log"
    capture.write_bytes(
        b"I (312) boot: fieldnode 0.1.0\r\n"
        + encode_console_line(frame_bytes(vectors, "telemetry-6"))
        + b"FN1 !!!not-base64!!!\r\n"
        + encode_console_line(frame_bytes(vectors, "telemetry-6"))  # replayed
        + encode_console_line(frame_bytes(vectors, "telemetry-alg5"))
    )
    rc = main(["decode", str(capture), "--json", "--keys", str(keystore)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 1
    assert [x["status"] for x in lines] == ["ok", "rejected", "rejected", "ok"]
    assert lines[0]["records"][0] == {"n": "temp", "t": 1764057600, "u": "Cel", "v": 23.45}
    assert lines[1]["reason"] == "bad-cbor" and lines[2]["reason"] == "replay"
    assert lines[3]["device"] == "7cdfa1c0ffee"


def test_decode_cbor_sequence_and_diag(tmp_path, keystore, vectors, capsys):
    seq = tmp_path / "frames.cbor"
    seq.write_bytes(frame_bytes(vectors, "telemetry-6") + frame_bytes(vectors, "telemetry-alg5"))
    assert main(["decode", str(seq), "--diag", "--keys", str(keystore)]) == 0
    out = capsys.readouterr().out
    assert out.count("verified") == 2
    assert '"urn:dev:mac:240ac4fffe123456:"' in out and "-65537: 0" in out


def test_decode_shows_unknown_kid_as_unverified(tmp_path, keystore, vectors, capsys):
    hexfile = tmp_path / "f.hex"
    stranger = bytes.fromhex("aabbccddeeff")
    data = build_frame(bytes(32), stranger + b"\x00\x01", 4, 3, 2, device_base_name(stranger),
                       1764057000, [{"n": "fw", "vs": "0.1.0"}])
    hexfile.write_text(data.hex() + "\nzz\n")
    assert main(["decode", "--hex", str(hexfile), "--keys", str(keystore)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("REJECTED line 1: unknown-kid") and "(unverified:" in out[0]
    assert out[1].startswith("REJECTED line 2: not hex")


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--diag"]])
def test_decode_refuses_a_time_no_number_can_hold_and_shows_the_frames_after_it(tmp_path, keystore, vectors,
                                                                               capsys, fmt):
    """bt a CBOR bignum (2**1100) and t 0.5: bt + t has no float. No key is needed to send it, so
    the frame is refused as bad-senml and decoding goes on with the next one."""
    stranger = bytes.fromhex("aabbccddeeff")
    hostile = build_frame(bytes(32), stranger + b"\x00\x01", 4, 3, 0, device_base_name(stranger), 2**1100,
                          [{"n": "temp", "v": 1, "t": 0.5}])
    hexfile = tmp_path / "f.hex"
    hexfile.write_text(hostile.hex() + "\n" + frame_bytes(vectors, "telemetry-6").hex() + "\n")
    assert main(["decode", "--hex", str(hexfile), "--keys", str(keystore), *fmt]) == 1
    out = capsys.readouterr().out
    if fmt == ["--json"]:
        lines = [json.loads(x) for x in out.splitlines()]
        assert [(x["status"], x.get("reason")) for x in lines] == [("rejected", "unknown-kid"), ("ok", None)]
    elif fmt == ["--diag"]:
        assert "# line 1: REJECTED unknown-kid" in out and "# line 2: verified" in out
    else:
        first, second = out.splitlines()
        assert first.startswith("REJECTED line 1: unknown-kid") and "unverified" not in first
        assert second.startswith("ok ")


def test_decode_missing_file_is_a_clear_error(keystore, capsys):
    assert main(["decode", "/nonexistent/frames.bin", "--keys", str(keystore)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_keys_never_printed(tmp_path, keystore, vectors, capsys):
    assert main(["keys", "--keys", str(keystore), "list"]) == 0
    out = capsys.readouterr().out
    assert "240ac4123456" in out
    assert main(["keys", "list", "--keys", str(keystore)]) == 0  # the option after the action too
    assert capsys.readouterr().out == out
    for case in vectors["frames"]:
        assert case["key"] not in out and case["key"][:16] not in out
    export = tmp_path / "gw.json"
    assert main(["keys", "--keys", str(keystore), "export", str(export), "--device", "node-1"]) == 0
    assert stat.S_IMODE(os.stat(export).st_mode) == 0o600
    exported = Keystore.load(export)
    assert [e.device.hex() for e in exported] == ["7cdfa1c0ffee"]
    assert main(["keys", "--keys", str(keystore), "export", str(export)]) == 2  # exists
    assert "--force" in capsys.readouterr().err


def test_export_leaves_out_expired_keys(tmp_path, keystore, capsys):
    store = Keystore.load(keystore)
    one, other = sorted(store, key=lambda e: e.name)
    now = time.time()
    one.expires = now - 60  # rotated out, grace period over
    other.expires = now + 3600  # rotated out, still in its grace period
    store.add(KeyEntry(kid=one.kid[:6] + b"\x00\x10", key=b"\x07" * 32, name=one.name))
    store.add(KeyEntry(kid=other.kid[:6] + b"\x00\x10", key=b"\x08" * 32, name=other.name))
    store.save()
    export = tmp_path / "gw.json"
    assert main(["keys", "--keys", str(keystore), "export", str(export)]) == 0
    assert "left out 1 expired" in capsys.readouterr().out
    exported = {e.kid: e for e in Keystore.load(export)}
    assert set(exported) == {one.kid[:6] + b"\x00\x10", other.kid, other.kid[:6] + b"\x00\x10"}
    assert exported[other.kid].expires == other.expires  # the gateway still drops it on time
    assert main(["keys", "--keys", str(keystore), "export", str(export), "--force", "--device", one.name]) == 0
    assert [e.generation for e in Keystore.load(export)] == [16]


def test_revoke_removes_every_generation_and_refuses_unknown_names(tmp_path, keystore, capsys):
    store = Keystore.load(keystore)
    (victim,) = [e for e in store if e.name == "node-0"]
    store.add(KeyEntry(kid=victim.kid[:6] + b"\x00\x02", key=b"\x07" * 32, name="node-0"))  # generation 2
    store.save()
    before = keystore.read_bytes()
    assert main(["keys", "revoke", "node-0", "no-such-node", "--keys", str(keystore)]) == 2
    assert "no-such-node" in capsys.readouterr().err
    assert keystore.read_bytes() == before  # nothing removed when one name is wrong
    assert main(["keys", "revoke", "node-0", "--keys", str(keystore)]) == 0
    out = capsys.readouterr().out
    assert "2 key(s)" in out and victim.key.hex() not in out
    left = Keystore.load(keystore)
    assert [e.name for e in left] == ["node-1"] and stat.S_IMODE(os.stat(keystore).st_mode) == 0o600

def test_cli_help_runs_as_a_command():
    proc = subprocess.run([str(Path(sys.executable).parent / "fieldnode"), "decode", "--help"],
                          capture_output=True, text=True, check=True)
    assert "FN1" in proc.stdout and "--keys" in proc.stdout

"""fieldnode provision, monitor, sim and demo end to end, against virtual nodes on ptys."""
from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
import serial

from fieldnode.cli import main
from fieldnode.console import encode_console_line
from fieldnode.keystore import Keystore
from fieldnode.sim.fleet import install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from fieldnode.paths import BOARDS_DIR

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")


@pytest.fixture
def node(tmp_path):
    node_dir = tmp_path / "node"
    install_app(node_dir / "flash", BOARDS_DIR / "virtual.json")
    vn = VirtualNode(node_dir, sim_unique_id(1, 0x77), board="virtual",
                     devices=[{"name": "env", "type": "bme280", "sda": 21, "address": 118, "init": {}},
                              {"name": "loop1", "type": "current_loop", "adc": 34,
                               "init": {"shunt_ohm": 150, "ma": 12.0, "range": [0, 10]}}])
    vn.start()
    vn.wait_output(b"not sending", timeout=30)
    yield vn
    vn.stop()


def nvs_identity(vn: VirtualNode) -> bytes | None:
    entry = vn.nvs().get("fieldnode", {}).get("id")
    return bytes.fromhex(entry[1]) if entry else None


def test_provision_proves_and_records_the_key(node, tmp_path, capsys):
    keys = tmp_path / "keys.json"
    mark = node.output_mark()
    rc = main(["provision", "--port", node.port, "--keys", str(keys), "--name", "bench-1",
               "--gateway", "127.0.0.1:5683"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    store = Keystore.load(keys)
    (entry,) = list(store)
    assert entry.name == "bench-1" and entry.device == node.unique_id and entry.generation == 1
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    identity = nvs_identity(node)
    assert identity == bytes([4]) + entry.kid + entry.key  # the key the host recorded is the node's
    assert entry.key.hex() not in out.out + out.err  # never printed
    assert entry.fingerprint in out.out + out.err
    assert "provisioned" in out.out
    # provision restarted the application, which now signs with that key: its frames verify.
    node.wait_output(b"FN1 ", timeout=30, since=mark)
    capture = tmp_path / "console.log"
    node.wait_output(b"FN1 ", timeout=30, since=node.output_mark())
    capture.write_bytes(node.console_tail(20000))
    assert main(["decode", str(capture), "--json", "--keys", str(keys)]) in (0, 1)
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(f["status"] == "ok" and f["device"] == node.unique_id.hex() for f in frames)


def test_existing_key_is_refused_and_nothing_changes(node, tmp_path, capsys):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    before_store, before_nvs = keys.read_bytes(), nvs_identity(node)
    capsys.readouterr()
    boots = len(node.boots)
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 1
    err = capsys.readouterr()
    assert "already has a key" in err.out + err.err and "--rotate" in err.out + err.err
    assert keys.read_bytes() == before_store and nvs_identity(node) == before_nvs
    # The refused session interrupted the application; it was restarted and sends again.
    node.wait_boots(boots + 1, timeout=20)
    node.wait_output(b"FN1 ", timeout=30, since=node.output_mark())


def test_rotate_keeps_the_old_key_for_a_grace_period(node, tmp_path):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate", "--grace", "2"]) == 0
    old, new = sorted(Keystore.load(keys), key=lambda e: e.generation)
    assert (old.generation, new.generation) == (1, 2) and old.key != new.key
    assert old.expires is not None and 0 < old.expires - time.time() <= 2 * 86400
    assert new.expires is None
    assert nvs_identity(node) == bytes([4]) + new.kid + new.key


def test_force_replaces_and_drops_the_old_key(node, tmp_path):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--force", "--alg", "5"]) == 0
    (entry,) = list(Keystore.load(keys))
    assert entry.generation == 2 and entry.alg == 5
    assert nvs_identity(node) == bytes([5]) + entry.kid + entry.key


def test_busy_and_missing_ports_are_named(node, tmp_path, capsys):
    keys = tmp_path / "keys.json"
    with serial.Serial(node.port, exclusive=True):
        assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 1
    out = capsys.readouterr()
    assert "in use by another program" in out.out + out.err
    assert main(["provision", "--port", "/dev/ttyUSB-nope", "--keys", str(keys)]) == 1
    out = capsys.readouterr()
    assert "no such serial port" in out.out + out.err
    assert not keys.exists()  # nothing recorded for nodes that were never reached
    assert nvs_identity(node) is None


def test_batch_gives_every_node_its_own_key(tmp_path, capsys):
    nodes = []
    try:
        for i in (1, 2):
            node_dir = tmp_path / f"n{i}"
            install_app(node_dir / "flash", BOARDS_DIR / "virtual.json")
            nodes.append(VirtualNode(node_dir, sim_unique_id(i, 0x55), board="virtual").start())
        for vn in nodes:
            vn.wait_output(b"not sending", timeout=30)
        keys = tmp_path / "keys.json"
        assert main(["provision", "--keys", str(keys), "--name", "line3",
                     "--port", nodes[0].port, "--port", nodes[1].port]) == 0
        entries = sorted(Keystore.load(keys), key=lambda e: e.name)
        assert [e.name for e in entries] == ["line3-1", "line3-2"]
        assert entries[0].key != entries[1].key
        assert "provisioned 2 of 2" in capsys.readouterr().out
    finally:
        for vn in nodes:
            vn.stop()


def test_monitor_json_reads_a_virtual_node(node, tmp_path):
    keys = tmp_path / "keys.json"
    mark = node.output_mark()
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    node.set_world(devices={"env": {"temp": 31.25}})
    node.wait_output(b"FN1 ", timeout=30, since=mark)  # the application runs again, with its key
    proc = subprocess.run([FIELDNODE, "monitor", "--port", node.port, "--keys", str(keys), "--json",
                           "--duration", "7"], capture_output=True, text=True, timeout=60)
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    temps = [r["v"] for f in frames for r in f["records"] if r["n"] == "env.temp"]
    assert temps and abs(temps[-1] - 31.25) < 0.02, proc.stderr
    assert all(f["verified"] for f in frames)


def test_monitor_with_the_wrong_keystore_rejects_every_frame_as_bad_mac(node, tmp_path):
    """A laptop whose keystore holds another key for this node: nothing passes as verified."""
    keys = tmp_path / "keys.json"
    mark = node.output_mark()
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    node.wait_output(b"FN1 ", timeout=30, since=mark)
    (entry,) = list(Keystore.load(keys))
    wrong = tmp_path / "other-laptop.json"
    from fieldnode.keystore import KeyEntry
    Keystore(wrong, [KeyEntry(kid=entry.kid, key=bytes(32), alg=entry.alg, name=entry.name)]).save()
    proc = subprocess.run([FIELDNODE, "monitor", "--port", node.port, "--keys", str(wrong), "--json",
                           "--duration", "6"], capture_output=True, text=True, timeout=60)
    assert proc.stdout == ""  # no frame printed as verified
    rejected = [line for line in proc.stderr.splitlines() if line.startswith("rejected:")]
    assert rejected and all("bad-mac" in line for line in rejected)
    assert entry.key.hex() not in proc.stderr

def test_monitor_survives_unplug_and_replug(tmp_path, vectors):
    """The port disappears (USB unplugged) and comes back at the same path."""
    keys = tmp_path / "keys.json"
    case = vectors["frames"][0]
    from fieldnode.keystore import KeyEntry
    Keystore(keys, [KeyEntry(kid=bytes.fromhex(case["kid"]), key=bytes.fromhex(case["key"]))]).save()
    link = tmp_path / "ttyUSB0"

    def plug() -> int:
        master, slave = pty.openpty()
        tty.setraw(slave)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.ttyname(slave))
        os.close(slave)
        return master

    master = plug()
    proc = subprocess.Popen([FIELDNODE, "monitor", "--port", str(link), "--keys", str(keys), "--json",
                             "--duration", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        os.write(master, encode_console_line(bytes.fromhex(case["frame"])))
        time.sleep(0.5)
        os.close(master)  # unplugged
        link.unlink()
        time.sleep(1.5)
        master = plug()
        time.sleep(1.5)  # the monitor reopens the port
        from fieldnode.frame import build_frame
        again = build_frame(bytes.fromhex(case["key"]), bytes.fromhex(case["kid"]), 4, 43, 0, case["bn"],
                            case["bt"], case["records"])
        os.write(master, encode_console_line(again))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        os.close(master)
    counters = [json.loads(line)["counter"] for line in out.splitlines()]
    assert counters == [42, 43], err
    assert "disconnected" in err and "is back" in err


def test_sim_command_starts_provisions_and_stops(tmp_path):
    proc = subprocess.run([FIELDNODE, "sim", "--nodes", "2", "--duration", "3", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("  port /dev/pts/") == 2
    store = Keystore.load(tmp_path / "keys.json")
    assert sorted(e.name for e in store) == ["sim-1", "sim-2"]


def test_demo_shows_verified_frames_from_three_nodes():
    proc = subprocess.run([FIELDNODE, "demo", "--duration", "10"], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert "boot: fw=0.1.0" in proc.stdout
    for name in ("sim-1", "sim-2", "sim-3"):
        assert f"{name} │ env.temp" in proc.stdout or f"{name} | env.temp" in proc.stdout
    counts = proc.stdout.rsplit("gateway counts:", 1)[1]
    assert "accepted" in counts and "rejected" not in counts

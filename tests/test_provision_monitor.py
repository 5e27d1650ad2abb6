"""fieldnode provision, monitor, sim and demo end to end, against virtual nodes on ptys."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

import pytest
import serial

from fieldnode.wire import coap
from fieldnode.cli.main import main
from fieldnode.cli.commands import provision as provision_command
from fieldnode.node.devicelink import DeviceLink
from fieldnode.wire.console import encode_console_line
from fieldnode.wire.frame import build_frame, device_base_name
from fieldnode.gateway import GatewayThread
from fieldnode.node.keystore import Keystore
from fieldnode.sim.fleet import install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from fieldnode.infra.paths import BOARDS_DIR
from support.gateway_peers import Client, Nodes
from support.proclines import ProcessLines
from support.nodesite import console_counters, console_since, wait_for

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")


@pytest.fixture
def node(tmp_path):
    node_dir = tmp_path / "node"
    install_app(node_dir / "flash", BOARDS_DIR / "virtual.json")
    vn = VirtualNode(node_dir, sim_unique_id(1, 0x77), board="virtual",
                     devices=[{"name": "env", "type": "bme280", "sda": 21, "address": 118, "init": {}},
                              {"name": "loop1", "type": "current_loop", "adc": 34,
                               "init": {"shunt_ohm": 120, "ma": 12.0, "range": [0, 10]}}])
    vn.start()
    vn.wait_output(b"not sending", timeout=30)
    yield vn
    vn.stop()


def nvs_identity(vn: VirtualNode) -> bytes | None:
    entry = vn.nvs().get("fieldnode", {}).get("id")
    return bytes.fromhex(entry[1]) if entry else None


def decoded_since(node: VirtualNode, mark: int, keys: Path, tmp_path: Path, capsys) -> list[dict]:
    """`fieldnode decode --json` of the node's whole console lines after mark, once it has printed
    a frame there; every frame must verify (exit 0)."""
    wait_for(lambda: console_counters(node, mark), timeout=30, what="a frame on the console")
    capture = tmp_path / "console.log"
    text = console_since(node, mark)
    capture.write_bytes(text[:text.rindex(b"\n") + 1])  # whole lines only
    capsys.readouterr()
    assert main(["decode", str(capture), "--json", "--keys", str(keys)]) == 0
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert frames and all(f["status"] == "ok" for f in frames), frames
    return frames


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
    frames = decoded_since(node, mark, keys, tmp_path, capsys)
    assert all(f["device"] == node.unique_id.hex() for f in frames), frames


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


def test_a_key_this_keystore_does_not_hold_is_refused_with_advice_that_works(node, tmp_path, capsys):
    # As with `fieldnode sim` nodes provisioned into the sim's own keystore: --rotate cannot keep
    # an old key valid that this keystore never had, so neither message may send the user there.
    assert main(["provision", "--port", node.port, "--keys", str(tmp_path / "other.json")]) == 0
    keys = tmp_path / "keys.json"
    capsys.readouterr()
    for extra in ([], ["--rotate"]):
        assert main(["provision", "--port", node.port, "--keys", str(keys), *extra]) == 1
        said = capsys.readouterr()
        advice = re.split(r"[.;]\s+[Uu]se\s", " ".join(said.err.split()), maxsplit=1)[1]
        assert "--force" in advice and "--rotate" not in advice, said
        assert not keys.exists()
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--force"]) == 0
    assert [e.device for e in Keystore.load(keys)] == [node.unique_id]


class CorruptingLink(DeviceLink):
    """A USB link that flips one bit of the key on its way into p.stage(): the node stages, MACs
    the challenge with and unstages a key other than the one the host generated, as after a
    corrupted transfer. Everything on the node runs for real; only the bytes in transit change."""

    def exec(self, code: str) -> str:
        if "p.stage('" in code:
            head, key_hex, tail = code.split("'", 2)
            key_hex = format(int(key_hex[0], 16) ^ 1, "x") + key_hex[1:]
            code = f"{head}'{key_hex}'{tail}"
        return super().exec(code)


def test_failed_proof_unstages_and_records_nothing(node, tmp_path, capsys, monkeypatch):
    keys = tmp_path / "keys.json"
    monkeypatch.setattr(provision_command, "DeviceLink", CorruptingLink)
    # A node without a key: refused, no keystore written, no identity on the node.
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 1
    out = capsys.readouterr()
    assert "did not prove it holds the new key" in out.out + out.err
    assert not keys.exists()
    assert nvs_identity(node) is None and "pid" not in node.nvs().get("fieldnode", {})
    # A provisioned node whose --rotate fails the proof keeps its key, and so does the keystore.
    monkeypatch.setattr(provision_command, "DeviceLink", DeviceLink)
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    before_store, before_nvs = keys.read_bytes(), nvs_identity(node)
    capsys.readouterr()
    monkeypatch.setattr(provision_command, "DeviceLink", CorruptingLink)
    boots = len(node.boots)
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate"]) == 1
    out = capsys.readouterr()
    assert "did not prove it holds the new key" in out.out + out.err
    assert "failed" in out.out
    assert keys.read_bytes() == before_store
    assert nvs_identity(node) == before_nvs and "pid" not in node.nvs().get("fieldnode", {})
    (entry,) = list(Keystore.load(keys))
    assert entry.key.hex() not in out.out + out.err
    # The application was restarted and still signs with the old key: its frames verify.
    node.wait_boots(boots + 1, timeout=20)
    mark = node.output_mark()
    frames = decoded_since(node, mark, keys, tmp_path, capsys)
    assert all(f["kid"] == entry.kid.hex() for f in frames), frames


def test_rotate_keeps_the_old_key_for_a_grace_period(node, tmp_path):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate", "--grace", "2"]) == 0
    old, new = sorted(Keystore.load(keys), key=lambda e: e.generation)
    assert (old.generation, new.generation) == (1, 2) and old.key != new.key
    assert old.expires is not None and 0 < old.expires - time.time() <= 2 * 86400
    assert new.expires is None
    assert nvs_identity(node) == bytes([4]) + new.kid + new.key


def test_rotated_out_key_works_at_the_gateway_until_the_grace_period_ends(node, tmp_path, monkeypatch):
    """provision --rotate against a running gateway: the old key id is accepted during --grace and
    refused as unknown-kid after it; the new key id is accepted, and the node sends with it."""
    keys = tmp_path / "keys.json"
    db = tmp_path / "gw.db"
    Keystore(keys, []).save()
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")
    gateway = GatewayThread(Keystore.load(keys), db, ("127.0.0.1", 0), health_interval=0.2).start()
    client = Client(gateway.address)
    host, port = gateway.address

    def stored_kids() -> dict[str, int]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT kid, MAX(counter) FROM frames GROUP BY kid").fetchall())

    def post(entry, counter: int) -> tuple[int, bytes]:
        frame = build_frame(entry.key, entry.kid, entry.alg, counter, 0, device_base_name(entry.device),
                            1_764_057_600 + counter, [{"n": "env.temp", "u": "Cel", "v": 21.5}])
        answer = client.post(frame)
        return answer.code, answer.payload

    try:
        assert main(["provision", "--port", node.port, "--keys", str(keys), "--gateway", f"{host}:{port}",
                     "--wifi", "plant-floor"]) == 0
        (old,) = list(Keystore.load(keys))
        wait_for(lambda: old.kid.hex() in stored_kids(), timeout=30, what="a frame under the first key")
        # --no-reset: the node waits in its REPL, so only this test's frames use the counters.
        # A day's grace: the frames below are inside it however long provisioning takes.
        assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate", "--no-reset",
                     "--grace", "1"]) == 0
        old, new = sorted(Keystore.load(keys), key=lambda e: e.generation)
        assert new.generation == 2 and old.expires is not None and old.expires - time.time() <= 86400
        high = stored_kids()[old.kid.hex()]
        # the new key first: the gateway looks at the changed keystore for it, so what the old
        # key's frame meets next is the old key with its expiry, not the keystore from before
        assert post(new, high + 2) == (coap.CHANGED, b"")
        assert post(old, high + 1) == (coap.CHANGED, b"")  # during the grace period
        # Its end: the next rotation's grace is half a second, waited out on the gateway's clock.
        assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate", "--no-reset",
                     "--grace", str(0.5 / 86400)]) == 0
        first, old, new = sorted(Keystore.load(keys), key=lambda e: e.generation)
        assert new.generation == 3 and first.expires is not None and old.expires - time.time() <= 0.5
        assert post(new, high + 3) == (coap.CHANGED, b"")  # the gateway has this keystore too
        while time.time() <= old.expires:
            time.sleep(old.expires - time.time() + 0.01)
        assert post(old, high + 4) == (coap.UNAUTHORIZED, b"unknown-kid")  # after it
        assert post(new, high + 5) == (coap.CHANGED, b"")
        assert gateway.gateway.counts.get("rejected.unknown-kid") == 1
        # Back in its application the node signs with the new key, and the gateway stores it.
        with DeviceLink(node.port) as link:
            link.reset()
        wait_for(lambda: stored_kids().get(new.kid.hex(), 0) > high + 5, timeout=30,
                 what="a frame from the node under the new key")
    finally:
        client.close()
        gateway.stop()


def test_force_replaces_and_drops_the_old_key(node, tmp_path):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--force", "--alg", "5"]) == 0
    (entry,) = list(Keystore.load(keys))
    assert entry.generation == 2 and entry.alg == 5
    assert nvs_identity(node) == bytes([5]) + entry.kid + entry.key


def test_revoked_node_with_erased_nvs_gets_a_new_key_id_and_its_frames_are_stored(node, tmp_path, monkeypatch,
                                                                                   capsys):
    """The recovery in the field guide's troubleshooting table, end to end: a node is revoked, its
    NVS erased (key and counter gone), and `provision --force` run again. The new key must not
    reuse the revoked key id: the gateway keeps that key id's replay window, and would refuse
    every frame of the restarted counter as `replay`."""
    keys = tmp_path / "keys.json"
    db = tmp_path / "gw.db"
    Keystore(keys, []).save()
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")
    gateway = GatewayThread(Keystore.load(keys), db, ("127.0.0.1", 0), health_interval=0.2).start()
    host, port = gateway.address
    site = ["--keys", str(keys), "--gateway", f"{host}:{port}", "--wifi", "plant-floor"]

    def stored() -> dict[str, int]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT kid, MAX(counter) FROM frames GROUP BY kid").fetchall())

    try:
        assert main(["provision", "--port", node.port, *site]) == 0
        (first,) = list(Keystore.load(keys))
        wait_for(lambda: stored().get(first.kid.hex(), 0) >= 3, timeout=30, what="frames under the first key")
        assert main(["keys", "--keys", str(keys), "revoke", node.unique_id.hex()]) == 0
        assert "never issued again" in capsys.readouterr().out
        wait_for(lambda: gateway.gateway.counts.get("rejected.unknown-kid"), timeout=30,
                 what="the revoked key refused")
        node.kill()  # esptool erase_flash: the NVS goes, key and counter with it
        (node.node_dir / "nvs.json").unlink()
        mark = node.output_mark()
        node.power_on()
        node.wait_output(b"not sending: no device key in NVS", timeout=30, since=mark)
        assert main(["provision", "--port", node.port, "--force", *site]) == 0
        (second,) = list(Keystore.load(keys))
        assert second.generation == 2 and second.kid != first.kid
        wait_for(lambda: stored().get(second.kid.hex(), 0) >= 3, timeout=30,
                 what="frames under the new key id stored")
        assert gateway.gateway.counts.get("rejected.replay", 0) == 0
        assert main(["keys", "--keys", str(keys), "list"]) == 0
        listing = capsys.readouterr().out
        assert first.kid.hex() in listing and "revoked" in listing and first.key.hex() not in listing
    finally:
        gateway.stop()


def test_force_with_a_lost_keystore_gives_the_generation_after_the_node_s(node, tmp_path):
    """A keystore lost (or an old backup) while the node keeps its key: the node's key id is the
    one the gateway saw last, so the new key comes after it, and the old one is retired."""
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--rotate"]) == 0
    keys.unlink()
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--force"]) == 0
    store = Keystore.load(keys)
    (entry,) = list(store)
    assert entry.generation == 3
    assert [(r.generation, r.why) for r in store.retired()] == [(2, "replaced")]
    assert nvs_identity(node) == bytes([4]) + entry.kid + entry.key


def test_busy_and_missing_ports_are_named(node, tmp_path, capsys):
    keys = tmp_path / "keys.json"
    # Every port is checked before anything is asked or touched: a mistake, exit status 2.
    with serial.Serial(node.port, exclusive=True):
        assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 2
    out = capsys.readouterr()
    assert "in use by another program" in out.out + out.err
    assert main(["provision", "--port", "/dev/ttyUSB-nope", "--keys", str(keys)]) == 2
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
    from fieldnode.node.keystore import KeyEntry
    Keystore(wrong, [KeyEntry(kid=entry.kid, key=bytes(32), alg=entry.alg, name=entry.name)]).save()
    proc = subprocess.run([FIELDNODE, "monitor", "--port", node.port, "--keys", str(wrong), "--json",
                           "--duration", "6"], capture_output=True, text=True, timeout=60)
    assert proc.stdout == ""  # no frame printed as verified
    rejected = [line for line in proc.stderr.splitlines() if line.startswith("rejected:")]
    assert rejected and all("bad-mac" in line for line in rejected)
    assert entry.key.hex() not in proc.stderr

def test_monitor_udp_verifies_datagrams_and_counts_rejections(tmp_path):
    """monitor --udp on loopback: bare frames and CoAP-wrapped frames verify; a stranger's frame
    (unknown-kid), a tampered one (bad-mac) and garbage are rejected by reason, never printed."""
    nodes = Nodes(tmp_path / "keys.json", n=2)
    stranger = Nodes(tmp_path / "other.json", n=1, first=9)
    proc = subprocess.Popen([FIELDNODE, "monitor", "--udp", "127.0.0.1:0", "--keys", str(nodes.path),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listening = proc.stderr.readline()
        assert "listening on udp 127.0.0.1:" in listening
        sender = Client(("127.0.0.1", int(listening.rsplit(":", 1)[1])))  # the port the kernel gave it
        tampered = bytearray(nodes.frame(1, counter=7))
        tampered[-12] ^= 0x01
        for datagram in (nodes.frame(0, counter=1),  # bare, as a tap on a mirror port sees it
                         sender.request(nodes.frame(1, counter=5)),  # as a node sends it to a gateway
                         stranger.frame(0, counter=1), bytes(tampered), b"\xd1garbage", b"\xff\x00",
                         nodes.frame(0, counter=1)):  # the same frame again: a replay
            sender.send(datagram)
        sender.close()
        lines = ProcessLines(proc)
        lines.wait("stderr", lambda err: sum(line.startswith("rejected: ") for line in err) == 5, "5 rejections")
        lines.wait("stdout", lambda out: len(out) == 2, "2 frames")
        proc.send_signal(signal.SIGINT)  # what is printed then is all it had
        out, err = lines.finish(120)  # a safety net: it stops at once
    finally:
        proc.kill()
    frames = [json.loads(line) for line in out.splitlines()]
    assert [(f["device"], f["counter"], f["verified"]) for f in frames] == [
        (nodes.devices[0].hex(), 1, True), (nodes.devices[1].hex(), 5, True)], err
    rejected = sorted(line.split(": ", 1)[1] for line in err.splitlines() if line.startswith("rejected: "))
    assert rejected == ["bad-cbor", "bad-mac", "not-cose-mac0", "replay", "unknown-kid"], err
    assert ("2 verified, 5 rejected (bad-cbor 1, bad-mac 1, not-cose-mac0 1, replay 1, unknown-kid 1)"
            in err), err
    assert all(key.hex() not in out + err for key in nodes.keys.values())


def test_monitor_survives_unplug_and_replug(tmp_path, vectors):
    """The port disappears (USB unplugged) and comes back at the same path."""
    keys = tmp_path / "keys.json"
    case = vectors["frames"][0]
    from fieldnode.node.keystore import KeyEntry
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

    def deliver(master: int, frame: bytes, counter: int) -> None:
        """Writes the frame's console line until the monitor prints the frame. What reaches a port
        before the monitor has (re)opened it is dropped (pyserial flushes input on open), and the
        monitor says it has opened the port only with the next line; a copy after the first is
        refused as a replay, never printed."""
        deadline = time.monotonic() + 60
        os.set_blocking(master, False)  # a port nobody reads fills up: the deadline decides, not a write
        while not lines.until("stdout", lambda out: any(json.loads(x)["counter"] == counter for x in out), 0.3):
            assert time.monotonic() < deadline and proc.poll() is None, \
                f"frame {counter} never printed: {lines.text('stderr')}"
            try:
                os.write(master, encode_console_line(frame))
            except BlockingIOError:
                pass

    master = plug()
    proc = subprocess.Popen([FIELDNODE, "monitor", "--port", str(link), "--keys", str(keys), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = ProcessLines(proc)
    try:
        deliver(master, bytes.fromhex(case["frame"]), 42)
        os.close(master)  # unplugged: the monitor's next read fails, whenever the port comes back
        link.unlink()
        master = plug()
        from fieldnode.wire.frame import build_frame
        again = build_frame(bytes.fromhex(case["key"]), bytes.fromhex(case["kid"]), 4, 43, 0, case["bn"],
                            case["bt"], case["records"])
        deliver(master, again, 43)
        proc.send_signal(signal.SIGINT)
        out, err = lines.finish(120)
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
    for i in (1, 2):  # each node's NVS holds its device key and Wi-Fi password: owner only
        node_dir = tmp_path / f"node{i}"
        assert (node_dir / "nvs.json").read_text().count("blob") >= 2
        assert stat.S_IMODE(os.stat(node_dir / "nvs.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(node_dir).st_mode) == 0o700


def test_sim_unprovisioned_nodes_have_no_key_even_where_they_had_one(tmp_path):
    run = [FIELDNODE, "sim", "--nodes", "1", "--dir", str(tmp_path), "--duration", "0"]
    assert subprocess.run(run, capture_output=True, text=True, timeout=120).returncode == 0
    assert "blob" in (tmp_path / "node1" / "nvs.json").read_text()  # provisioned: key and Wi-Fi password
    proc = subprocess.run([*run, "--unprovisioned"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "not provisioned" in proc.stdout, proc.stdout + proc.stderr
    nvs = tmp_path / "node1" / "nvs.json"
    assert not nvs.exists() or "blob" not in nvs.read_text()


def test_sim_rom_loaders_answer_esptool_as_an_esp32_in_download_mode(tmp_path):
    proc = subprocess.Popen([FIELDNODE, "sim", "--nodes", "0", "--rom-loader", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        ports = re.findall(r"rom-loader-\d+ +esp32 in download mode, MAC (\S+) +port (/dev/pts/\d+)", "".join(lines))
        assert len(ports) == 2, lines
        for mac, port in ports:
            esptool = subprocess.run([sys.executable, "-m", "esptool", "--port", port, "--before", "no-reset",
                                      "--after", "no-reset", "read-mac"], capture_output=True, text=True, timeout=60)
            said = esptool.stdout + esptool.stderr
            assert esptool.returncode == 0 and re.search(rf"MAC: +{mac}", esptool.stdout), said
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "stopping" in rest
    finally:
        proc.kill()
    for args in (["--nodes", "0"], ["--rom-loader", "-1"], ["--unprovisioned", "--keys", str(tmp_path / "k.json")]):
        bad = subprocess.run([FIELDNODE, "sim", *args, "--duration", "0"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr


def test_demo_shows_verified_frames_from_three_nodes():
    proc = subprocess.run([FIELDNODE, "demo", "--duration", "10"], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    assert "boot: fw=0.1.0" in proc.stdout
    assert "declaration: a=env.temp" in proc.stdout  # frame format v2, as new nodes send it
    for name in ("sim-1", "sim-2", "sim-3"):
        assert f"{name} │ env.temp" in proc.stdout or f"{name} | env.temp" in proc.stdout
    counts = proc.stdout.rsplit("gateway counts:", 1)[1]
    assert "accepted" in counts and "rejected" not in counts


def test_demo_closing_count_is_the_views_count_and_the_database_can_be_kept(tmp_path):
    db = tmp_path / "demo.db"
    proc = subprocess.run([FIELDNODE, "demo", "--nodes", "1", "--duration", "6", "--db", str(db)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "300"})
    assert proc.returncode == 0, proc.stderr
    assert f"database {db} (kept)" in proc.stdout
    shown = int(re.findall(r"^(\d+) frames verified", proc.stdout, re.M)[-1])  # the view's last header
    accepted = int(re.search(r"gateway counts: .*accepted (\d+)", proc.stdout).group(1))
    with sqlite3.connect(db) as conn:  # v2: the node's declaration is stored apart from its frames
        stored = conn.execute("SELECT (SELECT count(*) FROM frames) + (SELECT count(*) FROM declarations)"
                              ).fetchone()[0]
    assert shown == accepted == stored > 0
    assert "#: frame counter" in proc.stdout  # the legend under the table
    proc = subprocess.run([FIELDNODE, "demo", "--nodes", "1", "--duration", "1"], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "COLUMNS": "200"})
    assert "(temporary: removed at the end, --db PATH keeps it)" in proc.stdout, proc.stderr


def test_monitor_live_view_shows_each_reading_with_unit_sparkline_counter_and_status(node, tmp_path):
    keys = tmp_path / "keys.json"
    mark = node.output_mark()
    assert main(["provision", "--port", node.port, "--keys", str(keys), "--name", "press-7"]) == 0
    node.set_world(devices={"env": {"temp": 31.25}})
    node.wait_output(b"FN1 ", timeout=30, since=mark)
    proc = subprocess.run([FIELDNODE, "monitor", "--port", node.port, "--keys", str(keys), "--duration", "7"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "140"})
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.rsplit("┏", 1)[-1]  # the last frame of the live view
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                         for line in table.splitlines() if line.startswith("│"))}
    node_name, _reading, value, unit, recent, count, _age, _rate, status = rows["env.temp"]
    assert node_name == "press-7" and float(value) == pytest.approx(31.25, abs=0.02) and unit == "Cel"
    assert recent and set(recent) <= set("▁▂▃▄▅▆▇█ ") and int(count) >= 3 and status == "verified"
    assert rows["loop1"][3] == "bar" and float(rows["loop1"][2]) == pytest.approx(5.0, abs=0.01)
    assert (Keystore.load(keys).current(node.unique_id).key.hex()) not in proc.stdout + proc.stderr


def test_monitor_on_a_busy_port_says_who_to_close_and_reads_once_it_is_free(node, tmp_path):
    keys = tmp_path / "keys.json"
    assert main(["provision", "--port", node.port, "--keys", str(keys)]) == 0
    monitor = [FIELDNODE, "monitor", "--port", node.port, "--keys", str(keys), "--json", "--duration", "6"]
    with serial.Serial(node.port, exclusive=True):  # screen, minicom or another monitor has it
        busy = subprocess.run(monitor, capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and busy.stdout == ""
    assert "is in use by another program" in busy.stderr and "Traceback" not in busy.stderr
    free = subprocess.run(monitor, capture_output=True, text=True, timeout=60)
    assert free.returncode == 0 and any(json.loads(line)["verified"] for line in free.stdout.splitlines()), free.stderr


def test_sim_stops_cleanly_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([FIELDNODE, "sim", "--nodes", "2", "--dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops the nodes" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, ("".join(lines), proc.stderr.read())
            lines.append(proc.stdout.readline())
        running = _processes_in(tmp_path)
        assert len(running) == 2  # one MicroPython process a node, working in its flash
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopping" in out and "Traceback" not in err, err
    assert _processes_in(tmp_path) == []  # nothing left running
    assert len(Keystore.load(tmp_path / "keys.json")) == 2  # what it provisioned stays recorded


def _processes_in(directory: Path) -> list[int]:
    """Pids of processes whose working directory is under directory."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(Path(os.readlink(entry / "cwd"))).startswith(str(directory)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def write_once_read(master: int, slave: int, proc: subprocess.Popen, data: bytes, timeout: float = 120) -> None:
    """Puts data on the pty (slave kept open here) for the program reading it, exactly once. What
    reaches a port before its reader opened it is flushed (pyserial flushes input on open), and
    in packet mode the kernel tells the master so (TIOCPKT_FLUSHREAD): the data goes again after
    each flush, until it has been taken with no flush since it was written."""
    fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
    deadline = time.monotonic() + timeout
    os.write(master, data)
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "nobody read the port"
        select.select([master], [], [], 0.05)  # a flush wakes this at once
        unread = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, bytes(4)))[0]
        flushed = False
        while select.select([master], [], [], 0)[0]:
            flushed |= bool(os.read(master, 64)[0] & termios.TIOCPKT_FLUSHREAD)
        if flushed:
            os.write(master, data)
        elif unread == 0:
            return


def test_monitor_live_view_lists_rejections_by_reason_and_log_lines_below(tmp_path, vectors):
    """On a console with a good frame, a tampered one, a damaged frame line and log lines, the
    live view shows the reading, counts each rejection under its reason, and shows the log lines."""
    keys = tmp_path / "keys.json"
    case = vectors["frames"][0]
    from fieldnode.node.keystore import KeyEntry
    Keystore(keys, [KeyEntry(kid=bytes.fromhex(case["kid"]), key=bytes.fromhex(case["key"]), name="press-7")]).save()
    master, slave = pty.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    good = bytes.fromhex(case["frame"])
    tampered = bytearray(good)
    tampered[-3] ^= 0x01
    proc = subprocess.Popen([FIELDNODE, "monitor", "--port", port, "--keys", str(keys), "--duration", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "140"})
    try:
        write_once_read(master, slave, proc, b"I fieldnode 0.1.0 board virtual reset power_on\n"
                        + encode_console_line(good) + encode_console_line(bytes(tampered)) + b"FN1 not*base64\n"
                        + b"W env read failed: nack\n")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    screen = out.rsplit("┏", 1)[-1]  # the last frame of the live view
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in screen.splitlines() if line.startswith("│")]
    first = case["records"][0]
    assert any(r[0] == "press-7" and r[1] == first["n"] and r[-1] == "verified" for r in rows), screen
    rejected = next(line for line in screen.splitlines() if line.startswith("rejected: "))
    assert "bad-mac 1" in rejected and rejected.count(" 1") == 2, rejected
    assert "W env read failed: nack" in screen and "I fieldnode 0.1.0" in screen
    assert case["key"] not in out + err


def test_sim_runs_a_real_board_definition_against_a_gateway(tmp_path):
    """`sim --board esp32-devkitc --gateway`: that board's sensors, emulated, reach a real gateway
    in frames it verifies with the keys sim provisioned."""
    keys = tmp_path / "keys.json"
    Keystore(keys, []).save()
    db = tmp_path / "gw.db"
    gateway = GatewayThread(Keystore.load(keys), db, ("127.0.0.1", 0), health_interval=0.2).start()
    try:
        host, port = gateway.address
        proc = subprocess.run([FIELDNODE, "sim", "--nodes", "1", "--board", "esp32-devkitc", "--gateway",
                               f"{host}:{port}", "--duration", "8", "--dir", str(tmp_path / "sim"),
                               "--keys", str(keys)], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("  port /dev/pts/") == 1
        deadline = time.monotonic() + 5
        names: set[str] = set()
        while time.monotonic() < deadline and not names:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                names = {n for (n,) in conn.execute("SELECT DISTINCT name FROM readings")}
            time.sleep(0.2)
    finally:
        gateway.stop()
    from fieldnode.node.boards import load_board
    board = load_board("esp32-devkitc")
    expected = {s["name"] for s in board["sensors"]}
    assert {n.split(".")[0] for n in names} >= expected, (names, proc.stderr[-2000:])


def test_monitor_live_view_shows_the_heap_from_boot_and_health_frames(tmp_path):
    from rich.console import Console

    from fieldnode.wire.frame import KIND_BOOT, Verifier
    from fieldnode.ui.liveview import LiveState

    nodes = Nodes(tmp_path / "keys.json", n=1)
    verify = Verifier(nodes.keystore().lookup).verify

    def heap(free: int, low: int, block: int) -> list[dict]:
        return [{"n": "heap.free", "u": "B", "v": free}, {"n": "heap.low", "u": "B", "v": low},
                {"n": "heap.block", "u": "B", "v": block}]

    state = LiveState({nodes.devices[0].hex(): "press-7"})
    boot = [{"n": "fw", "vs": "0.1.0"}] + heap(90000, 90000, 40000)
    state.add_frame(verify(nodes.frame(0, kind=KIND_BOOT, records=boot)))
    for free in (81920, 80896):  # two health frames
        state.add_frame(verify(nodes.frame(0, records=heap(free, 70656, 30720))))
    console = Console(width=160, record=True)
    console.print(state.render())
    text = console.export_text()
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                         for line in text.splitlines() if line.startswith("│"))}
    assert [rows[n][2:4] for n in ("heap.free", "heap.low", "heap.block")] == [["80896", "B"], ["70656", "B"],
                                                                             ["30720", "B"]]
    assert "press-7 boot: fw=0.1.0 heap.free=90000 heap.low=90000 heap.block=40000" in text

"""Gateway failover with the real firmware (docs/firmware.md, "Failover"): virtual nodes provisioned
with `provision --gateway A --gateway B` move to B when A stops answering, come back to A after
failback_s, and keep every frame meanwhile; on one PostgreSQL database a gateway killed with
SIGKILL under load loses nothing and stores nothing twice."""
from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from fieldnode.cli.main import main
from fieldnode.gateway import GatewayThread
from fieldnode.infra.paths import BOARDS_DIR
from fieldnode.node.devicelink import DeviceLink
from fieldnode.node.keystore import Keystore
from fieldnode.sim.fleet import devices_for_board, install_app, sim_unique_id
from fieldnode.sim.vnode import VirtualNode
from support.nodesite import console_counters, wait_for
from support.ports import claimed_port
from support.proclines import ProcessLines, stop_process

CLI = [sys.executable, "-m", "fieldnode.cli"]
# Shrunk for the tests: one unanswered transmission (2-3 s, RFC 7252's first timeout) moves a node.
FAST = {"failover_after": 1, "failback_s": 4, "uplink_backoff_max_s": 1}


@pytest.fixture
def keys(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")  # read by `fieldnode provision --wifi`
    path = tmp_path / "keys.json"
    Keystore(path, []).save()
    return path


def start_node(stack: ExitStack, tmp: Path, keys: Path, index: int, gateways: list[int], run: bool = True,
               **board_changes) -> VirtualNode:
    """A virtual node provisioned by `fieldnode provision` with these gateways (ports on 127.0.0.1),
    in this order of preference; returns once it has printed its first frame (run), or left in
    its REPL (provision --no-reset: run() starts it)."""
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    for sensor in doc["sensors"]:
        sensor["period_s"] = 1
    doc.update(FAST, **board_changes)
    board = tmp / f"board{index}.json"
    board.write_text(json.dumps(doc))
    node_dir = tmp / f"node{index}"
    install_app(node_dir / "flash", board)
    node = VirtualNode(node_dir, sim_unique_id(index, 0x7A), board=board, devices=devices_for_board(doc))
    stack.callback(node.stop)
    node.start()
    node.wait_output(b"not sending", timeout=30)
    mark = node.output_mark()
    argv = ["provision", "--port", node.port, "--keys", str(keys), "--name", f"failover-{index}",
            "--wifi", "plant-floor"]
    for port in gateways:
        argv += ["--gateway", f"127.0.0.1:{port}"]
    assert main(argv + ([] if run else ["--no-reset"])) == 0
    if run:
        node.wait_output(b"FN1 ", timeout=30, since=mark)
    return node


def run(node: VirtualNode) -> None:
    """Starts the application of a node left in its REPL; returns once it has printed a frame."""
    mark = node.output_mark()
    with DeviceLink(node.port) as link:
        link.reset()
    node.wait_output(b"FN1 ", timeout=30, since=mark)


def stored(dsn: str, node: VirtualNode) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [c for (c,) in conn.execute("SELECT counter FROM frames WHERE device=%s ORDER BY counter",
                                           (node.unique_id.hex(),))]


def failover_events(dsn: str, node: VirtualNode) -> list[tuple[int, float]]:
    """(counter, gateway index) of the node's stored uplink.failover events, in counter order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT f.counter, g.value FROM frames f "
            "JOIN samples e ON e.frame_id = f.id JOIN series es ON es.id = e.series AND es.name = 'event' "
            "JOIN samples g ON g.frame_id = f.id JOIN series gs ON gs.id = g.series AND gs.name = 'gateway' "
            "WHERE f.device = %s AND e.string = 'uplink.failover' ORDER BY f.counter",
            (node.unique_id.hex(),)).fetchall()


def sent(node: VirtualNode) -> list[int]:
    """Every counter the node has printed on its console (each frame it made), in order."""
    return console_counters(node)


def accepted(gt: GatewayThread) -> int:
    return gt.call(lambda: gt.gateway.counts.get("accepted", 0))


def test_a_node_moves_to_its_second_gateway_when_the_first_is_silent_and_comes_back_to_it(pg_db, keys, tmp_path):
    with ExitStack() as stack:
        port_a = stack.enter_context(claimed_port())  # nothing listens there yet
        port_b = stack.enter_context(claimed_port())
        b = stack.enter_context(GatewayThread(Keystore.load(keys), pg_db, ("127.0.0.1", port_b), health_interval=0.2))
        node = start_node(stack, tmp_path, keys, 1, [port_a, port_b])
        # (1) The first gateway never answers: the node's frames arrive at the second, and the
        # event that says so with them, once the second has taken a frame.
        events = wait_for(lambda: failover_events(pg_db.dsn, node), 60, "the failover event at the second gateway")
        assert [g for _, g in events] == [1.0]
        node.wait_output(b"W uplink.failover 0", timeout=5)  # said on the console too
        wait_for(lambda: len(sent(node)) >= events[0][0] + 10, 60, "more frames")
        made = sent(node)
        wait_for(lambda: set(made) <= set(stored(pg_db.dsn, node)), 60, "every frame made so far at the second")
        assert made == list(range(1, len(made) + 1))  # counters in order: the node made each once
        # (2) The first gateway comes back: after failback_s the node tries it again and stays.
        a = stack.enter_context(GatewayThread(Keystore.load(keys), pg_db, ("127.0.0.1", port_a), health_interval=0.2))
        wait_for(lambda: [g for _, g in failover_events(pg_db.dsn, node)] == [1.0, 0.0], 60,
                 "the event of the return to the first gateway")
        back = failover_events(pg_db.dsn, node)[1][0]
        taken_by_b = accepted(b)
        wait_for(lambda: accepted(a) >= 10, 60, "frames at the first gateway")
        assert accepted(b) == taken_by_b  # it stays with the preferred one
        made = sent(node)
        wait_for(lambda: set(made) <= set(stored(pg_db.dsn, node)), 60, "every frame made so far")
        assert back < made[-1]
        # Nothing lost, nothing twice: each counter the node made is stored, once (the two gateways
        # answered for the same database, each frame in one of them).
        assert stored(pg_db.dsn, node)[:len(made)] == made


def start_cli_gateway(stack: ExitStack, keys: Path, dsn: str, port: int) -> ProcessLines:
    proc = subprocess.Popen(CLI + ["gateway", "--listen", f"127.0.0.1:{port}", "--db", dsn, "--keys", str(keys),
                                   "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.callback(stop_process, proc)
    lines = ProcessLines(proc)
    assert lines.until("stdout", lambda ls: any("listening on" in line for line in ls), 60), lines.lines
    return lines


def test_a_gateway_killed_under_load_moves_its_real_nodes_and_each_counter_is_stored_once(pg_db, keys, tmp_path):
    """Two gateway processes on one PostgreSQL database, virtual nodes preferring one or the other;
    kill -9 of one while they send: its nodes move to the other, which answers 2.03 for what the
    dead one committed but never acknowledged. Every counter each node made is stored, once."""
    with ExitStack() as stack:
        port_a = stack.enter_context(claimed_port())
        port_b = stack.enter_context(claimed_port())
        # Provisioned first (a gateway refuses an empty keystore), started once the gateways listen.
        nodes = [start_node(stack, tmp_path, keys, i, [port_a, port_b] if i % 2 else [port_b, port_a],
                            run=False, failover_after=2, failback_s=3600)
                 for i in (1, 2, 3)]
        lines_a = start_cli_gateway(stack, keys, pg_db.dsn, port_a)
        start_cli_gateway(stack, keys, pg_db.dsn, port_b)
        for node in nodes:
            run(node)
        for node in nodes:
            wait_for(lambda node=node: len(stored(pg_db.dsn, node)) >= 15, 90, "frames stored before the kill")
        assert [failover_events(pg_db.dsn, node) for node in nodes] == [[], [], []]  # each on its first
        lines_a.proc.kill()  # SIGKILL: no drain, no last commit, no answer to what is in flight
        lines_a.proc.wait(30)
        for node in nodes[::2]:  # nodes 1 and 3 preferred the dead one
            wait_for(lambda node=node: [g for _, g in failover_events(pg_db.dsn, node)] == [1.0], 90,
                     "the failover event of a node of the killed gateway")
        assert failover_events(pg_db.dsn, nodes[1]) == []  # the other gateway's node never moved
        for node in nodes:
            made = sent(node)
            wait_for(lambda node=node, made=made: set(made) <= set(stored(pg_db.dsn, node)), 120,
                     "every counter the node made")
            assert made == list(range(1, len(made) + 1))
            assert stored(pg_db.dsn, node)[:len(made)] == made  # each once, none missing


def settings_blob(node: VirtualNode) -> dict[str, str]:
    """The node's settings as its NVS holds them (fnode.config: version 1, then length-prefixed
    fields in FIELDS order)."""
    entry = node.nvs().get("fieldnode", {}).get("cfg")
    if entry is None:
        return {}
    blob, out, i = bytes.fromhex(entry[1]), {}, 1
    for field in ("name", "gw", "ssid", "wpass", "gws"):
        if i >= len(blob):
            break
        n = blob[i]
        if n:
            out[field] = blob[i + 1:i + 1 + n].decode()
        i += 1 + n
    return out


def _unprovisioned_node(stack: ExitStack, tmp_path: Path, index: int, **kwargs) -> VirtualNode:
    """A virtual node with the application installed, waiting to be provisioned."""
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    install_app(tmp_path / "node" / "flash", BOARDS_DIR / "virtual.json")
    node = VirtualNode(tmp_path / "node", sim_unique_id(index, 0x7A), board="virtual", devices=devices_for_board(doc),
                       **kwargs)
    stack.callback(node.stop)
    node.start()
    node.wait_output(b"not sending", timeout=30)
    return node


def test_provision_stores_the_gateways_in_order_and_a_bad_one_writes_nothing(keys, tmp_path, capsys):
    with ExitStack() as stack:
        node = _unprovisioned_node(stack, tmp_path, 9)
        base = ["provision", "--port", node.port, "--keys", str(keys), "--no-reset"]
        before = node.nvs(), keys.read_bytes()
        capsys.readouterr()
        assert main(base + ["--gateway", "10.0.0.5:5683", "--gateway", "gw.local:abc"]) == 2
        (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert line.startswith("error: --gateway 'gw.local:abc': 'abc' is not a port 0-65535 (give HOST:PORT")
        assert (node.nvs(), keys.read_bytes()) == before  # no node touched, nothing recorded
        assert main(base + ["--gateway", "10.0.0.5", "--gateway", "coap://gw-b.local:5700",
                            "--gateway", "10.0.0.7:5701"]) == 0
        assert settings_blob(node)["gw"] == "10.0.0.5:5683"
        assert settings_blob(node)["gws"] == "gw-b.local:5700,10.0.0.7:5701"
        # One gateway again: the node forgets the others, and sends to that one alone.
        assert main(base + ["--force", "--gateway", "10.0.0.9:5683"]) == 0
        assert "gws" not in settings_blob(node) and settings_blob(node)["gw"] == "10.0.0.9:5683"


def pack(*fields: str) -> bytes:
    """A "cfg" blob as fnode.provision.pack_settings writes it: version 1, then length-prefixed fields."""
    out = bytearray(b"\x01")
    for field in fields:
        out += bytes([len(field.encode())]) + field.encode()
    return bytes(out)


@pytest.mark.parametrize("blob, gateways, bad", [
    # Written by firmware from before failover: four fields, the blob ends before "gws". One
    # gateway: the node does not load fnode.failover.
    (pack("pump-3", "10.0.0.2:5683", "plant-floor", "pw"), [["10.0.0.2", 5683]], None),
    (pack("pump-3", "10.0.0.2", "plant-floor", "pw", "gw-b.local:5700,10.0.0.4:5701"),
     [["10.0.0.2", 5683], ["gw-b.local", 5700], ["10.0.0.4", 5701]], None),
    # A fallback written by hand that the node cannot use is left out; the others serve.
    (pack("pump-3", "10.0.0.2:5683", "plant-floor", "pw", "coap://10.0.0.3,10.0.0.4:5701"),
     [["10.0.0.2", 5683], ["10.0.0.4", 5701]], "coap://10.0.0.3"),
])
def test_the_node_reads_its_gateways_from_old_and_new_settings(micropython, tmp_path, blob, gateways, bad):
    """What app.make_uplink makes of the settings: the uplink's gateways, and whether the failover
    module was loaded (only for more than one gateway)."""
    from fieldnode.infra.paths import SIMHAL_DIR
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "sim.json").write_text(json.dumps({"unique_id": "240ac4a1b2c3", "devices": []}))
    (node_dir / "nvs.json").write_text(json.dumps({"fieldnode": {"cfg": ["blob", blob.hex()]}}))
    code = ("import json, sys\nfrom fnode.config import Config\nfrom fnode.app import make_uplink\n"
            "from fnode.wifi import Link\nc = Config()\n"
            "up, spool = make_uplink({'failover_after': 2}, c, c.gateway(), Link('plant-floor', 'pw'))\n"
            "print(json.dumps([getattr(up, 'gateways', [up.gateway]), getattr(up, 'failover_after', None),"
            " 'fnode.failover' in sys.modules]))\n")
    out = micropython.run(code, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node_dir)})
    several = len(gateways) > 1 or bad is not None
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [gateways, 2 if several else None, several]
    assert (f"E gateway setting {bad!r} is not HOST:PORT; left out" in out.stdout) == (bad is not None)


def test_provision_refuses_several_gateways_for_an_application_before_failover_and_writes_nothing(
        keys, tmp_path, capsys):
    """Such an application would store "A,B" as one gateway it cannot use. One gateway it takes
    as before: the call the host makes for one is the one it always made."""
    import shutil
    from fieldnode.infra.paths import FIRMWARE_LIB_DIR
    old = tmp_path / "old-lib"
    shutil.copytree(FIRMWARE_LIB_DIR, old)
    provision_py = old / "fnode" / "provision.py"
    source = provision_py.read_text()
    assert "\nFAILOVER = True\n" in source
    provision_py.write_text(source.replace("\nFAILOVER = True\n", "\n"))
    with ExitStack() as stack:
        node = _unprovisioned_node(stack, tmp_path, 8, firmware_lib=old)
        base = ["provision", "--port", node.port, "--keys", str(keys), "--no-reset"]
        before = node.nvs(), keys.read_bytes()
        capsys.readouterr()
        assert main(base + ["--gateway", "10.0.0.5", "--gateway", "10.0.0.6"]) == 1
        said = " ".join((lambda c: c.out + c.err)(capsys.readouterr()).split())
        assert "predates gateway failover" in said and "fieldnode flash --app-only" in said, said
        assert (node.nvs(), keys.read_bytes()) == before
        assert main(base + ["--gateway", "10.0.0.5"]) == 0
        assert settings_blob(node)["gw"] == "10.0.0.5:5683" and "gws" not in settings_blob(node)

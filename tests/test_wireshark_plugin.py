"""The Wireshark plugin shipped with the package, run by Debian's tshark on a capture made here of
a client and the real gateway: our fields appear in `tshark -T json`, the payload goes to
Wireshark's COSE dissector too, and every frame says its MAC is not verified (and where it is)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dpkt
import pytest

from fieldnode.gateway import GatewayThread, enqueue_command
from fieldnode.wire import coap
from fieldnode.wire.frame import device_base_name
from support.gateway_peers import Client, Nodes
from support.tcpdump import Tcpdump

CLI = [sys.executable, "-m", "fieldnode.cli"]
RECORDS = [{"n": "temp", "u": "Cel", "v": 23.5}, {"n": "door", "vb": True}, {"n": "fw", "vs": "1.2"},
           {"n": "loop1", "u": "A", "err": "broken-loop"}]


def values(tree, key: str) -> list:
    """Every value of key anywhere in tshark's JSON (repeated keys come as lists)."""
    found = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                found.extend(v if isinstance(v, list) else [v])
            else:
                found.extend(values(v, key))
    elif isinstance(tree, list):
        for v in tree:
            found.extend(values(v, key))
    return found


@pytest.fixture
def capture(tmp_path) -> tuple[Path, Nodes, int]:
    """A telemetry frame with every kind of record, and a frame whose answer carries a command."""
    nodes = Nodes(tmp_path / "keys.json", n=1)
    pcap = tmp_path / "plugin.pcap"
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2) as gt:
        dump = Tcpdump(pcap, [gt.address[1]])
        client = Client(gt.address)
        assert client.post(nodes.frame(0, records=RECORDS)).code == coap.CHANGED
        expires = time.time() + 600
        enqueue_command(gt.gateway.db_path, nodes.devices[0], nodes.command(0, 7, expires), expires)
        assert client.post(nodes.frame(0)).content_format == coap.CONTENT_FORMAT_COSE_MAC0
        client.close()
        dump.stop()
        return pcap, nodes, gt.address[1]


def tshark_json(pcap: Path, env: dict[str, str], *extra: str) -> list[dict]:
    tshark = shutil.which("tshark")
    if not tshark:
        pytest.fail("tshark is missing: run scripts/install-system-deps (make does)")
    proc = subprocess.run([tshark, "-r", str(pcap), *extra, "-T", "json",
                           "--no-duplicate-keys"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "Lua" not in proc.stderr, proc.stderr
    return [p["_source"]["layers"] for p in json.loads(proc.stdout)]


def test_installed_plugin_names_kind_key_id_counter_and_records(capture, tmp_path):
    pcap, nodes, port = capture
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([*CLI, "wireshark", "--install"], capture_output=True, text=True, timeout=60, env=env)
    installed = tmp_path / "home" / ".local" / "lib" / "wireshark" / "plugins" / "fieldnode.lua"
    assert proc.returncode == 0 and str(installed) in proc.stdout, proc.stderr
    layers = tshark_json(pcap, env, "-o", f"fieldnode.port:{port}")
    ours = [layer for layer in layers if "fieldnode" in layer]
    assert len(ours) == 3  # two frames to the gateway and the command in the second answer
    telemetry, _second, command = (layer["fieldnode"] for layer in ours)
    device = ":".join(f"{b:02x}" for b in nodes.devices[0])
    assert values(telemetry, "fieldnode.kind") == ["0"] and values(telemetry, "fieldnode.counter") == ["1"]
    assert values(telemetry, "fieldnode.device") == [device]
    assert values(telemetry, "fieldnode.key_generation") == ["1"]
    assert values(telemetry, "fieldnode.record.name") == ["temp", "door", "fw", "loop1"]
    assert values(telemetry, "fieldnode.record.value") == ["23.5"]
    assert values(telemetry, "fieldnode.record.bool") == ["true"]
    assert values(telemetry, "fieldnode.record.string") == ["1.2"]
    assert values(telemetry, "fieldnode.record.error") == ["broken-loop"]
    assert values(telemetry, "fieldnode.record.unit") == ["Cel", "A"]
    assert values(telemetry, "fieldnode.bn") == [device_base_name(nodes.devices[0])]
    (note,) = values(telemetry, "fieldnode.verification")
    assert "not verified" in note and "fieldnode decode" in note
    assert values(command, "fieldnode.kind") == ["3"] and values(command, "fieldnode.counter") == ["7"]
    assert values(command, "fieldnode.record.name") == ["relay1", "exp"]
    # Wireshark's own COSE dissector got the payload as well.
    assert values(ours[0], "cose.msg.mac_tag") and values(ours[0], "cose.kid") == [device + ":00:01"]


def test_the_shipped_plugin_loads_once_with_lua_script(capture, tmp_path):
    pcap, _nodes, port = capture
    env = {**os.environ, "HOME": str(tmp_path / "empty-home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    path = subprocess.run([*CLI, "wireshark", "--path"], capture_output=True, text=True, timeout=60,
                          env=env).stdout.strip()
    assert Path(path).is_file()
    without = tshark_json(pcap, env, "-d", f"udp.port=={port},coap")  # CoAP, no plugin: nothing of ours
    assert any("coap" in layer for layer in without) and not any("fieldnode" in layer for layer in without)
    layers = tshark_json(pcap, env, "-X", f"lua_script:{path}", "-o", f"fieldnode.port:{port}")
    assert [values(layer, "fieldnode.kind") for layer in layers if "fieldnode" in layer] == [["0"], ["0"], ["3"]]


def test_a_malformed_payload_is_marked_and_the_rest_still_decoded(tmp_path):
    # Content-Format 17 with bytes that are not a frame (cut CBOR, not tag 17), then a good frame:
    # the plugin marks the first two malformed, raises no Lua error, and decodes the third.
    nodes = Nodes(tmp_path / "keys.json", n=1)
    client = Client(("127.0.0.1", 9))
    payloads = [b"\xd1\x84\x58", b"\xa1\x01\x02", nodes.frame(0)]
    pcap = tmp_path / "odd.pcap"
    with pcap.open("wb") as f:
        writer = dpkt.pcap.Writer(f)
        for i, payload in enumerate(payloads):
            udp = dpkt.udp.UDP(sport=40000, dport=5683, data=client.request(payload, mid=i))
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.23"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
            ip.len = len(ip)
            packet = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(packet), ts=1_764_057_600 + i)
    client.close()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    path = subprocess.run([*CLI, "wireshark", "--path"], capture_output=True, text=True, timeout=60,
                          env=env).stdout.strip()
    layers = tshark_json(pcap, env, "-X", f"lua_script:{path}")  # the default port, 5683
    ours = [layer.get("fieldnode", {}) for layer in layers]
    assert [bool(values(x, "fieldnode.malformed")) for x in ours] == [True, True, False]
    assert values(ours[2], "fieldnode.counter") == ["1"]


def test_install_twice_and_mistakes_are_one_line(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, "wireshark", *args], capture_output=True, text=True, timeout=60, env=env)

    plugins = tmp_path / "plugins"
    first, again = run("--install", "--dir", str(plugins)), run("--install", "--dir", str(plugins))
    assert first.stdout.startswith(f"installed: {plugins / 'fieldnode.lua'}")
    assert again.stdout.startswith("already installed, unchanged")
    assert oct((plugins / "fieldnode.lua").stat().st_mode & 0o777) == "0o644"
    shown = run()
    assert shown.returncode == 0 and "--install" in shown.stdout and "fieldnode decode" in shown.stdout
    (tmp_path / "file").write_text("")
    for args, expected in ((["--dir", str(plugins)], "--dir goes with --install"),
                           (["--install", "--dir", str(tmp_path / "file" / "sub")],
                            "cannot install the Wireshark plugin into")):
        proc = run(*args)
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_frame_format_v2_shows_its_declaration_id_and_short_names(tmp_path):
    from fieldnode.node.keystore import make_kid
    from fieldnode.wire.framev2 import Reading, build_declaration, build_telemetry_v2

    nodes = Nodes(tmp_path / "keys.json", n=1)
    key, kid = nodes.keys[nodes.devices[0]], make_kid(nodes.devices[0], 1)
    decl, did = build_declaration(key, kid, 4, 1, [Reading("a", "temp", "Cel", "env")])
    pcap = tmp_path / "v2.pcap"
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2) as gt:
        dump = Tcpdump(pcap, [gt.address[1]])
        client = Client(gt.address)
        assert client.post(decl).code == coap.CHANGED
        assert client.post(build_telemetry_v2(key, kid, 4, 2, did, 1764057600, [{"n": "a", "v": 21.5}])).code \
            == coap.CHANGED
        client.close()
        dump.stop()
        port = gt.address[1]
    env = {**os.environ, "HOME": str(tmp_path / "empty-home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    path = subprocess.run([*CLI, "wireshark", "--path"], capture_output=True, text=True, timeout=60,
                          env=env).stdout.strip()
    layers = [layer["fieldnode"] for layer in tshark_json(pcap, env, "-X", f"lua_script:{path}", "-o",
                                                         f"fieldnode.port:{port}") if "fieldnode" in layer]
    declaration, telemetry = layers
    assert values(declaration, "fieldnode.kind") == ["5"]
    assert values(telemetry, "fieldnode.declaration") == [":".join(f"{b:02x}" for b in did)]
    assert values(telemetry, "fieldnode.record.name") == ["a"]
    assert values(telemetry, "fieldnode.record.value") == ["21.5"]

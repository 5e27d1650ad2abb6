"""`fieldnode decode` on network captures: real captures, made with Debian's tcpdump on loopback, of
virtual nodes (the real firmware) and bare CoAP clients talking to the real gateway; every frame the
gateway stored is found once and verified, retransmissions and answers are matched; damaged
captures give a clear line and the reading goes on."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dpkt
import pytest

from fieldnode.cli.main import main
from fieldnode.gateway import GatewayThread, enqueue_command
from fieldnode.node.commanding import build_command
from fieldnode.node.keystore import Keystore
from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_ACK
from support.gateway_peers import Client, Nodes
from support.nodesite import Site, wait_for
from support.tcpdump import Tcpdump

CLI = [sys.executable, "-m", "fieldnode.cli"]


def decode(capsys, *args: str) -> tuple[int, list[dict]]:
    status = main(["decode", *args, "--json"])
    out = capsys.readouterr().out
    return status, [json.loads(line) for line in out.splitlines()]


def by_role(objs: list[dict], role: str) -> list[dict]:
    return [o for o in objs if o.get("role") == role]


def answers_by_request(objs: list[dict]) -> dict[int, dict]:
    return {o["first"]: o for o in by_role(objs, "answer")}


# -- virtual nodes and the gateway --------------------------------------------------------------

def test_every_stored_frame_is_in_the_capture_once_verified_with_retransmissions_and_answers_matched(
        tmp_path, capsys):
    site = Site(tmp_path)
    pcap = tmp_path / "site.pcap"
    try:
        port = site.gateway.address[1]
        dump = Tcpdump(pcap, [port])
        nodes = [site.node(1), site.node(2)]
        for node in nodes:
            wait_for(lambda n=node: len(site.frames(n)) >= 3, 30, "frames from each node")
        gw = site.gateway.gateway
        # The gateway holds its answers past the node's first ACK timeout (2-3 s): the node sends
        # the same message again, and the one answer that comes answers both.
        gw.batch_delay = 3.5
        wait_for(lambda: gw.counts.get("retransmission", 0) >= 1, 20, "a retransmission")
        gw.batch_delay = 0.002
        # A command rides back on the answer to the node's next frame; the node acks it.
        entry = Keystore.load(site.keys).current(nodes[0].unique_id)
        command, expires = build_command(entry, 1, [("relay1", True)], ttl_s=600)
        enqueue_command(site.db, entry.device, command, expires)
        wait_for(lambda: any(k == KIND_ACK for _, k, _ in site.frames(nodes[0])), 30, "the node's ack")
        for node in nodes:
            node.stop()
        dump.stop()
        stored = {(node.unique_id.hex(), c) for node in nodes for c, _, _ in site.frames(node)}
    finally:
        site.close()

    status, objs = decode(capsys, str(pcap), "--keys", str(site.keys), "--port", str(port))
    assert status == 0
    requests = by_role(objs, "request")
    verified = [(o["frame"]["device"], o["frame"]["counter"]) for o in requests if o.get("verdict") == "verified"]
    assert sorted(verified) == sorted(stored)  # every stored frame, each once
    assert all(o["frame"]["verified"] for o in requests if o.get("verdict") == "verified")
    numbers = {o["number"]: o for o in objs if o["record"] == "datagram"}
    retransmissions = by_role(objs, "retransmission")
    assert retransmissions
    for again in retransmissions:
        first = numbers[again["first"]]
        assert (first["role"], first["coap"]["mid"], first["src"]) == ("request", again["coap"]["mid"], again["src"])
    answers = answers_by_request(objs)
    for request in requests:
        answer = answers[request["number"]]  # every request answered, matched by message id
        assert answer["coap"]["mid"] == request["coap"]["mid"] and answer["dst"] == request["src"]
        assert answer["coap"]["code"] == {"verified": "2.04", "duplicate": "2.03"}[request["verdict"]]
        assert answer["number"] > request["number"]  # after its request in the capture
    # The answers to the retransmitted requests came after the gateway's hold.
    assert any(answers[again["first"]]["answer_after_s"] > 2 for again in retransmissions)
    (carrier,) = [o for o in by_role(objs, "answer") if "command" in o]
    assert carrier["verdict"] == "verified"
    assert (carrier["command"]["kind"], carrier["command"]["counter"]) == ("command", 1)
    assert carrier["command"]["device"] == nodes[0].unique_id.hex()
    # ... and the node's signed ack of it, later in the capture, answers command counter 1.
    acks = [o["frame"] for o in requests if o.get("verdict") == "verified" and o["frame"]["kind"] == "ack"]
    assert [r["v"] for a in acks for r in a["records"] if r["n"] == "ack"] == [1]
    summary = objs[-1]
    assert summary["record"] == "summary"
    assert summary["retransmissions"] == len(retransmissions)
    assert summary["unanswered"] == 0 and summary["capture_problems"] == 0
    assert {d: v["frames"] for d, v in summary["frames_per_node"].items()} == {
        n.unique_id.hex(): len([s for s in stored if s[0] == n.unique_id.hex()]) for n in nodes}
    assert summary["answers"]["2.04"] == len(verified) and summary["commands"] == 1
    assert summary["answer_time_s"]["count"] == len(requests)


# -- bare CoAP clients over IPv6: duplicates, replays, refusals, silence -------------------------

class Client6(Client):
    def __init__(self, addr: tuple[str, int]) -> None:  # not super().__init__(): it binds IPv4
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind(("::1", 0))
        self.sock.settimeout(5)
        self.mid = 100


@pytest.fixture
def gateway6(tmp_path):
    nodes = Nodes(tmp_path / "keys.json", n=2)
    gt = GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("::1", 0), health_interval=0.2).start()
    yield gt, nodes
    gt.stop()


def test_ipv6_capture_names_duplicates_replays_refusals_and_silent_nodes(tmp_path, gateway6):
    gt, nodes = gateway6
    port = gt.address[1]
    pcap = tmp_path / "v6.pcap"
    dump = Tcpdump(pcap, [port], interface="any")  # as the field guide says on a gateway host
    client = Client6(gt.address)
    quiet = nodes.frame(1)
    assert client.post(quiet).code == coap.CHANGED  # node-2 speaks once, then falls silent
    first = nodes.frame(0)
    sent = client.request(first)
    assert client.exchange(sent).code == coap.CHANGED
    assert client.exchange(sent).code == coap.CHANGED  # the ACK "lost": the same message again
    assert client.post(first).code == coap.VALID  # the same frame in a new message
    replay = nodes.frame(0, counter=1, records=[{"n": "temp", "v": 99}])
    assert client.post(replay).payload == b"replay"
    tampered = bytearray(nodes.frame(0))
    tampered[-12] ^= 1
    assert client.post(bytes(tampered)).payload == b"bad-mac"
    time.sleep(1.5)
    assert client.post(nodes.frame(0)).code == coap.CHANGED
    dump.stop()
    client.close()

    proc = subprocess.run([*CLI, "decode", str(pcap), "--keys", str(nodes.path), "--port", str(port),
                           "--silent-after", "1"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 1, proc.stderr  # frames were refused
    lines = proc.stdout.splitlines()
    dev0, dev1 = (d.hex() for d in nodes.devices)
    assert any(f"[::1]:{port}" in line and "ok   node-1 (" + dev0 in line for line in lines)
    assert sum(" ok " in f" {line} " for line in lines) == 3
    (_retrans,) = [line for line in lines if "retransmission of #" in line]
    assert sum("answers #" in line and "again (retransmission)" in line for line in lines) == 1
    assert any("dup  node-1" in line and "the gateway answers 2.03" in line for line in lines)
    assert any("REJ  replay" in line for line in lines) and any("REJ  bad-mac" in line for line in lines), proc.stdout
    assert any("ACK 4.01 Unauthorized" in line and ": bad-mac" in line for line in lines)
    summary = lines[lines.index(next(x for x in lines if x.startswith("summary:"))):]
    text = "\n".join(summary)
    assert "node node-1 (" + dev0 + "): 2 frames verified" in text
    assert "node node-2 (" + dev1 + "): 1 frames verified" in text
    assert "retransmissions 1, duplicates 1 (frame sent again, answered 2.03), replays 1" in text
    assert "rejected by reason: bad-mac 1, replay 1" in text
    assert "2.03: 1, 2.04: 3, 4.00 replay: 1, 4.01 bad-mac: 1" in text
    assert "requests never answered 0" in text and "median" in text and "p99" in text
    silent_line = next(x for x in summary if x.strip().startswith("silent"))
    assert "node-2" in silent_line and "node-1" not in silent_line
    assert proc.stderr.count("\n") == sum("warning" in x for x in proc.stderr.splitlines())  # no traceback


# -- live: tcpdump -w - | fieldnode decode - ----------------------------------------------------

def test_a_live_capture_on_stdin_shows_each_frame_as_it_passes(tmp_path):
    nodes = Nodes(tmp_path / "keys.json", n=1)
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2) as gt:
        port = gt.address[1]
        dump = Tcpdump(None, [port], stdout=subprocess.PIPE)
        decoder = subprocess.Popen([*CLI, "decode", "-", "--keys", str(nodes.path), "--port", str(port)],
                                   stdin=dump.proc.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        dump.proc.stdout.close()  # the decoder holds the pipe now
        client = Client(gt.address)
        try:
            assert client.post(nodes.frame(0)).code == coap.CHANGED
            line = decoder.stdout.readline().decode()  # while tcpdump still runs: shown live
            assert " ok   node-1 (" in line and "#1 telemetry" in line
            assert "answers #1" in decoder.stdout.readline().decode()
            assert dump.proc.poll() is None
        finally:
            client.close()
            dump.stop()
        rest, err = decoder.communicate(timeout=30)
    assert decoder.returncode == 0, err
    assert b"node node-1 (" in rest and b"1 frames verified" in rest


# -- damaged and odd captures -------------------------------------------------------------------

@pytest.fixture
def small_capture(tmp_path) -> tuple[Path, Nodes, int]:
    """A real capture of three frames and their answers."""
    nodes = Nodes(tmp_path / "keys.json", n=1)
    pcap = tmp_path / "small.pcap"
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.2) as gt:
        dump = Tcpdump(pcap, [gt.address[1]])
        client = Client(gt.address)
        for _ in range(3):
            assert client.post(nodes.frame(0)).code == coap.CHANGED
        client.close()
        dump.stop()
        return pcap, nodes, gt.address[1]


def test_a_capture_cut_short_shows_what_it_holds_and_says_where_it_ends(small_capture, capsys):
    pcap, nodes, port = small_capture
    data = pcap.read_bytes()
    pcap.write_bytes(data[:-20])  # the last answer is cut in the middle
    status, objs = decode(capsys, str(pcap), "--keys", str(nodes.path), "--port", str(port))
    assert status == 1
    assert [o["frame"]["counter"] for o in by_role(objs, "request")] == [1, 2, 3]
    (problem,) = [o for o in objs if o["record"] == "problem"]
    assert problem["number"] == 6 and "cut short" in problem["detail"]
    assert objs[-1]["record"] == "summary" and objs[-1]["unanswered"] == 1
    # A flipped bit in a record header: the second packet claims 4 GB. Nothing is allocated for
    # it; the first packet is read, and the reading stops there with the reason.
    first_len = int.from_bytes(data[24 + 8:24 + 12], "little")
    second = 24 + 16 + first_len
    damaged = bytearray(data)
    damaged[second + 8:second + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    pcap.write_bytes(bytes(damaged))
    status, objs = decode(capsys, str(pcap), "--keys", str(nodes.path), "--port", str(port))
    assert status == 1 and [o["role"] for o in objs if o["record"] == "datagram"] == ["request"]
    assert objs[1]["number"] == 2 and "impossible length" in objs[1]["detail"]
    pcap.write_bytes(data[:10])  # inside the file header
    status, objs = decode(capsys, str(pcap), "--keys", str(nodes.path))
    assert status == 1 and "header is cut short" in objs[0]["detail"] and objs[-1]["datagrams"] == 0


def test_packets_cut_at_the_snap_length_are_named(small_capture, tmp_path, capsys):
    pcap, nodes, port = small_capture
    cut = tmp_path / "snap100.pcap"
    subprocess.run(["editcap", "-s", "100", str(pcap), str(cut)], check=True, capture_output=True)
    status, objs = decode(capsys, str(cut), "--keys", str(nodes.path), "--port", str(port))
    problems = [o for o in objs if o["record"] == "problem"]
    assert status == 1 and [p["number"] for p in problems] == [1, 3, 5]  # the three requests
    assert all("cut short" in p["detail"] and "tcpdump -s 0" in p["detail"] for p in problems)
    assert [o["role"] for o in objs if o["record"] == "datagram"] == ["unmatched-answer"] * 3


# Started as a shell without job control starts a command it puts in the background: with SIGINT
# ignored, which Python then leaves ignored unless the command turns Ctrl-C back on.
SIGINT_IGNORED = ["bash", "-c", "trap '' INT; exec \"$0\" \"$@\""]


@pytest.mark.parametrize("launch", [[], SIGINT_IGNORED], ids=["from-a-terminal", "with-sigint-ignored"])
def test_ctrl_c_on_a_live_capture_prints_the_summary(small_capture, launch):
    pcap, nodes, port = small_capture
    decoder = subprocess.Popen([*launch, *CLI, "decode", "-", "--keys", str(nodes.path), "--port", str(port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    safety_net = threading.Timer(120, decoder.kill)  # a decoder deaf to Ctrl-C fails the test, not the worker
    safety_net.start()
    try:
        decoder.stdin.write(pcap.read_bytes())  # the pipe stays open: a capture still running
        decoder.stdin.flush()
        for _ in range(6):  # three requests, three answers, each shown as it is read
            assert decoder.stdout.readline().startswith(b"#")
        decoder.send_signal(signal.SIGINT)
        rest = decoder.stdout.read().decode()
        decoder.stdin.close()
        assert decoder.wait(timeout=30) == 130
    finally:
        safety_net.cancel()
        if decoder.poll() is None:
            decoder.kill()
            decoder.wait()
    assert rest.startswith("summary: 6 CoAP datagrams") and "3 frames verified" in rest
    assert "Traceback" not in decoder.stderr.read().decode()


def test_pcapng_reads_as_pcap_does(small_capture, tmp_path, capsys):
    pcap, nodes, port = small_capture
    ng = tmp_path / "small.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(ng)], check=True, capture_output=True)
    assert ng.read_bytes()[:4] == bytes.fromhex("0a0d0d0a")
    _, from_pcap = decode(capsys, str(pcap), "--keys", str(nodes.path), "--port", str(port))
    status, from_ng = decode(capsys, str(ng), "--keys", str(nodes.path), "--port", str(port))
    assert status == 0 and from_ng == from_pcap and len(by_role(from_ng, "request")) == 3


def test_fragments_and_other_traffic_are_named_or_counted_and_the_rest_is_read(tmp_path, capsys):
    # A capture as a site network gives it, written with dpkt: a frame to the default port,
    # a UDP datagram in IPv4 and IPv6 fragments, DNS and TCP traffic.
    nodes = Nodes(tmp_path / "keys.json", n=1)
    frame = nodes.frame(0)
    request = Client(("127.0.0.1", 9)).request(frame, mid=7)
    packets = [_udp4(request, 40000, 5683), _udp4(b"dns?", 40001, 53), _tcp4(), _udp4(request, 40000, 5683)]
    big = _udp4(b"x" * 3000, 40002, 5683)
    ip = big.data
    raw = bytes(ip.data)
    for offset, more in ((0, 1), (1480, 0)):
        part = dpkt.ip.IP(src=ip.src, dst=ip.dst, p=17, id=99, mf=more, offset=offset,
                          data=raw[offset:offset + 1480])
        part.len = 20 + len(part.data)
        packets.insert(1, dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=part))
    frag6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "::1"), dst=socket.inet_pton(socket.AF_INET6, "::1"),
                         nxt=44, hlim=64, data=b"")
    frag_header = dpkt.ip6.IP6FragmentHeader(nxt=17, frag_off_resv_m=(185 << 3) | 0, id=5)
    frag6.data = bytes(frag_header) + b"y" * 64
    frag6.plen = len(frag6.data)
    packets.append(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP6, data=frag6))
    pcap = tmp_path / "site.pcap"
    with pcap.open("wb") as f:
        writer = dpkt.pcap.Writer(f)
        for i, pkt in enumerate(packets):
            writer.writepkt(bytes(pkt), ts=1_764_057_600 + i)
    status, objs = decode(capsys, str(pcap), "--keys", str(nodes.path))  # default port 5683
    problems = [o for o in objs if o["record"] == "problem"]
    assert [p["detail"].split(" (")[0] for p in problems] == ["IPv4 fragment", "IPv4 fragment", "IPv6 fragment"]
    assert all("not reassembled" in p["detail"] for p in problems)
    roles = [(o["role"], o.get("verdict")) for o in objs if o["record"] == "datagram"]
    assert roles == [("request", "verified"), ("retransmission", "verified")]
    assert objs[-1]["other_packets"] == 2 and objs[-1]["capture_problems"] == 3 and status == 1


def _udp4(payload: bytes, sport: int, dport: int) -> dpkt.ethernet.Ethernet:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.23"), dst=socket.inet_aton("10.0.0.1"), p=17, data=udp)
    ip.len = len(ip)
    return dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)


def _tcp4() -> dpkt.ethernet.Ethernet:
    tcp = dpkt.tcp.TCP(sport=50000, dport=1883, data=b"mqtt")
    ip = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"), p=6, data=tcp)
    ip.len = len(ip)
    return dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)


# -- mistakes on the command line ---------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--port", "0"], "is not a UDP port"),
    (["--port", "http"], "is not a UDP port"),
    (["--silent-after", "soon"], "is not a number of seconds"),
    (["--diag"], "--hex and --diag do not apply"),
])
def test_capture_option_mistakes_are_one_line(small_capture, args, expected):
    pcap, nodes, _ = small_capture
    proc = subprocess.run([*CLI, "decode", str(pcap), "--keys", str(nodes.path), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    errors = [x for x in proc.stderr.splitlines() if "error:" in x]  # argparse's usage lines aside
    assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_named_pcap_that_is_not_a_capture_is_one_line(tmp_path):
    nodes = Nodes(tmp_path / "keys.json", n=1)
    bogus = tmp_path / "site.pcap"
    bogus.write_text("<html>not a capture</html>\n")
    proc = subprocess.run([*CLI, "decode", str(bogus), "--keys", str(nodes.path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {bogus}: not a pcap or pcapng capture (it starts with 3c68746d; a capture starts with "
        "a1b2c3d4, d4c3b2a1 or 0a0d0d0a)"]
    text = tmp_path / "console.txt"  # a console capture with --port: the option does not apply
    text.write_text("boot\n")
    proc = subprocess.run([*CLI, "decode", str(text), "--keys", str(nodes.path), "--port", "5683"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and "apply to captures only" in proc.stderr and "Traceback" not in proc.stderr


"""A gateway setting the node cannot use (written by an older host tool, or by hand): the node
keeps sampling, spooling and printing signed frames, says what is wrong, stays reachable over
USB, and delivers what it spooled once provisioned again. The host refuses such a setting."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fieldnode.cli.main import main
from fieldnode.node.devicelink import DeviceLink
from fieldnode.infra.errors import FieldnodeError
from fieldnode.gateway import GatewayThread
from fieldnode.wire.hostport import parse_destination, parse_listen
from fieldnode.node.keystore import Keystore
from fieldnode.infra.paths import SIMHAL_DIR
from support.nodesite import Site, console_counters, console_since, wait_for

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")

# What `provision --gateway` wrote before it checked its input (issue 12).
BAD_SETTINGS = ["coap://127.0.0.1", "gw.local:abc", "10.0.0.5:99999", "10.0.0.5 5683"]


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.5:5683", ("10.0.0.5", 5683)),
    ("gw.local:6000", ("gw.local", 6000)),
    ("gw.local", ("gw.local", 5683)),
    ("coap://10.0.0.5", ("10.0.0.5", 5683)),
    ("coap://gw.local:6000/f", ("gw.local", 6000)),  # the URL the gateway prints at start
])
def test_a_destination_is_host_port_a_host_or_a_coap_url(text, expected):
    assert parse_destination(text, "--gateway") == expected


@pytest.mark.parametrize("text, why", [
    ("gw.local:abc", "'abc' is not a port 0-65535"),
    ("10.0.0.5:99999", "'99999' is not a port 0-65535"),
    ("10.0.0.5 5683", "contains a space"),
    ("coaps://10.0.0.5", "coaps:// is not spoken by nodes"),
    ("coap://10.0.0.5/readings", "nodes always post to /f"),
    ("[fd00::5]:5683", "IPv4 only"),
    ("fd00::5", "brackets"),
    ("gw_01:5683", "neither an IP address nor a host name"),
    ("10.0.0.5:0", "port 0"),
])
def test_a_bad_destination_is_refused_naming_the_input_and_a_form_that_works(text, why):
    with pytest.raises(FieldnodeError) as err:
        parse_destination(text, "--gateway")
    message = str(err.value)
    assert message.startswith(f"--gateway {text!r}: ") and why in message and "e.g. 10.0.0.5:5683" in message
    assert "\n" not in message


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0:5683", ("0.0.0.0", 5683)), ("5683", ("0.0.0.0", 5683)), (":5683", ("0.0.0.0", 5683)),
    ("[::1]:0", ("::1", 0)), ("127.0.0.1:7000", ("127.0.0.1", 7000)),
])
def test_a_listen_address_is_an_ip_of_this_machine_and_a_port(text, expected):
    assert parse_listen(text, "--udp") == expected


@pytest.mark.parametrize("text, why", [
    ("gw.local:5683", "not an IP address"), ("127.0.0.1:65536", "not a port 0-65535"),
    ("coap://0.0.0.0:5683", "not a URL"), ("::1:5683", "brackets"), ("127.0.0.1", "no port"),
])
def test_a_bad_listen_address_is_refused(text, why):
    with pytest.raises(FieldnodeError, match=why):
        parse_listen(text, "--udp")


def write_gateway_setting(link: DeviceLink, value: str) -> None:
    """Puts a raw gateway setting into the node's NVS, as an older `provision` did."""
    link.exec("from fnode.config import Config;from fnode.provision import pack_settings;c=Config();s=c.settings();"
              f"s['gw']={value!r};c.nvs.set_blob('cfg',pack_settings(s));c.nvs.commit()")


@pytest.mark.parametrize("bad", BAD_SETTINGS[:1])
def test_a_node_with_a_bad_gateway_setting_keeps_sampling_and_delivers_once_provisioned_again(tmp_path, capsys, bad):
    site = Site(tmp_path)
    try:
        node = site.node(1)
        boots = len(node.boots)
        mark = node.output_mark()
        with DeviceLink(node.port) as link:
            write_gateway_setting(link, bad)
            link.reset()
        node.wait_boots(boots + 1, timeout=30)
        # Frames of the boot before may still be printed after `mark` (the spool prints a frame once
        # answered or in flash): the new boot's frames are those after its first log line.
        booted_at = node.wait_output("I fieldnode ", since=mark)
        # Several telemetry frames after the boot frame and the event: the samplers run.
        counters = wait_for(lambda: (c := console_counters(node, booted_at)) and len(c) >= 5 and c, timeout=60,
                            what="frames on the console of the node with a bad gateway setting")
        text = console_since(node, mark)
        booted = text[text.rindex(b"I fieldnode "):]  # before it: the Ctrl-C that took the REPL above
        assert b"Traceback" not in booted and b"ValueError" not in booted
        assert f"gateway setting {bad!r} is not HOST:PORT".encode() in booted

        capture = tmp_path / "console.log"
        capture.write_bytes(text)
        capsys.readouterr()
        assert main(["decode", str(capture), "--json", "--keys", str(site.keys)]) == 0
        frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert all(f["status"] == "ok" for f in frames)
        events = [f for f in frames if f["kind"] == "event"]
        assert len(events) == 1 and "config.bad-gateway" in json.dumps(events[0]["records"])
        assert sum(f["kind"] == "telemetry" for f in frames) >= 3
        assert not {c for c, _, _ in site.frames(node)} & set(counters)  # nothing reached the gateway

        # The REPL answers (provision takes it), and with a good setting what was spooled arrives.
        host, port = site.gateway.address
        assert main(["provision", "--port", node.port, "--keys", str(site.keys), "--rotate",
                     "--gateway", f"coap://{host}:{port}/f"]) == 0
        site.wait_stored(node, counters, timeout=60)
    finally:
        site.close()


def test_the_node_reads_only_settings_it_can_use(micropython, tmp_path):
    # The firmware's own check, on the real MicroPython: what it accepts is what the host writes.
    out = micropython.eval_json(
        "import json\nfrom fnode.config import parse_gateway\nout = []\n"
        f"for gw in {BAD_SETTINGS + ['gw.local:', ':5683', '10.0.0.5:0', '[::1]:5683']!r}:\n"
        "    try:\n        out.append(list(parse_gateway(gw)))\n"
        "    except ValueError:\n        out.append(None)\n"
        "for gw in ('10.0.0.5:5683', 'gw.local', 'gw-1.site.example:6000'):\n"
        "    out.append(list(parse_gateway(gw)))\n"
        "print(json.dumps(out))", path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(tmp_path)})
    assert out == [None] * 8 + [["10.0.0.5", 5683], ["gw.local", 5683], ["gw-1.site.example", 6000]]


def test_sim_takes_the_gateways_url_and_its_nodes_reach_the_gateway(tmp_path):
    # `sim --gateway coap://...` was written to the nodes as it was: they stopped at boot and sim
    # printed a traceback after 20 s. Now the URL the gateway prints is a gateway address.
    keys = tmp_path / "keys.json"
    Keystore(keys, []).save()
    gateway = GatewayThread(Keystore.load(keys), tmp_path / "gw.db", ("127.0.0.1", 0)).start()
    host, port = gateway.address
    proc = subprocess.Popen([FIELDNODE, "sim", "--nodes", "1", "--gateway", f"coap://{host}:{port}/f",
                             "--keys", str(keys), "--dir", str(tmp_path / "sim")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: gateway.gateway.counts.get("accepted", 0) >= 1 or proc.poll() is not None,
                 timeout=120, what="a frame from the simulated node at the gateway")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        gateway.stop()
    assert "Traceback" not in err, err

"""Every command with the mistakes people make with it: one clear line naming the input and what
to do, a non-zero exit status, never a traceback; and the interruptions (Ctrl-C, a closed pipe)
ending as command line tools end."""
from __future__ import annotations

import errno
import getpass
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fieldnode.cli.main as cli_main
from fieldnode.cli.main import main
from fieldnode.gateway.mqtt import MqttUrl, OutboxPublisher
from fieldnode.store.sqlite.shards import create_shards
from fieldnode.wire.hostport import parse_listen
from fieldnode.sim.esp_rom import EspRomEmulator
from fieldnode.testing.fake_firmware import fake_firmware
from support.gateway_peers import Nodes
from support.ctrl_c import press_ctrl_c_while_held
from support.ports import refusing_port
from support.nodesite import Site, wait_for

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """A keystore with nodes, a gateway database, a plain file, and a missing path; the default
    keystore and database point at missing files so no test reads the user's own."""
    monkeypatch.setenv("FIELDNODE_KEYS", str(tmp_path / "default-keys.json"))
    monkeypatch.setenv("FIELDNODE_DB", str(tmp_path / "default.db"))
    monkeypatch.delenv("FIELDNODE_WIFI_PASSWORD", raising=False)
    Nodes(tmp_path / "keys.json", n=2)
    (tmp_path / "file.txt").write_text("a plain file\n")
    return {"keys": tmp_path / "keys.json", "file": tmp_path / "file.txt", "missing": tmp_path / "missing.json",
            "tmp": tmp_path}


def one_clear_line(rc: int, err: str, expected: str) -> None:
    """Non-zero, no traceback, one error line holding `expected` (argparse's usage lines aside)."""
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert expected in errors[0], err


# (arguments, text the one error line must hold). {keys}, {file}, {missing}, {tmp}: from env.
MISTAKES = [
    (["provision", "--port", "/dev/ttyUSB-nope"], "/dev/ttyUSB-nope: no such serial port"),
    (["provision", "--port", "/dev/null", "--gateway", "gw.local:abc"],
     "--gateway 'gw.local:abc': 'abc' is not a port"),
    (["provision", "--port", "/dev/null", "--gateway", "10.0.0.5:99999"], "'99999' is not a port 0-65535"),
    (["provision", "--port", "/dev/null", "--gateway", "10.0.0.5 5683"], "contains a space"),
    (["provision", "--port", "/dev/null", "--force", "--rotate"], "exclude each other"),
    (["provision", "--port", "/dev/null", "--gateway", "10.0.0.5:5683", "--gateway", "gw.local:abc"],
     "--gateway 'gw.local:abc': 'abc' is not a port"),
    (["provision", "--port", "/dev/null", "--gateway", "10.0.0.5", "--gateway", "coap://10.0.0.5:5683"],
     "10.0.0.5:5683 is given twice"),
    (["sim", "--gateway", "gw.local:abc"], "--gateway 'gw.local:abc'"),
    (["sim", "--nodes", "0"], "--nodes must be at least 1"),
    (["sim", "--board", "nope", "--dir", "{tmp}/sim"], "unknown board 'nope'"),
    (["demo", "--nodes", "0", "--duration", "1"], "--nodes must be at least 1"),
    (["monitor", "--udp", "gw.local:5683", "--keys", "{keys}"], "not an IP address"),
    (["monitor", "--udp", "127.0.0.1:99999", "--keys", "{keys}"], "not a port 0-65535"),
    (["monitor", "--port", "/dev/ttyUSB-nope", "--keys", "{keys}"], "no such serial port"),
    (["gateway", "--listen", "10.0.0.5 5683", "--keys", "{keys}"], "contains a space"),
    (["gateway", "--mqtt", "http://broker", "--keys", "{keys}"], "mqtt://"),
    (["gateway", "--mqtt", "mqtt://bro ker:1883", "--keys", "{keys}"], "'bro ker' is neither an IP address"),
    (["keys", "--keys", "{keys}", "export", "{file}"], "exists: choose another file or pass --force"),
    (["keys", "--keys", "{keys}", "export", "{file}/gateway-keys.json"], "cannot write"),
    (["keys", "--keys", "{keys}", "export", "{tmp}/no-such-dir/gw-keys.json"],
     "the directory {tmp}/no-such-dir does not exist"),
    (["keys", "--keys", "{keys}", "revoke", "nobody"], "nobody: no such device id or node name"),
    (["decode", "{missing}", "--keys", "{keys}"], "no such file"),
    (["command", "node-1", "fan", "on", "--db", "{tmp}/gw.db", "--keys", "{keys}"], "no such database"),
    (["command", "nobody", "fan", "on", "--port", "/dev/null", "--keys", "{keys}"], "'nobody' is not in"),
    (["command", "node-1", "fan", "warm", "--port", "/dev/null", "--keys", "{keys}"], "use on/off"),
    (["command", "node-1", "fan", "on", "--ttl", "0", "--port", "/dev/null", "--keys", "{keys}"], "--ttl"),
    (["status", "--db", "{tmp}/gw.db"], "gw.db"),
    (["flash", "--port", "/dev/ttyUSB-nope", "--app-only"], "port /dev/ttyUSB-nope does not exist"),
    (["flash", "--port", "/dev/null", "--baud", "300"], "too slow"),
    (["board", "check", "no-such-board"], "no-such-board"),
    # The same mistyped keystore is the same message for every command that reads one.
    *[(argv + ["--keys", "{missing}"], "keystore {missing} does not exist") for argv in (
        ["monitor", "--udp", "127.0.0.1:0", "--duration", "3"], ["decode", "{file}"], ["gateway"], ["keys", "list"],
        ["command", "node-1", "fan", "on", "--port", "/dev/null"])],
    (["release", "--version", "two"], "version 'two': use numbers separated by dots"),
    (["release", "--version", "0.2.0", "--app-dir", "{missing}", "--db", "{tmp}/gw.db"],
     "application directory {missing} does not exist"),
    (["release", "--version", "1.30.0", "--firmware", "{file}", "--db", "{tmp}/gw.db"], "is not an ESP32 app image"),
    (["release", "--version", "1.30.0", "--firmware", "{missing}", "--db", "{tmp}/gw.db"], "cannot read {missing}"),
    (["update", "--all", "--keys", "{keys}", "--db", "{missing}"], "no gateway database at {missing}"),
    (["update", "--keys", "{keys}", "--db", "{file}"], "no release in"),
    (["update", "--all", "--canary", "-1", "--keys", "{keys}"], "--canary must be 0 or more"),
]


@pytest.mark.parametrize("argv, expected", MISTAKES, ids=[" ".join(a[:3]) for a, _ in MISTAKES])
def test_every_typical_mistake_is_one_clear_line_and_a_non_zero_exit(env, capsys, argv, expected):
    fill = {name: str(path) for name, path in env.items()}
    rc = main([a.format(**fill) for a in argv])
    out = capsys.readouterr()
    one_clear_line(rc, out.err, expected.format(**fill))


def test_provision_checks_the_port_before_asking_for_the_wifi_password(env, capsys, monkeypatch):
    def prompt(_text: str) -> str:
        raise AssertionError("asked for the password before checking the port")
    monkeypatch.setattr(getpass, "getpass", prompt)
    rc = main(["provision", "--port", "/dev/ttyUSB-nope", "--wifi", "plant-floor", "--keys", str(env["keys"])])
    one_clear_line(rc, capsys.readouterr().err, "no such serial port")


@pytest.mark.parametrize("where", ["no-such-dir/keys.json", "board1.json/keys.json"])
def test_provision_with_a_keystore_it_cannot_write_leaves_the_node_unchanged(tmp_path, capsys, where):
    site = Site(tmp_path)
    try:
        node = site.node(1)
        before = node.nvs()
        rc = main(["provision", "--port", node.port, "--keys", str(tmp_path / where), "--force"])
        one_clear_line(rc, capsys.readouterr().err, "no node was touched")
        assert node.nvs() == before
        assert not (tmp_path / "no-such-dir").exists()
    finally:
        site.close()


def test_keyboard_interrupt_while_the_commands_load_is_interrupted_and_130(capsys, monkeypatch):
    # Ctrl-C in the first moments lands in an import (esptool's is the slowest).
    real = cli_main.importlib.import_module

    def slow_import(name: str, *args):
        if name.endswith(".flash"):
            raise KeyboardInterrupt
        return real(name, *args)
    monkeypatch.setattr(cli_main.importlib, "import_module", slow_import)
    assert main(["board", "list"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_decode_into_a_pipe_closed_early_exits_quietly(tmp_path):
    nodes = Nodes(tmp_path / "keys.json", n=1)
    capture = tmp_path / "frames.txt"
    capture.write_text("".join(nodes.frame().hex() + "\n" for _ in range(3000)))
    proc = subprocess.Popen([FIELDNODE, "decode", "--hex", "--json", "--keys", str(nodes.path), str(capture)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = [json.loads(proc.stdout.readline()) for _ in range(2)]  # what `| head -2` reads
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert [f["status"] for f in first] == ["ok", "ok"]
    assert err == "", err


def test_monitor_on_a_port_another_program_holds_fails_before_drawing(env, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:  # as the gateway holds its port
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        rc = main(["monitor", "--udp", f"127.0.0.1:{port}", "--keys", str(env["keys"]), "--duration", "5"])
    out = capsys.readouterr()
    one_clear_line(rc, out.err, f"--udp 127.0.0.1:{port}: cannot listen there: Address already in use")
    assert out.out == ""  # no empty table drawn


def test_the_udp_monitor_listens_on_ipv6_too(env):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(parse_listen("[::1]:0", "--udp"))  # the parser's answer is bindable as it is


def test_command_over_usb_to_another_node_names_the_node_that_is_there(tmp_path, capsys):
    site = Site(tmp_path)
    try:
        control = {"actuators": [{"name": "fan", "driver": "pwm", "pin": 25, "freq": 25000, "failsafe": 1.0}],
                   "interlocks": [], "rules": []}
        site.node(1, **control)
        other = site.node(2, **control)
        before = other.outputs()
        capsys.readouterr()
        rc = main(["command", "e2e-1", "fan", "0.4", "--port", other.port, "--keys", str(site.keys),
                   "--timeout", "60"])
        one_clear_line(rc, capsys.readouterr().err,
                       f"{other.port} is node {other.unique_id.hex()} (e2e-2), not e2e-1: the command was not applied")
        assert other.outputs().get("pwm") == before.get("pwm")
    finally:
        site.close()


def test_gateway_says_on_its_console_that_the_broker_cannot_be_reached(env):
    with refusing_port() as broker:  # bound and held, never listening: it refuses
        proc = subprocess.Popen([FIELDNODE, "gateway", "--listen", "127.0.0.1:0",
                                 "--db", str(env["tmp"] / "gw.db"), "--keys", str(env["keys"]),
                                 "--mqtt", f"mqtt://127.0.0.1:{broker}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            wait_for(lambda: any("cannot connect" in line for line in lines), timeout=60,
                     what="the broker's failure on the gateway's console")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
            reader.join(10)
    (said,) = [line for line in lines if "cannot connect" in line]
    assert f"mqtt mqtt://127.0.0.1:{broker}" in said and "attempt 1" in said and "Connection refused" in said


def test_broker_failures_are_said_once_per_interval_and_the_reconnect_too(tmp_path, caplog, monkeypatch):
    create_shards(tmp_path / "gw.db", 1)
    with refusing_port() as port, caplog.at_level(logging.WARNING, logger="fieldnode.gateway.mqtt"):
        publisher = OutboxPublisher(tmp_path / "gw.db", MqttUrl.parse(f"mqtt://127.0.0.1:{port}"),
                                    client_id="t", retry=0.01)
        publisher.start()
        try:
            wait_for(lambda: publisher._failures >= 5, timeout=60, what="five failed attempts")
        finally:
            publisher.stop()
    said = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(said) == 1 and "attempt 1" in said[0]  # the next ones fall inside SAY_EVERY_S


def test_ctrl_c_during_flash_says_so_at_once_and_shows_each_port_in_the_table(tmp_path, capsys, monkeypatch):
    firmware = tmp_path / "ESP32_GENERIC-test.bin"
    firmware.write_bytes(fake_firmware("esp32", 256 * 1024))
    app = tmp_path / "app"
    (app / "lib").mkdir(parents=True)
    (app / "boot.py").write_text("\n")
    (app / "main.py").write_text("\n")
    # The first chip holds its first block's answer until the command has said it stops.
    roms = [EspRomEmulator("esp32", line_rate=True, hold_after_flash_bytes=1), EspRomEmulator("esp32", line_rate=True)]
    try:
        press_ctrl_c_while_held(monkeypatch, roms[0].held, roms[0].release, said="Ctrl-C: stopping")
        rc = main(["flash", "--firmware", str(firmware), "--app-dir", str(app), "--baud", "115200",
                   "--port", roms[0].port, "--port", roms[1].port])
        out = capsys.readouterr().out
    finally:
        for rom in roms:
            rom.close()
    assert rc == 130
    said = out.index("Ctrl-C: stopping")
    table = out.index("fieldnode flash")
    assert said < table
    for rom in roms:
        assert rom.port in out[table:]
    assert "STOPPED" in out[table:] and "stopped by Ctrl-C" in out, out
    assert "Chip was NOT reset" not in out


class _NoModemLines:
    """A serial port whose driver refuses DTR/RTS (ENOTTY), as an RFC 2217 port or some USB ROM
    loaders do: esptool's reset warns that the chip was not reset."""

    name = "/dev/ttyNOMODEM"
    dtr = rts = False

    def isOpen(self) -> bool:
        return True

    def __getattr__(self, name: str):
        def refuse(*args, **kwargs):
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        return refuse


def test_esptools_reset_warning_goes_to_the_ports_transcript_not_over_the_bars(capsys):
    from esptool.reset import HardReset
    from fieldnode.flashing import esplog
    from fieldnode.flashing.report import PortLine

    class Transcript(PortLine):
        def __init__(self) -> None:  # no bar: only the transcript is looked at
            self.transcript = []
            self._lock = threading.Lock()

    line = Transcript()
    with esplog.attached(line):
        HardReset(_NoModemLines())()
    assert any("Chip was NOT reset" in text for text in line.transcript)
    out = capsys.readouterr()
    assert "Chip was NOT reset" not in out.out + out.err

"""Where the simulated HAL is as strict as MicroPython's ESP32 port (v1.24-1.26), and the firmware
survives what a board does: SNTP failures, console input that does not end a line, zero-length
and queued datagrams, connect() while the station is associating, and an application update
over a 115200-baud console while the watchdog runs. Each port source file is named in
docs/virtual-node.md ("Where the simulation follows the ESP32 port")."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from fieldnode.flashing.app_only import update_port
from fieldnode.flashing.slots import slot_layout
from fieldnode.flashing.compile import build_app_files
from fieldnode.infra.paths import BOARDS_DIR, FIRMWARE_DIR, SIMHAL_DIR
from fieldnode.sim.fleet import devices_for_board
from fieldnode.sim.vnode import STDIN_RING, VirtualNode, WorldFile
from support.nodesite import wait_for
from support.ports import claimed_port


MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def sim_node(tmp: Path, world: dict | None = None) -> Path:
    node = tmp / "node"
    node.mkdir(exist_ok=True)
    (node / "sim.json").write_text(json.dumps({"unique_id": "240ac4a1b2c3", "devices": []}))
    if world is not None:
        WorldFile(node / "world.json").write(world)
    return node


def run_on_node(micropython, node: Path, code: str, **kw):
    return micropython.run(code, path=[SIMHAL_DIR], env={"FIELDNODE_SIM_NODE": str(node)}, **kw)


STATION_UP = """
import network, time
wlan = network.WLAN(network.STA_IF)
wlan.active(True)
wlan.connect("plant-floor", "sim")
while not wlan.isconnected():
    time.sleep_ms(10)
"""


# -- 3. SNTP -------------------------------------------------------------------------------------
# ntptime.settime() on the port: a DNS failure is a negative OSError from getaddrinfo, a reply
# shorter than 44 bytes a ValueError from struct.unpack, no reply an OSError(ETIMEDOUT).
NTP_FAILURES = {
    "short reply": ({"ntp": "short"}, "127.0.0.1", "ValueError"),
    "dns": ({"dns": "fail"}, "ntp.site.lan", "OSError(-202"),
    "no reply": ({"ntp": "silent"}, "127.0.0.1", "OSError(116"),  # newlib's ETIMEDOUT
}


@pytest.mark.parametrize("failure", sorted(NTP_FAILURES))
def test_the_clock_task_lives_through_every_way_sntp_fails_on_the_port(micropython, tmp_path, failure):
    world, host, raised = NTP_FAILURES[failure]
    node = sim_node(tmp_path, world)
    code = STATION_UP + f"""
import asyncio, ntptime
from fnode import clock
ntptime.host = {host!r}
try:
    ntptime.settime()
    print("settime: no error")
except Exception as exc:
    print("settime raised", repr(exc))
clock._RETRY_MS = 20
class Link:
    def up(self):
        return True
async def main():
    task = asyncio.create_task(clock.keeper(Link(), {host!r}))
    await asyncio.sleep_ms(300)
    print("keeper alive:", not task.done())
asyncio.run(main())
"""
    out = run_on_node(micropython, node, code, check=False).stdout
    assert f"settime raised {raised}" in out  # the simulation fails as the port does
    assert "keeper alive: True" in out, out
    assert out.count("W clock: SNTP from") >= 3  # every attempt failed, said so and tried again


def test_sntp_sets_the_clock_when_the_server_answers(micropython, tmp_path):
    node = sim_node(tmp_path, {})
    code = STATION_UP + """
import machine, time
from fnode import clock
machine.RTC().datetime((2000, 1, 1, 6, 0, 0, 0, 0))
print("before", clock.valid())
print("sync", clock.sync("127.0.0.1"), clock.valid())
"""
    out = run_on_node(micropython, node, code).stdout
    assert "before False" in out and "sync True True" in out


# -- 8. Wi-Fi connect ----------------------------------------------------------------------------
def test_the_link_waits_for_an_association_in_progress_instead_of_restarting_it(micropython, tmp_path):
    # Association and DHCP take seconds on a real access point; connect() again meanwhile would
    # start them over (ports/esp32/network_wlan.c), and the simulated WLAN does the same.
    node = sim_node(tmp_path, {"connect_ms": 2500})
    code = """
import time
from fnode.wifi import Link
link = Link("plant-floor", "sim")
deadline = time.ticks_add(time.ticks_ms(), 20000)
while not link.poll() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    time.sleep_ms(50)
print("up", link.up(), "associations", link.wlan.sim_associations())
"""
    out = run_on_node(micropython, node, code).stdout
    assert "up True associations 1" in out, out


def test_the_link_tries_again_when_the_access_point_refuses_or_is_away(micropython, tmp_path):
    node = sim_node(tmp_path, {"wifi": "down"})
    code = """
import time, network
from fnode.wifi import Link
link = Link("plant-floor", "sim")
deadline = time.ticks_add(time.ticks_ms(), 10000)
while link.wlan.sim_associations() < 2 and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    link.poll()
    time.sleep_ms(50)
print("status", link.wlan.status(), "associations", link.wlan.sim_associations())
"""
    out = run_on_node(micropython, node, code).stdout
    assert "status 201 associations 2" in out, out  # STAT_NO_AP_FOUND, and a second attempt


# -- 5. UDP --------------------------------------------------------------------------------------
def test_a_zero_length_datagram_closes_the_socket_and_readinto_joins_datagrams(micropython, tmp_path):
    node = sim_node(tmp_path, {})
    # The node binds the ports itself (no port 0 there to read back): two no other test takes.
    with claimed_port() as a, claimed_port() as b:
        out = run_on_node(micropython, node, STATION_UP + f"""
import socket
ports = {[a, b]}
def pair():
    addr = ("127.0.0.1", ports.pop())
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(addr)
    rx.setblocking(False)
    return rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM), addr
rx, tx, addr = pair()
tx.sendto(b"", addr)
tx.sendto(b"hello", addr)
time.sleep_ms(50)
print("zero:", rx.recv(64), rx.recv(64), rx.recvfrom(64)[0], rx.readinto(bytearray(8)))
rx, tx, addr = pair()
tx.sendto(b"ab", addr)
tx.sendto(b"cd", addr)
time.sleep_ms(50)
buf = bytearray(8)
n = rx.readinto(buf)
print("readinto:", bytes(buf[:n]), rx.readinto(buf))
tx.sendto(b"ab", addr)
tx.sendto(b"cd", addr)
time.sleep_ms(50)
print("recv:", rx.recv(8), rx.recv(8))
""").stdout
    assert "zero: b'' b'' b'' 0" in out, out  # "hello" never reads: the port took b"" as a closed peer
    assert "readinto: b'abcd' None" in out, out
    assert "recv: b'ab' b'cd'" in out, out


class FakeGateway:
    """A UDP peer that answers each CoAP POST as `answer(post, sender)` says (a list of datagrams
    to send back, in order), in a thread; counts the POSTs and their source ports."""

    def __init__(self, answer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.posts: list[tuple[bytes, tuple]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            if len(data) < 4 or data[1] != 2:  # only POSTs (the node's ACKs of a CON response pass)
                continue
            self.posts.append((data, sender))
            for datagram in self.answer(data, sender, len(self.posts)):
                self.sock.sendto(datagram, sender)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def piggybacked(post: bytes) -> bytes:
    tkl = post[0] & 15
    return bytes([0x60 | tkl, 0x44]) + post[2:4] + post[4:4 + tkl]  # ACK, 2.04 Changed


def empty_ack(post: bytes) -> bytes:
    return bytes([0x60, 0]) + post[2:4]


def separate_response(post: bytes) -> bytes:
    tkl = post[0] & 15
    return bytes([0x40 | tkl, 0x44, 0x7A, 0x01]) + post[4:4 + tkl]  # CON 2.04, its own message id


UPLINK_ONE_FRAME = """
import asyncio, sys, time
from fnode.wifi import Link
from fnode.uplink import Uplink
link = Link("plant-floor", "sim")
up = Uplink(("127.0.0.1", {port}), link)
frame = bytearray(64)
frame[22] = 7  # counter 7 (bytes 19..22)
up.submit(frame)
async def busy():
    # A loop as busy as a node's with slow sensors: datagrams queue up between two reads.
    while True:
        time.sleep_ms(150)
        await asyncio.sleep_ms(0)
async def main():
    asyncio.create_task(up.run())
    asyncio.create_task(busy())
    deadline = time.ticks_add(time.ticks_ms(), 20000)
    while up.acked == 0 and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(20)
    print("acked", up.acked)
asyncio.run(main())
"""


def run_uplink(micropython, tmp_path, answer) -> tuple[str, FakeGateway]:
    gateway = FakeGateway(answer)
    try:
        out = run_on_node(micropython, sim_node(tmp_path, {}), UPLINK_ONE_FRAME.format(port=gateway.port),
                          timeout=60).stdout
    finally:
        gateway.close()
    return out, gateway


def test_a_zero_length_datagram_does_not_deafen_the_uplink(micropython, tmp_path):
    def answer(post, sender, n):
        # The first POST gets a zero-length datagram before its ACK: on the port that socket
        # reads nothing ever again; later POSTs are simply acknowledged.
        return [b"", piggybacked(post)] if n == 1 else [piggybacked(post)]

    out, gateway = run_uplink(micropython, tmp_path, answer)
    assert "acked 1" in out, out
    assert len({sender for _, sender in gateway.posts}) == 2  # it opened a new socket to hear again


def test_two_queued_datagrams_are_parsed_one_by_one(micropython, tmp_path):
    def answer(post, sender, n):
        return [empty_ack(post), separate_response(post)]  # sent back to back: both queue up

    out, gateway = run_uplink(micropython, tmp_path, answer)
    assert "acked 1" in out, out
    assert len(gateway.posts) == 1  # the empty ACK was heard: no retransmission


UPLINK_IDLE = """
import asyncio, json, time
from fnode.wifi import Link
from fnode.uplink import Uplink
up = Uplink(("127.0.0.1", {port}), Link("plant-floor", "sim"))
def frame(counter):
    f = bytearray(64)
    f[22] = counter  # the counter: bytes 19..22
    return f
async def until(done):
    deadline = time.ticks_add(time.ticks_ms(), 20000)
    while not done() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(20)
async def main():
    asyncio.create_task(up.run())
    up.submit(frame(1))
    await until(lambda: up.acked == 1)
    await asyncio.sleep_ms(500)
    idle = up.beat  # the sender sets it each time round its loop: None while it sleeps on the queue
    up.submit(frame(2))
    await until(lambda: up.acked == 2)
    print(json.dumps([idle, up.acked, up.pending()]))
asyncio.run(main())
"""


def test_the_idle_uplink_sleeps_until_a_frame_is_queued(micropython, tmp_path):
    # Before: with nothing to send, the sender looked again every 20 ms.
    gateway = FakeGateway(lambda post, sender, n: [piggybacked(post)])
    try:
        out = run_on_node(micropython, sim_node(tmp_path, {}), UPLINK_IDLE.format(port=gateway.port),
                          timeout=60).stdout
    finally:
        gateway.close()
    idle, acked, pending = json.loads(out.strip().splitlines()[-1])
    assert idle is None  # its loop did not run in 500 ms of nothing to send
    assert (acked, pending) == (2, 0)  # and the frame queued then woke it and was sent
    assert len(gateway.posts) == 2


# -- 4. console input ----------------------------------------------------------------------------
WDT_MS = 3000  # the firmware's 30 s, shrunk: a stall of a few seconds must end in a reset
IDENTITY = bytes([4]) + bytes(range(8)) + bytes(range(32))


def provisioned_node(tmp: Path, *, watchdog_ms: int = WDT_MS, **kwargs) -> VirtualNode:
    """A node that runs the real application (a board with actuators, so it reads console
    commands) with its sensors every second and a shrunk watchdog, from the working tree."""
    doc = json.loads((BOARDS_DIR / "virtual.json").read_text())
    for sensor in doc["sensors"]:
        sensor["period_s"] = 1
    node_dir = tmp / "node"
    flash = node_dir / "flash"
    flash.mkdir(parents=True)
    shutil.copyfile(FIRMWARE_DIR / "boot.py", flash / "boot.py")
    (flash / "main.py").write_text(f"import fnode.app as app\napp.WDT_TIMEOUT_MS = {watchdog_ms}\napp.run()\n")
    (flash / "board.json").write_text(json.dumps(doc))
    settings = {"id": IDENTITY, "gw": b"127.0.0.1:9", "ssid": b"plant-floor", "wpass": b"sim"}
    (node_dir / "nvs.json").write_text(json.dumps(
        {"fieldnode": {k: ["blob", v.hex()] for k, v in settings.items()}}))
    node = VirtualNode(node_dir, "240ac4a1b2c3", board=None, devices=devices_for_board(doc), **kwargs)
    return node.start()


def frames_after(node: VirtualNode, mark: int, n: int, timeout: float) -> None:
    for _ in range(n):
        mark = node.wait_output(b"FN1 ", timeout=timeout, since=mark)


def test_a_partial_console_line_starves_nothing_and_an_over_long_line_is_dropped(tmp_path):
    node = provisioned_node(tmp_path, baud=115200)
    try:
        frames_after(node, 0, 2, timeout=30)  # running: the boot frame and a first sample
        with serial.Serial(node.port, 115200, timeout=1) as console:  # a terminal left open
            mark = node.output_mark()
            console.write(b"FN1 AAAA")  # half a command, no end of line
            # Sampling and sending go on for longer than the watchdog's timeout, which never fires.
            frames_after(node, mark, 2 * WDT_MS // 1000 * 2, timeout=15)
            assert node.boots == ["pwron"], node.console_tail(800)
            # The rest of that line, far past any command's length: discarded, said on the console.
            # Written as the ring has room, so that what the node sees is the whole line however
            # late a busy machine runs the node's process (what a full ring loses is another test).
            mark = node.output_mark()
            rest, step = b"A" * 2000 + b"\r\n", STDIN_RING // 2
            for i in range(0, len(rest), step):
                wait_for(lambda: node.stdin_room() >= step, 15, "room in the node's stdin ring")
                chunk, due = rest[i:i + step], node.input_delivered + len(rest[i:i + step])
                console.write(chunk)
                wait_for(lambda due=due: node.input_delivered >= due, 15, "the bytes in the node's stdin ring")
            node.wait_output(b"W console: line longer than 1400 bytes discarded", timeout=15, since=mark)
            frames_after(node, node.output_mark(), 2, timeout=15)
        assert node.boots == ["pwron"] and node.input_lost == 0
    finally:
        node.stop()


RING_MAIN = """
import select, sys, time
stdin = sys.stdin.buffer
p = select.poll()
p.register(stdin, select.POLLIN)
print("ready")
while not p.poll(0):  # input has started to arrive; leave it unread while all of it comes
    time.sleep_ms(5)
time.sleep_ms(1000)
n = 0
while p.poll(0):
    stdin.read(1)
    n += 1
print("read", n)
"""


def test_a_paced_console_keeps_what_the_stdin_ring_holds_and_loses_the_rest(tmp_path):
    # 1000 bytes reach an ESP32 at 115200 baud in 87 ms; its stdin ring keeps the first 260
    # while nobody reads (ports/esp32/mphalport.c, uart.c).
    (tmp_path / "n" / "flash").mkdir(parents=True)
    (tmp_path / "n" / "flash" / "main.py").write_text(RING_MAIN)
    node = VirtualNode(tmp_path / "n", "240ac4000001", board=None, baud=115200).start()
    try:
        with serial.Serial(node.port, 115200, timeout=1) as console:
            node.wait_output(b"ready", timeout=15)
            console.write(bytes(range(32, 112)) * 12 + b"0123456789" * 4)
            node.wait_output(b"read ", timeout=15)
            node.wait_output(b"\n", timeout=5, since=node.wait_output(b"read ", timeout=1))
            kept = int(re.search(rb"read (\d+)", node.console_tail()).group(1))
        # The relay learns what the node holds from the kernel (TIOCINQ), whose count can trail a
        # write by a moment on a loaded machine: a byte or two more may get in.
        assert STDIN_RING <= kept <= STDIN_RING + 4, node.console_tail(300)
        assert node.input_lost == 1000 - kept
    finally:
        node.stop()


# -- 9. flash --app-only and the watchdog --------------------------------------------------------
class Line:
    """What update_port reports to (the CLI's progress line), kept as text."""

    def __init__(self) -> None:
        self.transcript: list[str] = []
        self.started = time.monotonic()

    def phase(self, text: str) -> None:
        self.text(text)

    def text(self, text: str) -> None:
        # Timed, so a failure shows which step of the update a watchdog outlasted.
        self.transcript.append(f"{time.monotonic() - self.started:7.2f} s  {text}")

    def bytes_done(self, done: int, total: int, description: str | None = None) -> None:
        pass

    def check_stop(self) -> None:
        pass  # never stopped: no Ctrl-C here


def test_an_app_only_update_longer_than_the_watchdog_lands_without_a_watchdog_reset(tmp_path):
    # The application (~63 KB) takes ~11 s through a 115200-baud console: a third of the node's
    # 30 s watchdog today. Here the watchdog is 5 s, so the update outlasts it twice over, as a
    # larger application or a slower line would: the update must keep the watchdog fed, since
    # Ctrl-C does not stop it (nor does a soft reset, on the port). Not shorter: one raw-REPL
    # step of the update can take a second or two when the machine is busy (3 s failed so).
    watchdog_ms = 5000
    node = provisioned_node(tmp_path, baud=115200, watchdog_ms=watchdog_ms)
    try:
        frames_after(node, 0, 2, timeout=30)
        app = build_app_files(FIRMWARE_DIR, json.loads((BOARDS_DIR / "virtual.json").read_text()), "xtensawin")
        result = update_port(node.port, app, Line())  # the node's / is its flash, as a board's
        assert result.ok, result.message
        assert result.seconds > 2 * watchdog_ms / 1000  # the premise: the line paces the update
        frames_after(node, node.output_mark(), 2, timeout=30)  # the new application runs
        # the update's reset only
        assert node.boots == ["pwron", "soft"], ("\n".join(result.transcript) + "\n"
                                                 + node.console_tail(3000).decode(errors="replace"))
        for path, data in slot_layout(app.files, "a").items():  # the package into the slot not running
            assert (node.flash / path.lstrip("/")).read_bytes() == data, path
    finally:
        node.stop()


class PowerCutLine(Line):
    """Cuts the node's power once a fifth of the application is written: the node boots its
    application again, which prints frames where the update waits for the raw REPL."""

    def __init__(self, node: VirtualNode) -> None:
        super().__init__()
        self.node = node

    def bytes_done(self, done: int, total: int, description: str | None = None) -> None:
        if done * 5 >= total and self.node.boots == ["pwron"]:
            self.node.power_cycle()


def test_an_app_only_update_whose_node_resets_midway_fails_with_the_reason_instead_of_waiting(tmp_path):
    # mpremote waits for the raw REPL's answer for as long as bytes arrive, and a rebooted node's
    # application prints frames: without a bound on each step the update waited for ever.
    node = provisioned_node(tmp_path, watchdog_ms=30000)
    try:
        frames_after(node, 0, 1, timeout=30)
        app = build_app_files(FIRMWARE_DIR, json.loads((BOARDS_DIR / "virtual.json").read_text()), "xtensawin")
        line = PowerCutLine(node)
        result = update_port(node.port, app, line, step_timeout=2)
        assert not result.ok and node.boots == ["pwron", "pwron"], "\n".join(result.transcript)
        # The first line depends on where the cut lands (no answer, or the application's output
        # where the raw REPL's was expected); what it means does not.
        assert result.message.endswith(f": the node left the raw REPL partway (did it reset? its watchdog, "
                                       f"power or cable); it runs what it ran: run flash --app-only on "
                                       f"{node.port} again"), result.message
        assert not (node.flash / "app.json").exists()  # never switched: the old application runs
        frames_after(node, node.output_mark(), 2, timeout=30)
    finally:
        node.stop()


FED_MAIN = """
import machine, time
wdt = machine.WDT(timeout=1500)
print("fed main", machine.reset_cause())
while True:
    wdt.feed()
    time.sleep_ms(100)
"""


def test_a_soft_reset_into_the_raw_repl_does_not_stop_the_watchdog(tmp_path):
    # mpremote without `resume` soft-resets the node into the raw REPL, where main.py does not
    # run: nothing feeds the watchdog there, and on the port it still runs (machine_wdt.c).
    (tmp_path / "n" / "flash").mkdir(parents=True)
    (tmp_path / "n" / "flash" / "main.py").write_text(FED_MAIN)
    node = VirtualNode(tmp_path / "n", "240ac4000001", board=None).start()
    try:
        node.wait_output(b"fed main", timeout=15)
        proc = subprocess.run([MPREMOTE, "connect", node.port, "exec", "print('in the raw REPL')"],
                              capture_output=True, text=True, timeout=30)
        assert "in the raw REPL" in proc.stdout, proc.stderr
        assert node.wait_boots(3, timeout=15) == ["pwron", "soft", "wdt"]
        node.wait_output(b"fed main 3", timeout=15)  # after WDT_RESET main.py runs and feeds again
    finally:
        node.stop()

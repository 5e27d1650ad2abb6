"""Where the simulated HAL is as strict as MicroPython's ESP32 port (v1.24-1.26), and the firmware
survives what a board does: SNTP failures, console input that does not end a line, zero-length
and queued datagrams, connect() while the station is associating, and an application update
over a 115200-baud console while the watchdog runs. Each port source file is named in
docs/virtual-node.md ("Where the simulation follows the ESP32 port")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldnode.paths import SIMHAL_DIR
from fieldnode.sim.vnode import WorldFile


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
    "no reply": ({"ntp": "silent"}, "127.0.0.1", "OSError(110"),
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

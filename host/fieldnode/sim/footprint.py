"""The application's heap footprint per board, measured on the MicroPython unix port with the
simulated HAL, apart from the HAL's own share, and estimated for the 32-bit ESP32
(docs/firmware.md, "Memory budget"; `bench/node_memory.py` records it in docs/performance.md).

What runs is what ships: the library compiled to .mpy (as `fieldnode flash` writes it) and the
board file, on a node directory provisioned with a key and a gateway address, as a virtual node
has. The measuring script (mp_footprint.py) imports the HAL modules the application will use
first and measures them, then either imports the fnode modules one by one or boots the
application and measures it running. The frozen asyncio is measured alone, without the HAL (whose
simulated `time` imports it), and counted as the application's.

The 32-bit estimate. The unix port here is 64-bit: 8-byte words, 32-byte GC blocks (4 words,
py/mpconfig.h MICROPY_BYTES_PER_GC_BLOCK); the ESP32 has 4-byte words and 16-byte blocks. An
object made of words (dicts, lists, functions, classes, tasks, raw-code tables) takes the same
number of blocks on both, so half the bytes on the ESP32. Byte data (bytecode and strings loaded
from a .mpy, bytearray buffers) takes the same bytes on both. So: ESP32 bytes = byte data +
(64-bit bytes - byte data) / 2, where the byte data of the code is its .mpy file size less the
text of the names it interns (an upper bound) and that of the running state is its buffers.
Interned names (qstrs) are counted apart, from micropython.qstr_info() around each step: their
text as it is, their pool entries as the ESP32 allocates them (esp32_qstr_pools), since the 64-bit
port's pools step where the HAL's own names left them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from ..node.boards import load_board
from ..node.drivers import DRIVERS
from ..infra.errors import FieldnodeError
from ..node.chips import chip_spec
from ..flashing.compile import build_app_files
from ..infra.paths import FIRMWARE_DIR, SIMHAL_DIR
from .fleet import devices_for_board
from .vnode import VirtualNode, micropython_binary

SCRIPT = Path(__file__).with_name("mp_footprint.py")
ESP32_BLOCK = 16
# An ESP32-WROOM without PSRAM, MicroPython v1.24-1.26: the GC heap starts at 56 KB
# (ports/esp32/mpconfigport.h MICROPY_GC_INITIAL_HEAP_SIZE) and grows on demand from the ESP-IDF
# heap; grown once it is 111,936 bytes, which leaves about 40 KB to ESP-IDF for Wi-Fi and a TLS
# request (micropython/micropython pull request #13219, which tuned the initial size for that).
# MicroPython itself uses about 1.5 KB of it after start (micropython.mem_info() on an ESP32 in
# pull request #12141: "GC: total: 64000, used: 1568").
ESP32_HEAP = 111_936
ESP32_MICROPYTHON_USE = 1_568
ESP32_FREE_AT_START = ESP32_HEAP - ESP32_MICROPYTHON_USE
TARGET_FREE = 0.40  # of the heap, left free by the richest shipped board with updates in
# What an update holds besides its code while it runs: one block's datagram (fnode.blockget
# _RX_MAX: a 1,024-byte block and its CoAP header), and for a firmware update the 4 KB flash-sector
# buffer (fnode.otafw _SECTOR). Byte data: the same bytes on the ESP32.
UPDATE_DATAGRAM = 1024 + 64
FW_SECTOR = 4096
# Interned strings (qstrs) on the ESP32: a pool entry is a pointer, a 2-byte hash and a 1-byte
# length (py/qstr.h qstr_pool_t; py/mpconfig.h MICROPY_QSTR_BYTES_IN_HASH is 2 at the ESP32
# port's EXTRA_FEATURES level, MICROPY_QSTR_BYTES_IN_LEN 1), after a 6-word pool header; pools
# double from 20 entries (py/qstr.c qstr_add, tools/mpy-tool.py qstr_pool_alloc).
ESP32_QSTR_ENTRY = 4 + 2 + 1
ESP32_QSTR_POOL_HEAD = 6 * 4
QSTR_FIRST_POOL = 20
# Frozen into the ESP32 firmware (ports/esp32/boards/manifest.py: include("$(MPY_DIR)/extmod/asyncio")),
# and into the unix port's: their bytecode and strings are in flash, their module, function and
# class objects in RAM, all words: half the 64-bit bytes.
FROZEN = ("asyncio",)
BOOT = ("fnboot",)  # in /lib outside the slots (docs/updates.md), resident beside the application
# Paths imported for a moment and forgotten after it (fnode.app.forget_modules), measured while
# imported by mp_footprint.py: a command's receiving side, the boot frame's update records (a node
# with slots), an application update, a firmware update.
PATHS = ("command", "slots", "update", "fwupdate")
HEAPSIZE = 4 * 1024 * 1024  # the measuring heap: ample, so nothing is cut short
RUN_MS = 3000  # the application measured this long after it starts: every sampler has sampled
_IMPORT = re.compile(r"^\s*(?:from\s+(fnode(?:\.\w+)*|\.+\w*)\s+import\s+([\w, ]+)|import\s+(fnode\.\w+))", re.M)


def module_order(lib: Path = FIRMWARE_DIR / "lib") -> list[str]:
    """Every fnode module, dependencies first (from their import lines), so that importing them
    in this order measures each one's own share."""
    sources = {".".join(p.relative_to(lib).with_suffix("").parts): p for p in sorted((lib / "fnode").rglob("*.py"))}
    names = {n.removesuffix(".__init__"): p for n, p in sources.items()}
    deps: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for frm, what, plain in _IMPORT.findall(path.read_text()):
            if plain:
                found.add(plain)
                continue
            if frm.startswith("."):
                up = len(frm) - len(frm.lstrip("."))
                base = package.rsplit(".", up - 1)[0] if up > 1 else package
                frm = base + ("." + frm.lstrip(".") if frm.lstrip(".") else "")
            found.add(frm)
            found.update(f"{frm}.{w.strip()}" for w in what.split(","))
        deps[name] = {d for d in found if d in names and d != name}
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...] = ()) -> None:
        if name in order or name in seen:
            return
        for dep in sorted(deps[name]):
            visit(dep, seen + (name,))
        order.append(name)

    for name in sorted(names):
        visit(name)
    return order


class NodeRig:
    """A node directory and flash for one board, provisioned, for running mp_footprint.py."""

    def __init__(self, base: Path, board: str | Path, gateway: str = "127.0.0.1:9") -> None:
        self.doc = load_board(board)
        self.base = Path(base)
        self.node = self.base / "node"
        self.flash = self.node / "flash"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.lib = self.flash / "lib"
        self.mpy_sizes = install_shipped(self.flash, board)
        # The node's sim.json, as a virtual node of this board has it (made, not started).
        VirtualNode(self.node, "02f1e1ee0001", board=board, devices=devices_for_board(self.doc), flash=self.flash,
                    firmware_lib=None)
        # Provisioned by the firmware's own NVS code: a key, the gateway, Wi-Fi.
        self.run(f"""
import esp32
from fnode.config import NAMESPACE
from fnode.provision import pack_settings
nvs = esp32.NVS(NAMESPACE)
nvs.set_blob("id", bytes([4]) + bytes.fromhex("02f1e1ee00010001") + bytes(range(32)))
nvs.set_blob("cfg", pack_settings({{"name": "footprint", "gw": "{gateway}", "ssid": "plant-floor", "wpass": "sim"}}))
nvs.commit()
""")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIELDNODE_SIM_", "MICROPY"))}
        # The library by a path relative to the flash (the working directory), "lib": each module
        # interns its file name (__file__) as a qstr, "lib/fnode/app.mpy" here as "/lib/fnode/app.mpy"
        # on a board, not this machine's long temporary path.
        env.update(MICROPYPATH=":".join([str(SIMHAL_DIR), "lib", ".frozen"]),
                   FIELDNODE_SIM_NODE=str(self.node), FIELDNODE_SIM_RESET="pwron")
        return env

    def run(self, code: str, *args: str, heap: str = str(HEAPSIZE), timeout: float = 120) -> str:
        script = self.base / "mp_script.py"
        script.write_text(code)
        return self._run([str(script), *args], heap, timeout)

    def _run(self, argv: list[str], heap: str, timeout: float, env: dict[str, str] | None = None) -> str:
        # stdin open and silent, as a board's console is: at end of input the console task waits
        # on an event nothing else refers to, and the collector takes the task with what it holds.
        quiet, keep_open = os.pipe()
        try:
            proc = subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", *argv], cwd=self.flash,
                                  env=env or self.env(), stdin=quiet, capture_output=True, text=True,
                                  timeout=timeout)
        finally:
            os.close(quiet)
            os.close(keep_open)
        if proc.returncode != 0:
            raise FieldnodeError(f"micropython failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
        return proc.stdout

    def footprint(self, hal: list[str], modules: Sequence[str] = (), run_ms: int = 0, tasks: int = 0,
                  buffers: bool = False, heap: int = 0, frozen: Sequence[str] = ()) -> dict[str, Any]:
        args = json.dumps({"hal": hal, "hal_objects": hal_objects(self.doc) if hal else [], "modules": list(modules),
                           "run_ms": run_ms, "tasks": tasks, "buffers": buffers, "frozen": list(frozen)})
        path = self.base / "footprint-args.json"
        path.write_text(args)
        env = None
        if frozen:  # the frozen modules alone: the port's own time, no simulated HAL on the path
            env = dict(self.env(), MICROPYPATH=".frozen")
        out = self._run([str(SCRIPT), str(path)], str(heap or HEAPSIZE), 120, env)
        lines = [line for line in out.splitlines() if line.startswith("FOOTPRINT ")]
        if not lines:
            raise FieldnodeError(f"the footprint script printed no result: {out[-2000:]}")
        result = json.loads(lines[-1][len("FOOTPRINT "):])
        result["qstr"] = qstr_steps(out)
        return result


_QSTR_INFO = re.compile(r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")


def qstr_steps(out: str) -> dict[str, dict[str, int]]:
    """The interned strings after each step of mp_footprint.py: its "QSTR <step>" line, then the
    line micropython.qstr_info() prints (pools, strings, their text with its NULs, and the heap
    bytes of pools and text)."""
    steps: dict[str, dict[str, int]] = {}
    step = None
    for line in out.splitlines():
        if line.startswith("QSTR "):
            step = line[len("QSTR "):]
            continue
        m = _QSTR_INFO.search(line)
        if m and step is not None:
            steps[step] = dict(zip(("pools", "count", "text", "bytes"), map(int, m.groups()), strict=True))
            step = None
    return steps


def qstr_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in ("count", "text", "bytes")}


def install_shipped(flash: Path, board: str | Path) -> dict[str, int]:
    """The application as `fieldnode flash` writes it (library as .mpy, board.json, boot.py,
    main.py), into a flash directory; returns the .mpy size of each module."""
    doc = load_board(board)
    sizes: dict[str, int] = {}
    for path, data in build_app_files(FIRMWARE_DIR, doc, chip_spec(doc["chip"]).mpy_march).files.items():
        dest = Path(flash) / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        if path.endswith(".mpy"):
            sizes[path[len("/lib/"):-len(".mpy")].replace("/", ".").removesuffix(".__init__")] = len(data)
    return sizes


def esp32_app(result: dict[str, Any]) -> int:
    """The application's ESP32 estimate at rest: code, the frozen modules' objects, the interned
    strings and the running state."""
    return sum(result["esp32"][k] for k in ("code", "frozen", "qstr", "state"))


def budget(result: dict[str, Any]) -> dict[str, Any]:
    """A board's heap budget on an ESP32-WROOM from its measured footprint: bytes, and the share
    of the heap left free at rest (what updates keep resident, fnboot and the names an update
    interns, included), during an application update, during a firmware update and during a
    command (each path measured while imported, its names counted at rest: nothing twice)."""
    app = esp32_app(result)
    free = ESP32_FREE_AT_START - app
    esp32 = result["esp32"]
    command = esp32.get("command_path", 0)
    ota = esp32.get("update_path", 0) + UPDATE_DATAGRAM
    fw_ota = esp32.get("fwupdate_path", 0) + UPDATE_DATAGRAM + FW_SECTOR
    return {"heap": ESP32_HEAP, "free_at_start": ESP32_FREE_AT_START, "app": app, "free": free,
            "free_share": free / ESP32_HEAP, "ota": ota, "free_with_ota": free - ota,
            "free_share_with_ota": (free - ota) / ESP32_HEAP, "fw_ota": fw_ota,
            "free_share_during_fw_update": (free - fw_ota) / ESP32_HEAP, "command_path": command,
            "free_share_during_command": (free - command) / ESP32_HEAP}


def unix_heap_equivalent(result: dict[str, Any], esp32_bytes_free: int = ESP32_FREE_AT_START) -> int:
    """-X heapsize for a virtual node of this board that leaves the application what an ESP32
    leaves it: the unix port's own use and the simulated HAL's share (C on a board) added, the
    ESP32's free heap scaled by the measured 64-bit/32-bit ratio of the application, and the
    GC's tables (the usable part of the measuring heap) taken into account."""
    ratio = result["app"] / esp32_app(result)
    usable = result["base"] + result["hal"] + esp32_bytes_free * ratio
    return int(usable * result["heapsize"] / result["total"])


def hal_objects(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The HAL objects a board's application makes (buses, analog and digital pins, outputs, the
    Wi-Fi station, its NVS namespace: the simulation holds the namespace's entries in RAM, the
    ESP32 in flash), for mp_footprint.py to make once with the HAL."""
    out: list[dict[str, Any]] = [{"kind": "wlan"}, {"kind": "nvs", "namespace": "fieldnode"}]
    for bus in doc.get("buses", {}).values():
        if bus["type"] == "i2c":
            out.append({"kind": "i2c", "id": bus.get("id", 0), "scl": bus["scl"], "sda": bus["sda"],
                        "freq": bus.get("freq", 100000)})
        elif bus["type"] == "uart":
            out.append({"kind": "uart", "id": bus["id"], "baud": bus.get("baud", 9600), "tx": bus["tx"],
                        "rx": bus["rx"]})
        else:
            out.append({"kind": "pin", "pin": bus["pin"]})
    for sensor in doc.get("sensors", []):
        kind = DRIVERS[sensor["driver"]].pin
        if kind:
            out.append({"kind": "adc" if kind == "adc" else "pin", "pin": sensor["pin"]})
    for act in doc.get("actuators", []):
        out.append({"kind": "pwm", "pin": act["pin"], "freq": act.get("freq", 1000)} if act["driver"] == "pwm"
                   else {"kind": "pin", "pin": act["pin"], "out": True})
    if doc.get("status_led"):
        out.append({"kind": "pin", "pin": doc["status_led"]["pin"], "out": True})
    return out


def is_hal(module: str) -> bool:
    """A module of the simulated HAL (Python here, C on a board), not of the application."""
    return (SIMHAL_DIR / f"{module}.py").exists()


def esp32_bytes(bytes64: float, byte_data: float) -> int:
    """The 32-bit estimate of a heap share measured on the 64-bit port (see the module doc)."""
    byte_data = max(0, min(byte_data, bytes64))
    return round(byte_data + (bytes64 - byte_data) / 2)


def _esp32_blocks(n: int) -> int:
    return -(-n // ESP32_BLOCK) * ESP32_BLOCK


def esp32_qstr_pools(count: int, start: int = 0) -> int:
    """Heap bytes of the qstr pools an ESP32 allocates for `count` interned strings made after
    `start` others (py/qstr.c qstr_add): the first pool holds 20 (twice the frozen pool's alloc,
    which tools/mpy-tool.py sets to at most 10), each next one twice the last; a pool is paid
    whole when its first string comes."""
    total, first, alloc = 0, 0, QSTR_FIRST_POOL
    while first < start + count:
        if first >= start:
            total += _esp32_blocks(ESP32_QSTR_POOL_HEAD + ESP32_QSTR_ENTRY * alloc)
        first += alloc
        alloc *= 2
    return total


def qstr_room(count: int) -> tuple[int, int]:
    """(strings that still fit the pools `count` strings filled, bytes of the next pool)."""
    first, alloc = 0, QSTR_FIRST_POOL
    while first < count:
        first += alloc
        alloc *= 2
    return first - count, _esp32_blocks(ESP32_QSTR_POOL_HEAD + ESP32_QSTR_ENTRY * alloc)


def _module_shares(parts: dict[str, Any], order: list[str], sizes: dict[str, int]) -> dict[str, dict[str, int]]:
    # Each module's own share from the run that imports them one by one: its heap bytes less its
    # interned strings (pools and text, counted apart: a pool step on the 64-bit port is no
    # module's), and its ESP32 estimate: words halved, byte data (its .mpy less the qstr text the
    # .mpy carries, which is interned) kept, its strings' text and ESP32 pool entries.
    steps, prev, out = parts["qstr"], parts["qstr"]["hal"], {}
    for m in order:
        q = qstr_delta(steps[m], prev)
        prev = steps[m]
        b = parts["modules"][m]
        words = b - q["bytes"]
        data = max(0, sizes.get(m, 0) - q["text"])
        out[m] = {"bytes": b, "blocks": b // parts["block"], "mpy": sizes.get(m, 0), "qstrs": q["count"],
                  "words": words, "data": data,
                  "esp32": esp32_bytes(words, data) + q["text"] + ESP32_QSTR_ENTRY * q["count"]}
    return out


def measure_board(board: str | Path, work: Path | None = None, run_ms: int = RUN_MS) -> dict[str, Any]:
    """The application's footprint for one board: {hal, app, code, state, ... } in bytes and
    64-bit GC blocks, per module, and the ESP32 estimate."""
    with tempfile.TemporaryDirectory(prefix="fieldnode-footprint-") as tmp:
        rig = NodeRig(Path(work or tmp), board)
        first = rig.footprint([], run_ms=run_ms)  # which modules the board loads
        hal = sorted(m for m in first["loaded"] if is_hal(m))
        frozen_modules = sorted(m for m in first["loaded"] if m.partition(".")[0] in FROZEN)
        loaded = {m for m in first["loaded"] if m.startswith("fnode")}
        frozen = rig.footprint([], frozen=frozen_modules)["frozen"]
        # The simulated HAL imports asyncio (its time module binds the port's ticks for it): the
        # frozen modules are imported with the HAL, measured alone above and counted as the
        # application's.
        running = rig.footprint(hal + frozen_modules, run_ms=run_ms)
        # The boot code first: it stays resident, imported before the application (main.py).
        order = [m for m in BOOT if m in first["loaded"]] + [m for m in module_order() if m in loaded]
        parts = rig.footprint(hal + frozen_modules, order, tasks=8, buffers=True)
        sizes = rig.mpy_sizes
    block = running["block"]
    hal_share = running["hal"] + running["hal_static"] - frozen  # the static C objects the application makes too
    app = running["running"] - hal_share
    qstrs = qstr_delta(running["qstr"]["running"], running["qstr"]["hal"])
    qstrs["room"], qstrs["next_pool"] = qstr_room(qstrs["count"])
    modules = _module_shares(parts, order, sizes)
    code = sum(m["bytes"] for m in modules.values())
    code_words = sum(m["words"] for m in modules.values())
    code_data = sum(m["data"] for m in modules.values())
    state = app - code - frozen
    state_words = app - qstrs["bytes"] - code_words - frozen
    buffers = sum(parts["buffers"].values())
    return {
        "board": load_board(board)["name"], "block": block, "hal": hal_share, "hal_blocks": hal_share // block,
        "app": app, "app_blocks": app // block, "code": code, "code_mpy": sum(m["mpy"] for m in modules.values()),
        "state": state, "frozen": frozen, "frozen_modules": frozen_modules, "qstrs": qstrs,
        "buffers": parts["buffers"], "task": parts["task"], "modules": modules,
        "free_running": running["free_running"], "hal_modules": hal, "base": running["base"],
        "total": running["total"], "heapsize": HEAPSIZE,
        "esp32": {"code": esp32_bytes(code_words, code_data), "frozen": round(frozen / 2),
                  "qstr": qstrs["text"] + esp32_qstr_pools(qstrs["count"]), "state": esp32_bytes(state_words, buffers),
                  **{f"{p}_path": _esp32_path(running, sizes, p) for p in PATHS}},
        **{f"{p}_path": running.get(f"{p}_path", 0) for p in PATHS},
        **{f"{p}_modules": running.get(f"{p}_modules", []) for p in PATHS},
    }


def _esp32_path(running: dict[str, Any], sizes: dict[str, int], path: str) -> int:
    # What a path imported for a moment holds meanwhile, on the ESP32: its strings stay after it,
    # so they are in the figures at rest; its code's byte data is its .mpy less their text.
    held = running.get(f"{path}_path", 0)
    if not held:
        return 0
    q = qstr_delta(running["qstr"][path], running["qstr"]["before " + path])
    data = sum(sizes.get(m, 0) for m in running.get(f"{path}_modules", ())) - q["text"]
    return esp32_bytes(held - q["bytes"], data)


__all__ = ["NodeRig", "measure_board", "module_order", "esp32_bytes", "esp32_app", "esp32_qstr_pools", "qstr_room",
           "budget", "unix_heap_equivalent",
           "install_shipped", "ESP32_BLOCK", "ESP32_HEAP", "ESP32_FREE_AT_START", "TARGET_FREE", "UPDATE_DATAGRAM",
           "FW_SECTOR"]

"""docs/field-guide.md, followed literally without hardware.

The guide's blocks marked `<!-- guide-test -->` are run in the order they appear, as a
technician would type them, in a fresh home directory (the keystore, the firmware cache and
~/Downloads are the guide's own paths there). The block marked `background` (`fieldnode sim
... --unprovisioned --rom-loader 2`) starts first and keeps running; the ports it prints take the
place of /dev/ttyUSB0 and /dev/ttyUSB1: its ROM loaders up to section 3, its nodes from section 4
on, as the guide says (and in a block marked `nodes`: `flash --app-only` writes over the REPL of a
running node). Nothing of the tool is imported or patched: the commands are the guide's
text, through bash.

A transcript (`$ command` then its output) is checked against what the command printed: every
line outside a table's body, in order (so a line printed below a table is not accepted above it);
every table header, in order; the words of the table bodies (their wrapping depends on the
terminal's width). Values that change from run to run are compared by shape: numbers, MACs, hex
ids, temporary directories, the node's readings in blocks marked `rows vary`, and the fields of
`json` lines. A command whose shown output has an `error:` line, or a block marked `fails`, must
exit non-zero; any other must exit 0.

`FIELDNODE_GUIDE_SHOW=1 pytest -s tests/test_field_guide.py` prints each command's output as the
guide would show it (its ports, its home directory), to paste into the guide after a change.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldnode.testing.fake_firmware import fake_firmware

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "field-guide.md"
GUIDE_HOME = "/home/tech"  # the guide's $HOME, where it was cloned to ~/fieldnode
GUIDE_PORTS = ("/dev/ttyUSB0", "/dev/ttyUSB1")
MARKED = re.compile(r"<!-- guide-test(?::\s*(?P<opts>[^>]*?))?\s*-->\n```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
SECTION = re.compile(r"^## (\d+)\.", re.M)
# Box drawing and block elements: table frames, progress bars, sparklines.
GRAPHICS = re.compile(r"[\u2500-\u259f]")
MAC = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
HEX_ID = re.compile(r"\b[0-9a-f]{12,}\b")
NUMBER = re.compile(r"\d+(?:\.\d+)*")
TEMP_DIR = re.compile(r"/tmp/fieldnode-[a-z]+-[a-z0-9_]{8}\b")  # tempfile.mkdtemp(prefix="fieldnode-sim-")


@dataclass
class Block:
    section: int
    options: set[str]
    body: str
    transcript: bool  # `$ command` lines with their output, else a shell script

    def commands(self) -> list[tuple[str, str]]:
        """(command, the output the guide shows for it)."""
        if not self.transcript:
            return [(line, "") for line in self.body.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        steps: list[tuple[str, list[str]]] = []
        for line in self.body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        return [(cmd, "\n".join(out)) for cmd, out in steps]


def guide_blocks(text: str) -> list[Block]:
    sections = [(m.start(), int(m.group(1))) for m in SECTION.finditer(text)]
    blocks = []
    for m in MARKED.finditer(text):
        section = max((n for at, n in sections if at < m.start()), default=0)
        options = {o.strip() for o in (m.group("opts") or "").split(",") if o.strip()}
        blocks.append(Block(section, options, m.group("body"), transcript=m.group("lang") != "sh"))
    return blocks


def shape(text: str) -> str:
    """A line as compared: no graphics, variable values by kind, spaces collapsed."""
    text = GRAPHICS.sub(" ", text)
    text = TEMP_DIR.sub("<tmp>", text)
    text = MAC.sub("<mac>", text)
    text = HEX_ID.sub("<id>", text)
    text = NUMBER.sub("<n>", text)
    return " ".join(text.split())


def is_body_row(line: str) -> bool:
    return "│" in line


def check_output(command: str, shown: str, printed: str, options: set[str]) -> None:
    where = f"`{command}` printed:\n{printed}\nThe guide shows:\n{shown}"
    if "json" in options:
        check_json(shown, printed, where)
        shown = "\n".join(line for line in shown.splitlines() if not line.startswith("{"))
    have = "\n".join(shape(line) for line in printed.splitlines())
    at = 0
    for line in shown.splitlines():
        want = shape(line)
        if not want or is_body_row(line):
            continue
        found = have.find(want, at)
        assert found >= 0, f"not printed (or not in this order): {line!r}\n{where}"
        at = found + len(want)
    rows = [line for line in shown.splitlines() if is_body_row(line)]
    if "rows vary" in options:
        assert rows == [] or any(is_body_row(line) for line in printed.splitlines()), where
        return
    missing = Counter(w for line in rows for w in shape(line).split()) - Counter(have.split())
    assert not missing, f"table cells not printed: {sorted(missing)}\n{where}"


def check_json(shown: str, printed: str, where: str) -> None:
    examples = [json.loads(line) for line in shown.splitlines() if line.startswith("{")]
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert examples and lines, where
    fields = {k for e in examples for k in e}
    record_fields = {k for e in examples for r in e["records"] for k in r}
    for line in lines:
        assert set(line) == fields and line["status"] == "ok" and line["verified"] is True, where
        assert all(set(r) <= record_fields for r in line["records"]), where


class Walk:
    """The technician: a home directory, a shell, and the sim's ports for the guide's."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": os.pathsep.join([str(REPO / "host"), os.environ.get("PYTHONPATH", "")])}
        for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "FIELDNODE_KEYS", "FIELDNODE_DB",
                     "FIELDNODE_WIFI_PASSWORD"):
            self.env.pop(name, None)
        self.sim: subprocess.Popen | None = None
        self.loaders: list[str] = []
        self.nodes: list[str] = []

    def expected(self, text: str) -> str:
        return text.replace(f"{GUIDE_HOME}/fieldnode", str(REPO)).replace(GUIDE_HOME, str(self.home))

    def as_guide(self, printed: str) -> str:
        """What a command printed, with the guide's home and clone paths, to paste into the guide."""
        return printed.replace(str(REPO), f"{GUIDE_HOME}/fieldnode").replace(str(self.home), GUIDE_HOME)

    def ports(self, block: Block) -> dict[str, str]:
        real = self.loaders if block.section <= 3 and "nodes" not in block.options else self.nodes
        return dict(zip(GUIDE_PORTS, real, strict=True))

    def run(self, block: Block) -> None:
        if "background" in block.options:
            self.start_sim(block)
            return
        ports = self.ports(block)
        for command, shown in block.commands():
            line = command
            for guide, real in ports.items():
                line = re.sub(re.escape(guide) + r"(?!\d)", real, line)
            # The Wi-Fi password prompt is answered on stdin, as it is typed.
            proc = subprocess.run(["bash", "-c", line], input="plant-floor-password\n", stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.home, timeout=240)
            printed = proc.stdout
            for guide, real in sorted(ports.items(), key=lambda p: -len(p[1])):
                printed = re.sub(re.escape(real) + r"(?!\d)", guide, printed)
            if os.environ.get("FIELDNODE_GUIDE_SHOW"):
                print(f"$ {command}\n{self.as_guide(printed)}")
            fails = "fails" in block.options or any(s.startswith("error:") for s in shown.splitlines())
            assert (proc.returncode != 0) == fails, f"`{command}` exit status {proc.returncode}:\n{printed}"
            if block.transcript:
                check_output(command, self.expected(shown), printed, block.options)

    def start_sim(self, block: Block) -> None:
        ((command, shown),) = block.commands()
        self.sim = subprocess.Popen(["bash", "-c", f"exec {command}"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.home)
        lines = []
        for line in self.sim.stdout:  # the test's timeout bounds a sim that never gets there
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        printed = "".join(lines)
        check_output(command, self.expected(shown), printed, block.options)
        self.loaders = re.findall(r"rom-loader-\d+ .* port (\S+)", printed)
        self.nodes = re.findall(r"^\s+device \S+\s+port (\S+)", printed, re.M)
        assert len(self.loaders) == len(self.nodes) == len(GUIDE_PORTS), printed

    def stop(self) -> None:
        if self.sim is None:
            return
        self.sim.send_signal(signal.SIGINT)  # Ctrl-C, as the guide says
        try:
            rest, _ = self.sim.communicate(timeout=60)
        finally:
            self.sim.kill()
        assert self.sim.returncode == 0 and "stopping" in rest, rest


@pytest.fixture
def home() -> Iterator[Path]:
    # Short, like /home/tech: rich wraps a table's title to the table's width, and the keystore's
    # path is in the provisioning table's title.
    home = Path(tempfile.mkdtemp(prefix="fg-"))
    (home / "Downloads").mkdir()
    # Where step 1 has the technician save micropython.org's image: a stand-in with the real
    # layout (esptool checks its headers; nothing runs it).
    (home / "Downloads" / "ESP32_GENERIC-20251209-v1.29.0.bin").write_bytes(fake_firmware("esp32", 300 * 1024))
    yield home
    shutil.rmtree(home)


def test_the_field_guide_works_as_written_on_virtual_nodes_and_rom_loaders(home: Path) -> None:
    blocks = guide_blocks(GUIDE.read_text())
    assert [b for b in blocks if "background" in b.options], "the guide no longer starts `fieldnode sim`"
    assert {b.section for b in blocks} >= {1, 3, 4, 5}, "a step of the guide is no longer tested"
    walk = Walk(home)
    try:
        for block in blocks:
            walk.run(block)
    finally:
        walk.stop()


def test_shapes_tell_a_moved_line_and_a_changed_word_apart() -> None:
    # The checker itself: what the guide shows must be what is printed, in that order.
    printed = "3 frames verified\n┃ node ┃ reading ┃\n│ press-1 │ loop1 │\nreading /dev/ttyUSB0\n"
    same = "1 frames verified\n┃ node ┃ reading ┃\n│ press-2 │ loop1 │\nreading /dev/ttyUSB0"
    check_output("monitor", same, printed, set())
    with pytest.raises(AssertionError, match="not in this order"):
        check_output("monitor", "reading /dev/ttyUSB0\n1 frames verified\n┃ node ┃ reading ┃", printed, set())
    with pytest.raises(AssertionError, match="table cells"):
        check_output("monitor", "┃ node ┃ reading ┃\n│ press-1 │ pipe.temp │", printed, set())
    with pytest.raises(AssertionError, match="not in this order"):
        check_output("monitor", "┃ node ┃ value ┃", printed, set())

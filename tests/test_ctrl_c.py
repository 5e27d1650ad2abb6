"""Ctrl-C (SIGINT) stops the long-running commands wherever they were started; SIGTERM stops sim
and its nodes the same way.

A shell without job control (a script, CI, `make test &`) starts a command it puts in the
background with SIGINT ignored, and Python then installs no KeyboardInterrupt: `sim`, `monitor`
and a live `decode` started that way ran on after Ctrl-C or `kill -INT`. Each command here is
started exactly so (`trap '' INT; exec ...`), and sim is interrupted at several moments of its
start as well as once it runs (the live decode: test_capture_decode.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fieldnode.node.keystore import Keystore
from support.proclines import ProcessLines

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")
STOP_S = 120  # a safety net only: each stop takes a moment


def started_with_sigint_ignored(*args: str, **popen) -> subprocess.Popen:
    """`fieldnode ARGS` as a shell without job control starts it in the background."""
    return subprocess.Popen(["bash", "-c", "trap '' INT; exec \"$0\" \"$@\"", FIELDNODE, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _processes_in(directory: Path) -> list[int]:
    """Pids of processes whose working directory is under directory (a virtual node's is its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(Path(entry.joinpath("cwd").readlink())).startswith(str(directory)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("moment", [
    "starting 2 virtual node(s)",  # the first line: the nodes are about to boot
    "provisioning sim-2",  # the first node provisioned, the second not yet
    "Ctrl-C stops the nodes",  # running
])
def test_sim_stops_cleanly_on_ctrl_c_at_any_moment_of_its_start_even_started_with_sigint_ignored(tmp_path, moment):
    _stop_sim(started_with_sigint_ignored("sim", "--nodes", "2", "--dir", str(tmp_path)), moment,
              signal.SIGINT, tmp_path)


@pytest.mark.parametrize("moment", ["provisioning sim-2", "Ctrl-C stops the nodes"])
def test_sim_stops_its_nodes_on_sigterm_as_on_ctrl_c(tmp_path, moment):
    # The nodes run in sessions of their own: a sim ended by SIGTERM's default left them running.
    proc = subprocess.Popen([FIELDNODE, "sim", "--nodes", "2", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _stop_sim(proc, moment, signal.SIGTERM, tmp_path)


def test_demo_stops_its_nodes_on_sigterm(tmp_path):
    # The demo's nodes live in a temporary directory: TMPDIR puts it where _processes_in looks.
    proc = subprocess.Popen([FIELDNODE, "demo", "--nodes", "1", "--duration", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    running: list[int] = []
    out, err = _signalled(proc, "stdout", "sim-1: device", signal.SIGTERM,
                          before=lambda: running.extend(_processes_in(tmp_path)))
    assert running, "the demo's node was not running under TMPDIR"
    assert proc.returncode == 0 and "gateway counts" in out and "Traceback" not in err, (out, err)
    assert _processes_in(tmp_path) == []  # no node left running


def _stop_sim(proc: subprocess.Popen, moment: str, sig: signal.Signals, node_dirs: Path) -> None:
    """Sends sig once sim has printed moment; it must stop cleanly and leave no node running."""
    out, err = _signalled(proc, "stdout", moment, sig)
    assert proc.returncode == 0, (out, err)
    assert out.rstrip().endswith("stopping") and "Traceback" not in err, (out, err)
    assert _processes_in(node_dirs) == []  # no node left running


def _signalled(proc: subprocess.Popen, stream: str, text: str, sig: signal.Signals,
               before=lambda: None) -> tuple[str, str]:
    """Sends sig once proc has printed text on stream (calling before() first); -> its output
    once it ended. A process that does not end within STOP_S is killed, and the wait says so."""
    lines = ProcessLines(proc)
    try:
        lines.wait_for_text(stream, text, timeout=180)
        before()
        proc.send_signal(sig)
        return lines.finish(STOP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_monitor_stops_on_ctrl_c_even_started_with_sigint_ignored(tmp_path):
    keys = Keystore(tmp_path / "keys.json", [])
    keys.save()
    proc = started_with_sigint_ignored("monitor", "--udp", "127.0.0.1:0", "--keys", str(keys.path), "--json")
    out, err = _signalled(proc, "stderr", "listening on udp 127.0.0.1:", signal.SIGINT)
    assert proc.returncode == 0 and out == "" and "Traceback" not in err, err

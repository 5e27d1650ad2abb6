"""Which run a result belongs to: `make bench` stamps every result file with its run (an id, the
command, the date, the machine), and the report renders only a complete set from one run.

Figures from different runs are not comparable (another load, another machine, another commit):
putting them in one document as if measured together is what this module refuses.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

# Every benchmark of `make bench`: its results file is bench/results/<name>.json.
BENCHES = {
    "node_frame": ["bench/node_frame.py"],
    "frame_size": ["bench/frame_size.py"],
    "gateway": ["bench/gateway_throughput.py"],
    "flash": ["bench/flash_throughput.py"],
    "spool_flash": ["bench/spool_flash.py"],
    "node_memory": ["bench/node_memory.py"],
    "web": ["bench/web_chart.py"],
    "web_fleet": ["bench/web_fleet.py"],
    "web_live_load": ["bench/web_live_load.py"],
    "verify_v2": ["bench/verify_v2.py"],
    "spool_v2": ["bench/spool_v2.py"],
    "store_scaleout": ["bench/store_scaleout.py"],
    "update_transfer": ["bench/update_transfer.py"],
}


class MixedRuns(Exception):
    """The results at hand are not one complete run of every benchmark."""


def new_run_id() -> str:
    # UTC start time to the second, and the process id in case two runs start in the same second.
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} CPUs, {system}, Python {platform.python_version()}"


def stamp(results: Path, name: str, run: dict[str, Any]) -> None:
    """Records the run in the result the benchmark just wrote (bench/results/<name>.json)."""
    path = results / f"{name}.json"
    data = json.loads(path.read_text())
    data["run"] = run
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_one_run(results: Path) -> dict[str, dict[str, Any]]:
    """Every benchmark's result, all from one run; MixedRuns says what is missing or which runs mix."""
    data: dict[str, dict[str, Any]] = {}
    missing = []
    for name in BENCHES:
        path = results / f"{name}.json"
        if path.exists():
            data[name] = json.loads(path.read_text())
        else:
            missing.append(name)
    if missing:
        raise MixedRuns(f"no results for {', '.join(missing)}: run `make bench` for a complete set")
    ids = {name: (d.get("run") or {}).get("id") for name, d in data.items()}
    if None in ids.values() or len(set(ids.values())) != 1:
        by_run: dict[str, list[str]] = {}
        for name, run_id in ids.items():
            by_run.setdefault(run_id or "no run recorded", []).append(name)
        raise MixedRuns("results from different runs (" + "; ".join(
            f"{run_id}: {', '.join(names)}" for run_id, names in sorted(by_run.items()))
            + "): run `make bench` for one set")
    return data

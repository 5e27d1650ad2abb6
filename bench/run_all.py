"""`make bench`: every benchmark in one run, then docs/performance.md written from the results.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--report-only]

Each benchmark is its own script (run alone for one figure) writing bench/results/<name>.json.
This runs them one after another, so they do not compete for the CPUs, records the date, the
machine and the exact command next to each result (bench/results/runs.json), and renders the
performance document from the JSON files: the figures in the docs are the ones measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RUNS = RESULTS / "runs.json"

BENCHES = {
    "node_frame": ["bench/node_frame.py"],
    "frame_size": ["bench/frame_size.py"],
    "gateway": ["bench/gateway_throughput.py"],
    "flash": ["bench/flash_throughput.py"],
    "spool_flash": ["bench/spool_flash.py"],
    "node_memory": ["bench/node_memory.py"],
}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the benchmarks and write docs/performance.md.")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="shorter gateway runs (a smoke check, not figures)")
    ap.add_argument("--report-only", action="store_true", help="only render docs/performance.md from the results")
    args = ap.parse_args()
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else {}
    if not args.report_only:
        for name in args.only or BENCHES:
            cmd = [*BENCHES[name]] + (["--quick"] if args.quick and name == "gateway" else [])
            shown = " ".join([".venv/bin/python", *cmd])
            print(f"== {name}: {shown}", flush=True)
            started = time.time()
            proc = subprocess.run([sys.executable, *cmd], cwd=REPO)
            if proc.returncode != 0:
                print(f"{name} failed (exit {proc.returncode}); earlier results are kept", file=sys.stderr)
                return proc.returncode
            runs[name] = {"command": shown, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                          "seconds": round(time.time() - started, 1), "machine": machine(),
                          "quick": bool(args.quick and name == "gateway")}
            RESULTS.mkdir(parents=True, exist_ok=True)
            RUNS.write_text(json.dumps(runs, indent=1) + "\n")
    sys.path.insert(0, str(REPO / "bench"))
    from report import write_report
    path = write_report(RESULTS, runs)
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

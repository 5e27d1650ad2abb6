"""`make bench`: every benchmark in one run, then docs/performance.md written from the results.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--report-only]

Each benchmark is its own script (run alone for one figure) writing bench/results/<name>.json.
This runs them one after another, so they do not compete for the CPUs, stamps each result with
the run it belongs to (one id for the whole run, the command, the date, the machine; see
bench/runs.py), and renders the performance document from the JSON files: the figures in the
docs are the ones measured, all in the same run. `--only` refreshes some results (for working
on a benchmark); the document is then not rewritten, since it would mix runs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "bench"))

from report import write_report  # noqa: E402
from runs import BENCHES, MixedRuns, machine, new_run_id, stamp  # noqa: E402


def run_benches(names: list[str], quick: bool) -> int:
    run_id = new_run_id()
    for name in names:
        cmd = [*BENCHES[name]] + (["--quick"] if quick and name == "gateway" else [])
        shown = " ".join([".venv/bin/python", *cmd])
        print(f"== {name}: {shown} (run {run_id})", flush=True)
        started = time.time()
        proc = subprocess.run([sys.executable, *cmd], cwd=REPO)
        if proc.returncode != 0:
            print(f"{name} failed (exit {proc.returncode}); the run is incomplete", file=sys.stderr)
            return proc.returncode
        stamp(RESULTS, name, {"id": run_id, "command": shown, "machine": machine(),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                              "seconds": round(time.time() - started, 1), "quick": quick and name == "gateway"})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="Run the benchmarks and write docs/performance.md.")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES),
                    help="run only these benchmarks (their results only: the document is not rewritten)")
    ap.add_argument("--quick", action="store_true", help="shorter gateway runs (a smoke check, not figures)")
    ap.add_argument("--report-only", action="store_true", help="only render docs/performance.md from the results")
    args = ap.parse_args()
    if not args.report_only:
        status = run_benches(args.only or list(BENCHES), args.quick)
        if status or args.only:
            return status
    try:
        path = write_report(RESULTS)
    except MixedRuns as exc:
        print(f"docs/performance.md not written: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

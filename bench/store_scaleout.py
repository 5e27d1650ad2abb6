"""Store scale-out: frames/s verified, decoded and stored by one and two gateway processes on one
PostgreSQL database, against SQLite on one core, in one run.

    .venv/bin/python bench/store_scaleout.py [--quick] [--out bench/results/store_scaleout.json]

Each process does what a gateway's commit thread does (bench/gateway_throughput.store_all: batches
of 256 frames of 6 readings from 100 devices, one transaction each, the housekeeping round every
second), with the durability the gateway promises before it answers (SQLite synchronous=FULL;
PostgreSQL synchronous_commit=on with fsync on). Variants:

- sqlite-1: one process, one database file (the embedded default; --workers adds shards);
- postgresql-1: one process;
- postgresql-2: two processes on one database, each with its own half of the devices (two
  gateways, each node talking to one of them: how a site spreads its nodes);
- postgresql-2-shared: two processes, every device's frames alternating between them (the worst
  case: both gateways wait for each other's rows of the same devices and keys).

PostgreSQL is a private cluster started for the run (tests/support/postgres.Cluster, unix socket)
on this same machine: its server processes share the CPUs with the gateway processes, which a
separate database machine would not. Rounds interleave the variants; every round is kept.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from gateway_throughput import SIX_READINGS, _run_processes, _store_worker  # noqa: E402
from support.gateway_peers import Nodes  # noqa: E402
from support.postgres import Cluster  # noqa: E402

DEVICES = 100
VARIANTS = ("sqlite-1", "postgresql-1", "postgresql-2", "postgresql-2-shared")


def _wal_position(cluster: Cluster) -> str:
    import psycopg
    with psycopg.connect(cluster.uri()) as conn:
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def _wal_since(cluster: Cluster, position: str) -> int:
    import psycopg
    with psycopg.connect(cluster.uri()) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (position,)).fetchone()[0])


def _parts(variant: str, frames: list[bytes]) -> list[list[bytes]]:
    if variant.endswith("-shared"):
        return [frames[0::2], frames[1::2]]  # every device's frames alternate between the two
    if variant.endswith("-2"):  # frames[i] is device i % DEVICES: even devices to one, odd to the other
        return [[f for i, f in enumerate(frames) if i % DEVICES % 2 == w] for w in (0, 1)]
    return [frames]


def bench(n_frames: int, rounds: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    cluster = Cluster({"fsync": "on", "synchronous_commit": "on"}).start()
    out: dict = {"cpus": os.cpu_count(), "frames": n_frames, "rounds": rounds, "devices": DEVICES,
                 "readings_per_frame": len(SIX_READINGS), "batch": 256,
                 "frames_per_s": {v: [] for v in VARIANTS}}
    try:
        import psycopg
        with psycopg.connect(cluster.uri()) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        with tempfile.TemporaryDirectory() as tmp:
            nodes = Nodes(Path(tmp) / "site.json", n=DEVICES)
            frames = [nodes.frame(i % DEVICES, records=SIX_READINGS) for i in range(n_frames)]
            for r in range(rounds):
                for variant in VARIANTS:
                    db = str(Path(tmp) / f"{variant}-{r}.db") if variant.startswith("sqlite") \
                        else cluster.new_database().dsn
                    parts = _parts(variant, frames)
                    wal_at = _wal_position(cluster)
                    wall = _run_processes(ctx, _store_worker, [(db, w, str(nodes.path), p)
                                                               for w, p in enumerate(parts)])
                    rate = round(n_frames / wall)
                    print(f"store [{variant}, round {r + 1}]: {rate:,} frames/s", flush=True)
                    out["frames_per_s"][variant].append(rate)
                    if variant == "postgresql-1":  # what the server writes for it: sizing its disk
                        out.setdefault("wal_bytes_per_frame", []).append(round(_wal_since(cluster, wal_at) / n_frames))
    finally:
        cluster.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/store_scaleout.json")
    args = ap.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "loadavg_at_start": os.getloadavg()},
               "store": bench(4096 if args.quick else 30720, 2 if args.quick else 5)}
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

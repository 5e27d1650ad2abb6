"""Gateway throughput: verify+decode, verify+decode+store, and end to end over loopback CoAP.

    .venv/bin/python bench/gateway_throughput.py [--quick] [--out bench/results/gateway.json]

1. verify+decode frames/s on the frame-v1 vectors (node-encoded frames) for
   - ours: fieldnode.frame.Verifier.verify (MAC, kind, SenML check, device check, Frame object),
   - pycose 1.1.0 (with cbor2 5.9): CoseMessage.decode + verify_tag + cbor2.loads of the payload,
   - the limit: HMAC over the (pre-built) MAC structure + compare + cbor2.loads, nothing else;
   same frames, one run, reported as ratios. The target: ours >= 2.5x pycose, >= 0.7x the limit.
2. verify+decode+store into SQLite on one core (batches of 256, one transaction each), with the
   durability the gateway uses by default (synchronous=FULL) and with NORMAL, with and without
   MQTT outbox rows.
3. end to end: the gateway (this process) and N virtual nodes (another process, asyncio, one UDP
   socket each, RFC 7252 retransmission): closed loop (each node sends its next frame when the
   last is answered: the sustained rate) and paced (one frame a second per node: latency at a
   realistic load); zero loss is checked, p50/p99 send->answer reported. For comparison, an
   aiocoap server whose resource does nothing but answer 2.04 under the same closed-loop load.

Figures depend on the machine and on what else runs on it; the JSON records the CPU count and
load average next to them.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import cbor2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fieldnode.frame import KIND_NAMES, TAG_LENGTH, Verifier, mac_structure, parse_protected, split_envelope  # noqa: E402
from fieldnode.gateway import GatewayThread  # noqa: E402
from fieldnode.gateway.mqtt import ReadingMessages  # noqa: E402
from fieldnode.gateway.store import Store, StoreItem  # noqa: E402
from support.gateway_peers import Nodes, free_port  # noqa: E402
from support.senders import run_closed, run_paced  # noqa: E402


def best_rates(fns: dict, n_items: int, seconds: float) -> dict:
    """Items/s of each fn() (each handles n_items): rounds that run every fn once, interleaved so
    all see the same machine load, best time of each over `seconds`."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: n_items / v for k, v in best.items()}


def bench_verify(seconds: float) -> dict:
    from pycose.headers import KID
    from pycose.keys import SymmetricKey
    from pycose.messages import CoseMessage

    vectors = json.loads((REPO / "tests/vectors/frame-v1.json").read_text())
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in vectors["frames"]}
    sets = {"all vectors": [c for c in vectors["frames"]],
            "telemetry-6": [c for c in vectors["frames"] if c["name"] == "telemetry-6"]}
    out = {}
    for label, cases in sets.items():
        frames = [bytes.fromhex(c["frame"]) for c in cases] * (200 // len(cases))
        verifier = Verifier(table.get, None, accept_kinds=KIND_NAMES)
        pre = []
        for f in frames:
            p, pl, tag = split_envelope(f)
            alg, kid, _, _ = parse_protected(p)
            pre.append((table[kid][0], mac_structure(p, pl), TAG_LENGTH[alg], tag, pl))
        pycose_keys = {kid: SymmetricKey(k=key) for kid, (key, _) in table.items()}

        def ours():
            for f in frames:
                verifier.verify(f)

        def pycose():
            for f in frames:
                msg = CoseMessage.decode(f)
                msg.key = pycose_keys[msg.get_attr(KID)]
                if not msg.verify_tag():
                    raise AssertionError("pycose rejected a vector")
                cbor2.loads(msg.payload)

        def limit():
            digest, compare, loads = hmac.digest, hmac.compare_digest, cbor2.loads
            for key, ms, n, tag, pl in pre:
                compare(digest(key, ms, "sha256")[:n], tag)
                loads(pl)

        rates = best_rates({"ours": ours, "pycose": pycose, "limit": limit}, len(frames), seconds)
        r_ours, r_pycose, r_limit = rates["ours"], rates["pycose"], rates["limit"]
        out[label] = {"frames": len(frames), "ours_per_s": round(r_ours), "pycose_per_s": round(r_pycose),
                      "limit_per_s": round(r_limit), "ours_vs_pycose": round(r_ours / r_pycose, 2),
                      "ours_vs_limit": round(r_ours / r_limit, 2)}
        print(f"verify+decode [{label}]: ours {r_ours:,.0f}/s, pycose {r_pycose:,.0f}/s, limit {r_limit:,.0f}/s "
              f"-> {r_ours / r_pycose:.1f}x pycose, {r_ours / r_limit:.2f}x limit")
    return out


def bench_store(n_frames: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=100)
        keys = nodes.keystore()
        six = [{"n": n, "u": u, "v": v} for n, u, v in (("temp", "Cel", 23.45), ("hum", "%RH", 41.2),
               ("press", "Pa", 101325.0), ("loop1", "A", 0.01234), ("vib_rms", "m/s2", 0.734),
               ("pulses", "count", 1234))]
        frames = [nodes.frame(i % 100, records=six) for i in range(n_frames)]
        for sync in ("FULL", "NORMAL"):
            for mqtt in (False, True):
                db = Path(tmp) / f"store-{sync}-{mqtt}.db"
                store = Store(db, synchronous=sync, outbox=ReadingMessages("fieldnode", "bench") if mqtt else None)
                store.open()
                verifier = Verifier(keys.lookup)
                t = time.perf_counter()
                for i in range(0, len(frames), 256):
                    items = [StoreItem(verifier.verify(f), f, time.time(), "127.0.0.1:5683", "")
                             for f in frames[i:i + 256]]
                    store.commit(items, {}, None)
                rate = len(frames) / (time.perf_counter() - t)
                store.close()
                key = f"sync={sync.lower()}" + (", mqtt outbox" if mqtt else "")
                out[key] = round(rate)
                print(f"verify+decode+store [{key}]: {rate:,.0f} frames/s (6 readings each, batches of 256)")
    return out


def _sender_process(mode: str, addr: tuple, frames: list[list[bytes]], conn) -> None:
    runner = run_closed(addr, frames) if mode == "closed" else run_paced(addr, frames, 1.0)
    r = asyncio.run(runner)
    conn.send({"sent": r.sent, "answered": r.acked, "codes": r.codes, "gave_up": r.gave_up,
               "retransmissions": r.retransmissions, "elapsed_s": round(r.elapsed, 3),
               "p50_ms": round(r.percentile(50) * 1000, 2), "p99_ms": round(r.percentile(99) * 1000, 2),
               "max_ms": round(max(r.latencies) * 1000, 2) if r.latencies else None})
    conn.close()


def _load(mode: str, addr: tuple, frames: list[list[bytes]]) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_sender_process, args=(mode, addr, frames, child))
    p.start()
    result = parent.recv()
    p.join()
    return result


def bench_e2e(sizes: list[int], closed_frames: int, paced_seconds: int) -> dict:
    out: dict = {"closed_loop": {}, "paced_1_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=max(sizes))
        for n in sizes:
            for mode, per_node in (("closed", closed_frames), ("paced", paced_seconds)):
                frames = [[nodes.frame(i) for _ in range(per_node)] for i in range(n)]
                with GatewayThread(nodes.keystore(), Path(tmp) / f"e2e-{n}-{mode}.db", ("127.0.0.1", 0)) as gt:
                    r = _load(mode, gt.address, frames)
                    counts = gt.call(lambda: dict(gt.gateway.counts))
                total = n * per_node
                r["stored"] = counts.get("accepted", 0)
                r["zero_loss"] = r["stored"] == total and r["codes"] == {"2.04": total}
                r["rate_per_s"] = round(total / r["elapsed_s"])
                out["closed_loop" if mode == "closed" else "paced_1_per_s"][str(n)] = r
                print(f"end to end [{mode}, {n} nodes]: {r['rate_per_s']:,} frames/s, p50 {r['p50_ms']} ms, "
                      f"p99 {r['p99_ms']} ms, zero loss {r['zero_loss']}, retransmissions {r['retransmissions']}")
    return out


def bench_aiocoap_noop(n: int, per_node: int) -> dict:
    """An aiocoap server that only answers 2.04 (no verify, no store), same closed-loop load."""
    import aiocoap
    import aiocoap.resource as resource

    class Noop(resource.Resource):
        async def render_post(self, request):
            return aiocoap.Message(code=aiocoap.CHANGED)

    ready = threading.Event()
    state: dict = {}

    def serve() -> None:
        async def main() -> None:
            site = resource.Site()
            site.add_resource(["f"], Noop())
            port = free_port(socket.SOCK_DGRAM)
            ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
            state["addr"], state["ctx"], state["loop"] = ("127.0.0.1", port), ctx, asyncio.get_running_loop()
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()
            await ctx.shutdown()
        asyncio.run(main())

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    ready.wait(10)
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=n)
        frames = [[nodes.frame(i) for _ in range(per_node)] for i in range(n)]
    r = _load("closed", state["addr"], frames)
    state["loop"].call_soon_threadsafe(state["stop"].set)
    th.join(10)
    r["rate_per_s"] = round(n * per_node / r["elapsed_s"])
    print(f"aiocoap no-op server [closed, {n} nodes]: {r['rate_per_s']:,} requests/s, p99 {r['p99_ms']} ms")
    return {str(n): r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/gateway.json")
    args = ap.parse_args()
    q = args.quick
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg()},
        "verify_decode": bench_verify(2.0 if q else 10.0),
        "verify_decode_store": bench_store(2048 if q else 10240),
        "end_to_end": bench_e2e([50, 100] if q else [50, 100, 200, 400, 800], 5 if q else 20, 3 if q else 10),
        "aiocoap_noop_server": bench_aiocoap_noop(100, 5 if q else 20),
    }
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()

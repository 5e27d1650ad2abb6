"""Gateway throughput: verify+decode, verify+decode+store, and end to end over loopback CoAP.

    .venv/bin/python bench/gateway_throughput.py [--quick] [--out bench/results/gateway.json] [--max-nodes N]

1. verify+decode frames/s on the frame-v1 vectors (node-encoded frames) for
   - ours: fieldnode.wire.frame.Verifier.verify (MAC, kind, SenML check, device check, Frame object),
   - pycose 1.1.0 (with cbor2 5.9): CoseMessage.decode + verify_tag + cbor2.loads of the payload,
   - the limit: HMAC over the (pre-built) MAC structure + compare + cbor2.loads, nothing else;
   same frames, one run, reported as ratios. The target: ours >= 2.5x pycose, >= 0.7x the limit.
2. verify+decode+store into SQLite on one core (batches of 256, one transaction each), with the
   durability the gateway uses by default (synchronous=FULL) and with NORMAL, with and without
   MQTT outbox rows. The clock also covers what the gateway's commit thread does besides: the
   housekeeping round each second, and moving every new sample into the indexed table.
3. end to end: the gateway (this process) and N virtual nodes (another process, asyncio, one UDP
   socket each, RFC 7252 retransmission): closed loop (each node sends its next frame when the
   last is answered: the sustained rate) and paced (one frame a second per node: latency at a
   realistic load); zero loss is checked, p50/p99 send->answer reported. For comparison, an
   aiocoap server whose resource does nothing but answer 2.04 under the same closed-loop load.

Figures depend on the machine and on what else runs on it; the JSON records the CPU count and
load average next to them. Where a figure is measured in rounds (1, 2, 4), the JSON keeps every
round and bench/report.py judges the target on the median round.
4. workers: verify+decode in 1..N processes at once; verify+decode+store with N processes, each
   storing the devices it owns into its own shard (what `fieldnode gateway --workers N` does), and,
   for comparison, N processes committing to one database (what it did before shards); and the
   cost of handing a datagram to its device's worker over the Unix socket.
5. node sweep: paced load at doubling node counts until a frame is lost or retransmitted: the
   highest sustained node count at 1 frame/s with zero loss. A PNG plot of throughput against
   node count goes to docs/gateway-throughput.png.
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
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cbor2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fieldnode.wire.frame import KIND_NAMES, TAG_LENGTH, Verifier, mac_structure, parse_protected, split_envelope  # noqa: E402
from fieldnode.gateway import GatewayThread  # noqa: E402
from fieldnode.gateway.mqtt import ReadingMessages  # noqa: E402
from fieldnode.gateway.handover import handover_address, pack_handover, unpack_handover  # noqa: E402
from fieldnode.gateway.protocol import Gateway  # noqa: E402
from fieldnode.store.owners import owner_of  # noqa: E402
from fieldnode.store.records import Health, StoreItem  # noqa: E402
from fieldnode.store.sqlite.shards import create_shards  # noqa: E402
from fieldnode.store.backend import make_writer  # noqa: E402
from fieldnode.store.sqlite.writer import Store  # noqa: E402
from fieldnode.store.target import parse_db  # noqa: E402
from support.gateway_peers import Nodes  # noqa: E402
from support.ports import claimed_port  # noqa: E402
from support.senders import run_closed, run_paced  # noqa: E402

# The reference frame's readings (vector telemetry-6), for the store figures.
SIX_READINGS = [{"n": n, "u": u, "v": v} for n, u, v in (
    ("temp", "Cel", 23.45), ("hum", "%RH", 41.2), ("press", "Pa", 101325.0), ("loop1", "A", 0.01234),
    ("vib_rms", "m/s2", 0.734), ("pulses", "count", 1234))]


def interleaved_rounds(fns: dict, n_items: int, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Items/s of each fn() (each handles n_items) in each of `rounds` rounds. A round runs every
    fn in turn, each as often as fills its share of `seconds`, so that all see the same machine
    load; a ratio between two fns is then taken round by round."""
    for fn in fns.values():
        fn()
    t = time.perf_counter()
    for fn in fns.values():
        fn()
    repeats = max(1, int(seconds / rounds / (time.perf_counter() - t)))
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(repeats):
                fn()
            rates[k].append(repeats * n_items / (time.perf_counter() - t))
    return rates


def bench_verify(seconds: float, rounds: int) -> dict:
    vectors = json.loads((REPO / "tests/vectors/frame-v1.json").read_text())
    table = {bytes.fromhex(c["kid"]): (bytes.fromhex(c["key"]), c["alg"]) for c in vectors["frames"]}
    sets = {"all vectors": list(vectors["frames"]),
            "telemetry-6": [c for c in vectors["frames"] if c["name"] == "telemetry-6"]}
    out = {}
    for label, cases in sets.items():
        frames = [bytes.fromhex(c["frame"]) for c in cases] * (200 // len(cases))
        rates = interleaved_rounds(_verifiers(frames, table), len(frames), rounds, seconds)
        out[label] = {"frames": len(frames), "rounds_per_s": {k: [round(r) for r in v] for k, v in rates.items()}}
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"verify+decode [{label}], median of {rounds} rounds: ours {med['ours']:,.0f}/s, pycose "
              f"{med['pycose']:,.0f}/s, limit {med['limit']:,.0f}/s (pads kept {med['limit_pads']:,.0f}/s)")
    return out


def _verifiers(frames: list[bytes], table: dict) -> dict:
    """The same frames verified and decoded by ours, by pycose, and by the bare limit (HMAC and
    cbor2.loads, nothing else), with and without each key's HMAC pads kept."""
    from pycose.headers import KID
    from pycose.keys import SymmetricKey
    from pycose.messages import CoseMessage

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

    # The same limit with each key's HMAC pads absorbed once (an hmac object per key, copied
    # per frame), as our verifier keeps them: the stricter yardstick.
    keyed = {key: hmac.new(key, digestmod="sha256") for key, _ in table.values()}
    pre_keyed = [(keyed[key], ms, n, tag, pl) for key, ms, n, tag, pl in pre]

    def limit_pads_kept():
        compare, loads = hmac.compare_digest, cbor2.loads
        for base, ms, n, tag, pl in pre_keyed:
            h = base.copy()
            h.update(ms)
            compare(h.digest()[:n], tag)
            loads(pl)

    return {"ours": ours, "pycose": pycose, "limit": limit, "limit_pads": limit_pads_kept}


def store_all(store: Store, verifier: Verifier, frames: list[bytes], batch: int = 256) -> None:
    """What the gateway's commit thread does with these frames: batches of `batch` committed one
    after another, the housekeeping round every second (which moves new samples into the
    indexed table), and at the end every sample moved there, so the clock covers indexing them."""
    health = Health(0, os.getpid(), "127.0.0.1:5683", time.time())
    housekept = time.perf_counter()
    for i in range(0, len(frames), batch):
        items = [StoreItem(verifier.verify(f), f, time.time(), "127.0.0.1:5683", "") for f in frames[i:i + batch]]
        store.commit(items, {}, None)
        if time.perf_counter() - housekept >= 1.0:
            store.housekeeping({}, health)
            housekept = time.perf_counter()
    store.index_recent()


def bench_store(n_frames: int, rounds: int) -> dict[str, list[int]]:
    """frames/s of every round (each into a new database, the variants interleaved so that all
    see the same machine load): one round is at the mercy of a shared CPU's noise."""
    every: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=100)
        keys = nodes.keystore()
        frames = [nodes.frame(i % 100, records=SIX_READINGS) for i in range(n_frames)]
        for r in range(rounds):
            for sync in ("FULL", "NORMAL"):
                for mqtt in (False, True):
                    db = Path(tmp) / f"store-{sync}-{mqtt}-{r}.db"
                    store = Store(db, synchronous=sync,
                                  outbox=ReadingMessages("fieldnode", "bench") if mqtt else None)
                    store.open()
                    verifier = Verifier(keys.lookup)
                    t = time.perf_counter()
                    store_all(store, verifier, frames)
                    rate = len(frames) / (time.perf_counter() - t)
                    store.close()
                    every.setdefault(f"sync={sync.lower()}" + (", mqtt outbox" if mqtt else ""), []).append(round(rate))
    for key, rates in every.items():
        print(f"verify+decode+store [{key}]: median {statistics.median(rates):,.0f} frames/s of rounds "
              f"{', '.join(f'{r:,}' for r in rates)} (6 readings each, batches of 256)")
    return every


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
            with claimed_port() as port:  # aiocoap does not say which port a port-0 bind got
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


def bench_hostile(n_datagrams: int, rounds: int = 3) -> dict:
    """Hostile datagrams (support/hostile.py: malformed, truncated, tampered, replayed, foreign,
    oversized, odd CoAP) refused per second, fed straight into a running gateway's datagram handler
    on its event loop, as test_gateway_hostile's direct phase does; every round's figure."""
    import random
    from support.hostile import Attacks, request
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=3)
        attacks = Attacks(nodes, Nodes(Path(tmp) / "stranger.json", n=1, first=99))
        kinds = [k for k in Attacks.KINDS if k != "retransmit"]
        for k in range(rounds):
            with GatewayThread(nodes.keystore(), Path(tmp) / f"hostile-{k}.db", ("127.0.0.1", 0),
                               synchronous="NORMAL") as gt:
                real = ("127.0.0.1", 9)
                for i in range(3):  # the material the attacks tamper with, replay and duplicate
                    frame = nodes.frame(i)
                    attacks.sent.append(frame)
                    gt.call(gt.gateway.datagram_received, request(frame, i), real)
                r = random.Random(k)
                sources = [("127.0.0.1", 20000 + s) for s in range(3)]
                datagrams = [attacks.build(r.choice(kinds), r.getrandbits(32), n & 0xFFFF, sources[n % 3])[:2]
                             for n in range(n_datagrams)]

                def feed(gw=gt.gateway, datagrams=datagrams) -> None:
                    for data, addr in datagrams:
                        gw.datagram_received(data, addr)

                t = time.perf_counter()
                gt.call(feed)
                gt.call(gt.gateway.drain)
                rates.append(round(n_datagrams / (time.perf_counter() - t)))
    print(f"hostile datagrams refused: {', '.join(f'{x:,}' for x in rates)} /s (rounds)")
    return {"datagrams": n_datagrams, "per_s_rounds": rates}


def bench_node_sweep(start: int, limit: int, seconds: int) -> dict:
    """Paced load (one frame a second per node) at doubling node counts until a run loses a frame,
    needs a retransmission, or reaches `limit`: the highest sustained count with zero loss.
    The senders share the machine with the gateway (one process each), so on a small machine the
    senders' own CPU is part of what limits the figure."""
    out: dict = {}
    best = 0
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=limit)
        n = start
        while n <= limit:
            frames = [[nodes.frame(i) for _ in range(seconds)] for i in range(n)]
            with GatewayThread(nodes.keystore(), Path(tmp) / f"sweep-{n}.db", ("127.0.0.1", 0)) as gt:
                r = _load("paced", gt.address, frames)
                counts = gt.call(lambda: dict(gt.gateway.counts))
            total = n * seconds
            r["stored"] = counts.get("accepted", 0)
            r["zero_loss"] = r["stored"] == total and r["codes"] == {"2.04": total} and r["retransmissions"] == 0
            r["rate_per_s"] = round(total / r["elapsed_s"])
            out[str(n)] = r
            print(f"node sweep [{n} nodes at 1 frame/s]: {r['rate_per_s']:,} frames/s, p99 {r['p99_ms']} ms, "
                  f"retransmissions {r['retransmissions']}, zero loss {r['zero_loss']}")
            if not r["zero_loss"]:
                break
            best = n
            n *= 2
    return {"runs": out, "highest_zero_loss_nodes": best}


def _store_worker(db: str, shard: int, keys_path: str, frames: list[bytes], start, conn) -> None:
    from fieldnode.node.keystore import Keystore
    store = make_writer(parse_db(db), shard=shard)  # SQLite for a path, PostgreSQL for a URI
    store.open()
    verifier = Verifier(Keystore.load(Path(keys_path)).lookup)
    start.wait()
    t = time.perf_counter()
    store_all(store, verifier, frames)
    conn.send(time.perf_counter() - t)
    store.close()


def _verify_worker(keys_path: str, frames: list[bytes], start, conn) -> None:
    from fieldnode.node.keystore import Keystore
    verifier = Verifier(Keystore.load(Path(keys_path)).lookup)
    start.wait()
    t = time.perf_counter()
    for f in frames:
        verifier.verify(f)
    conn.send(time.perf_counter() - t)


def _run_processes(ctx, target, arg_lists: list[tuple]) -> float:
    """Starts one process per argument tuple, lets them go at once; the wall time until all are done."""
    start = ctx.Event()
    procs, pipes = [], []
    for args in arg_lists:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(*args, start, child))
        p.start()
        procs.append(p)
        pipes.append(parent)
    time.sleep(1.0)  # every process loaded and waiting
    t = time.perf_counter()
    start.set()
    for parent in pipes:
        parent.recv()
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return wall


def bench_workers(n_frames: int, rounds: int = 3) -> dict:
    """What running the gateway as N worker processes (`--workers N`) buys: the CPU part
    (verify+decode) in N processes at once; verify+decode+store with each process writing the
    devices it owns into its own shard, as the gateway's workers do; the same with N processes
    committing to one database (the design before shards), for comparison. Every round is kept."""
    ctx = multiprocessing.get_context("spawn")
    out: dict = {"cpus": os.cpu_count(), "frames": n_frames, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "site.json", n=100)
        frames = [nodes.frame(i % 100, records=SIX_READINGS) for i in range(n_frames)]
        devices = [nodes.devices[i % 100] for i in range(n_frames)]
        keys = str(nodes.path)
        counts = sorted({1, 2, os.cpu_count() or 1})
        labels = ("verify_decode", "verify_decode_store", "verify_decode_store_one_db")
        every: dict[str, dict[str, list[int]]] = {label: {str(w): [] for w in counts} for label in labels}
        # Rounds interleave the worker counts, so a slow spell on this shared machine does not
        # fall on one count only.
        for r in range(rounds):
            for label in labels:
                for workers in counts:
                    db = Path(tmp) / f"{label}-{workers}-{r}.db"
                    if label == "verify_decode":
                        wall = _run_processes(ctx, _verify_worker, [(keys, frames[w::workers]) for w in range(workers)])
                    elif label == "verify_decode_store":
                        create_shards(db, workers)
                        parts = [[f for f, d in zip(frames, devices, strict=True) if owner_of(d, workers) == w]
                                 for w in range(workers)]
                        wall = _run_processes(ctx, _store_worker,
                                              [(str(db), w, keys, parts[w]) for w in range(workers)])
                        if workers > 1:
                            out["shard_frames"] = {str(workers): [len(p) for p in parts]}
                    else:
                        create_shards(db, 1)
                        wall = _run_processes(ctx, _store_worker,
                                              [(str(db), 0, keys, frames[w::workers]) for w in range(workers)])
                    print(f"workers [{label}, {workers} process(es), round {r + 1}]: {n_frames / wall:,.0f} frames/s")
                    every[label][str(workers)].append(round(n_frames / wall))
        for label in labels:
            out[label] = {"rounds_per_s": every[label]}
        out["hand_over"] = bench_hand_over(frames[:20000])
    return out


def bench_hand_over(frames: list[bytes]) -> dict:
    """µs a datagram costs to hand to its device's worker: what the receiving worker does (find
    the device's owner in the undecoded frame, prefix the node's address, send on the Unix
    socket) and what the owner does besides its usual handling (receive, take the address off,
    decode the CoAP message once more)."""
    from fieldnode.wire import coap
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Nodes(Path(tmp) / "k.json", n=1)
        gw = Gateway(nodes.keystore(), Path(tmp) / "unused.db", workers=2)
    datagrams = [coap.encode(coap.Message(coap.CON, coap.POST, i & 0xFFFF, b"\x01\x02",
                                          [(coap.URI_PATH, b"f")], f)) for i, f in enumerate(frames)]
    owner_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    owner_sock.bind(handover_address(f"bench-{os.getpid()}", 1))
    owner_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(handover_address(f"bench-{os.getpid()}", 1))  # connected, as the gateway's PeerLink
    addr = ("192.0.2.10", 40000)
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for i in range(0, len(datagrams), 8):  # in bursts the queue holds (max_dgram_qlen: often 10)
            for data in datagrams[i:i + 8]:
                msg = coap.decode(data)
                gw._owner(msg.payload)
                sender.send(pack_handover(data, addr))
            for _ in datagrams[i:i + 8]:
                unpack_handover(owner_sock.recv(2048))
        rounds.append(round((time.perf_counter() - t) / len(datagrams) * 1e6, 2))
    owner_sock.close()
    sender.close()
    return {"us_per_datagram_rounds": rounds, "datagrams": len(datagrams)}


def plot(results: dict, path: Path) -> None:
    """Gateway throughput against node count (closed loop and paced), as a PNG for the docs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    closed = results["end_to_end"]["closed_loop"]
    xs = sorted(int(k) for k in closed)
    ax.plot(xs, [closed[str(x)]["rate_per_s"] for x in xs], "o-", label="closed loop (nodes emptying their queues)")
    sweep = results.get("node_sweep", {}).get("runs") or results["end_to_end"]["paced_1_per_s"]
    xs2 = sorted(int(k) for k in sweep)
    ax.plot(xs2, [sweep[str(x)]["rate_per_s"] for x in xs2], "s-", label="paced, 1 frame/s per node (offered = nodes)")
    lost = [x for x in xs2 if not sweep[str(x)].get("zero_loss", True)]
    if lost:
        ax.plot(lost, [sweep[str(x)]["rate_per_s"] for x in lost], "rx", markersize=10, label="loss or retransmission")
    noop = results.get("aiocoap_noop_server", {})
    for n, r in noop.items():
        ax.axhline(r["rate_per_s"], color="grey", linestyle=":", label=f"aiocoap no-op server ({n} nodes)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # paced rates (= node count) and closed-loop capacity differ by 10-100x
    ax.set_xlabel("virtual nodes (one UDP socket each)")
    ax.set_ylabel("frames stored per second")
    ax.set_title(f"fieldnode gateway on {results['machine']['cpus']} CPUs: verify + store + answer over CoAP")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"plot written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/gateway.json")
    ap.add_argument("--plot", type=Path, default=REPO / "docs/gateway-throughput.png")
    ap.add_argument("--max-nodes", type=int, default=12800,
                    help="upper end of the paced node sweep (one UDP socket a node: mind ulimit -n)")
    args = ap.parse_args()
    q = args.quick
    store_rounds = bench_store(2048 if q else 30720, 3 if q else 5)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg()},
        "verify_decode": bench_verify(2.0 if q else 10.0, 5 if q else 9),
        "verify_decode_store": store_rounds,
        "workers": bench_workers(4096 if q else 30720, 1 if q else 3),
        "end_to_end": bench_e2e([50, 100] if q else [50, 100, 200, 400, 800], 5 if q else 20, 3 if q else 10),
        "node_sweep": bench_node_sweep(100 if q else 400, 400 if q else args.max_nodes, 3 if q else 10),
        "aiocoap_noop_server": bench_aiocoap_noop(100, 5 if q else 20),
        "hostile": bench_hostile(5000 if q else 50000, 1 if q else 3),
    }
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results written to {args.out}")
    plot(results, args.plot)


if __name__ == "__main__":
    main()

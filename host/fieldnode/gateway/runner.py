"""Running the gateway as a program: until Ctrl-C/SIGTERM, with live output, one or N workers.

With N workers every worker is a process with its own socket bound with SO_REUSEPORT to the
same address; the kernel spreads datagrams over them by a hash of the source address and port.
Each device belongs to one worker (store.owners.owner_of), which keeps its replay window, writes its
frames to that worker's own database file (a shard) and publishes its readings to MQTT; a worker
hands any other device's datagram to its owner (see server.py). The parent only watches.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..node.keystore import Keystore
from ..store.backend import prepare_workers
from ..store.sqlite.shards import MAX_SHARDS, shard_path, shard_paths
from ..store.target import PgTarget, Target
from .live import LinePrinter, summary_line
from .mqtt import MqttUrl
from .events import format_source
from .protocol import Gateway
from .status import read_status
from .writerlock import check_free


@dataclass
class Options:
    listen: tuple[str, int]
    db: Target
    keys: Path
    mqtt: MqttUrl | None
    site: str | None
    workers: int = 1
    quiet: bool = False
    summary: float = 60.0
    synchronous: str = "FULL"
    mqtt_discovery: str | None = None  # Home Assistant discovery prefix
    mqtt_commands: bool = False
    node_timeout: float = 300.0
    strict_keys: bool = False  # refuse a keystore other users can read or write (default: warn)
    http: str | None = None  # HOST:PORT of the web page served beside the gateway (--http)
    web: object | None = None  # its fieldnode.web.app.WebOptions
    db_reconnect_max: float = 30.0  # PostgreSQL: the longest backoff between reconnection attempts


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def load_keys(path: Path, exposed: str = "warn") -> Keystore:
    keys = Keystore.load(path, must_exist=True, exposed=exposed)
    if len(keys) == 0:
        raise FieldnodeError(f"keystore {path} holds no keys: provision a node first (fieldnode provision)")
    return keys


def run(opts: Options) -> int:
    keys = load_keys(opts.keys, "refuse" if opts.strict_keys else "warn")
    web = _start_web(opts)
    try:
        if opts.workers > 1:
            return _run_workers(opts, keys)
        return asyncio.run(_run_one(opts, keys, worker=0, prefix=""))
    finally:
        if web is not None:
            web.stop()


def _start_web(opts: Options):
    """The web page (--http), on its own thread and event loop in this process: it reads the
    database as `fieldnode web` does, so the gateway's loop never waits on a page."""
    if opts.http is None:
        return None
    from ..store.backend import prepare_store
    from ..web.server import WebServer

    prepare_store(opts.db)  # the page reads the database from its first moment
    web = WebServer(opts.web, opts.http, "--http")
    web.start()
    _out(f"fieldnode {web.describe('--http-allow-commands')}")
    return web


async def _run_one(opts: Options, keys: Keystore, *, worker: int, prefix: str, group: str | None = None) -> int:
    gw = Gateway(keys, opts.db, opts.listen, mqtt=opts.mqtt, site=opts.site, synchronous=opts.synchronous,
                 reuse_port=opts.workers > 1, worker=worker, workers=opts.workers, group=group,
                 mqtt_discovery=opts.mqtt_discovery, mqtt_commands=opts.mqtt_commands,
                 node_timeout=opts.node_timeout, strict_keys=opts.strict_keys,
                 store_backoff=(min(0.5, opts.db_reconnect_max), opts.db_reconnect_max))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not opts.quiet:
        # Before start(): frames are taken from the moment the socket is open, while start() still
        # writes the first heartbeat, and each of them must have its line.
        gw.subscribe(LinePrinter(lambda line: _out(prefix + line)))
    await gw.start()
    if worker == 0:
        mqtt = (f"mqtt {opts.mqtt.display()} site {gw.site!r}{_mqtt_features(opts)}" if opts.mqtt
                else "mqtt off (no --mqtt)")
        _out(f"fieldnode gateway listening on coap://{format_source(gw.address)}/f  db {opts.db}  "
             f"keys {opts.keys} ({len(keys)} keys, {gw.restored_devices} devices' replay windows restored)  "
             f"{mqtt}  workers {opts.workers}.  Ctrl-C stops.")
    if opts.mqtt_commands:
        _print_mqtt_commands(prefix)
    if isinstance(opts.db, PgTarget):
        _print_store_events(prefix)
    summary = asyncio.create_task(_summaries(gw, opts.summary, prefix)) if opts.quiet else None
    try:
        await stop.wait()
    finally:
        if summary:
            summary.cancel()
        pending = gw.pending()
        if worker == 0:
            _out(f"stopping: committing and answering {pending} pending frames")
        await gw.stop()
        _out(prefix + summary_line(gw.counts, gw.started, 0, gw.mqtt_state))
    return 0


def _mqtt_features(opts: Options) -> str:
    out = f" (nodes offline after {opts.node_timeout:g} s"
    if opts.mqtt_discovery:
        out += f", discovery {opts.mqtt_discovery}/"
    if opts.mqtt_commands:
        out += ", commands on .../$command"
    return out + ")"


class _ConsoleLines(logging.Handler):
    def __init__(self, prefix: str, label: str = "mqtt", level: int = logging.INFO) -> None:
        super().__init__(level)
        self.prefix = prefix
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        _out(f"{self.prefix}{stamp} {self.label} {record.getMessage()}")


def _print_store_events(prefix: str) -> None:
    """The database lost, still unreachable, back: a console line each, even with --quiet (the
    gateway answers 5.03 meanwhile, and whoever watches it must know why)."""
    logger = logging.getLogger("fieldnode.store.postgres")
    if not any(isinstance(h, _ConsoleLines) for h in logger.handlers):
        logger.addHandler(_ConsoleLines(prefix, "db", logging.WARNING))
    logger.propagate = False


def _print_mqtt_commands(prefix: str) -> None:
    """Every command taken or refused from MQTT gets a console line, even with --quiet: whoever
    can publish there moves actuators, and the console is where that must be seen."""
    logger = logging.getLogger("fieldnode.gateway.mqtt_commands")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _ConsoleLines) for h in logger.handlers):
        logger.addHandler(_ConsoleLines(prefix))
    logger.propagate = False


async def _summaries(gw: Gateway, every: float, prefix: str) -> None:
    while True:
        await asyncio.sleep(every)
        line = summary_line(gw.counts, gw.started, gw.pending(), gw.mqtt_state)
        _out(prefix + line + (f"; db {gw.store_state}" if isinstance(gw.db_path, PgTarget) else ""))


def _worker_main(opts: Options, worker: int, group: str) -> None:
    # Ctrl-C in the terminal reaches every process of the group; each worker stops on its own.
    try:
        keys = load_keys(opts.keys, "refuse" if opts.strict_keys else "ignore")  # the parent has warned
        asyncio.run(_run_one(opts, keys, worker=worker, prefix=f"[w{worker}] ", group=group))
    except FieldnodeError as exc:  # the message, as the CLI gives it, not a traceback
        print(f"error: [w{worker}] {exc}", file=sys.stderr)
        sys.exit(2)


def _run_workers(opts: Options, keys: Keystore) -> int:
    _prepare_shards(opts)
    group = f"{os.getpid()}-{opts.listen[1]}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(opts, i, group), name=f"fieldnode-gw-{i}")
             for i in range(opts.workers)]
    for p in procs:
        p.start()
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        _watch_workers(opts, procs, lambda: stopping)
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(30)
    failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if failed and not stopping:
        raise FieldnodeError(f"worker(s) {', '.join(failed)} stopped unexpectedly; see the messages above")
    return 0


def _prepare_shards(opts: Options) -> None:
    """Every worker's shard made, after the checks that would otherwise fail in each worker."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise FieldnodeError("--workers needs SO_REUSEPORT (Linux); run with --workers 1")
    if opts.listen[1] == 0:
        raise FieldnodeError("--workers needs a fixed port: the workers must share it")
    if isinstance(opts.db, PgTarget):
        return  # one database for every worker (and every gateway): nothing to make or check
    existing = shard_paths(opts.db)
    shards = set(existing) | set(range(opts.workers))
    if len(shards) > MAX_SHARDS:
        raise FieldnodeError(f"--workers {opts.workers} with the {len(existing)} shard files of "
                             f"{opts.db} makes {len(shards)}; at most {MAX_SHARDS} can be read together: "
                             "use fewer workers, or another --db")
    # Here, where a bad --db or another gateway on these files is reported once, not by each worker.
    for k in range(opts.workers):
        check_free(shard_path(opts.db, k))
    prepare_workers(opts.db, opts.workers)


def _watch_workers(opts: Options, procs: list[multiprocessing.process.BaseProcess],
                   stopping: Callable[[], bool]) -> None:
    """Until a signal or a worker's end; with --quiet, the summary line from the database."""
    last = time.monotonic()
    while not stopping() and all(p.is_alive() for p in procs):
        time.sleep(0.2)
        if opts.quiet and time.monotonic() - last >= opts.summary:
            last = time.monotonic()
            st = read_status(opts.db)
            _out(summary_line(st.counters, min(w["started"] for w in st.workers), st.outbox,
                              st.mqtt["state"] if st.mqtt else "off"))

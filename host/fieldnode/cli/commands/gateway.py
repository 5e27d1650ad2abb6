"""fieldnode gateway: receive frames from nodes over CoAP, store them, forward them to MQTT."""
from __future__ import annotations

import argparse

from ..options import add_keys_option, keys_path
from ...infra.errors import FieldnodeError
from ...gateway.mqtt import PASSWORD_ENV, MqttUrl
from ...gateway.runner import Options, run as run_gateway
from ...store.location import default_db_path
from ...store.target import parse_db
from ...wire.hostport import parse_listen


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway", help="receive, verify and store node frames (CoAP/UDP), forward to MQTT",
        description="Runs the gateway: nodes POST their signed frames to coap://HOST:5683/f; each "
        "frame is verified against the keystore and its replay window, committed to the database "
        "(SQLite, or PostgreSQL shared by several gateways), and only then acknowledged (2.04; 2.03 "
        "for a frame already stored; 4.00/4.01 with the reason when refused). Readings go to MQTT "
        "with --mqtt. Downlink commands queued "
        "in the database ride on the answers. Prints one line per frame (--quiet: a summary every "
        "--summary seconds); `fieldnode status` shows the health from another terminal. Ctrl-C "
        "commits what is pending and stops. See docs/gateway.md.")
    p.add_argument("--listen", default="0.0.0.0:5683", metavar="HOST:PORT",
                   help="UDP address to listen on (default 0.0.0.0:5683: every IPv4 interface, so "
                   "nodes on the LAN reach it; 127.0.0.1:5683 for this machine only; [::]:5683 for IPv6)")
    p.add_argument("--db", type=parse_db, default=None, metavar="PATH|URI",
                   help="SQLite database file, created if missing, one gateway writes it at a time "
                   f"(default {default_db_path()}, or $FIELDNODE_DB); or a PostgreSQL database, "
                   "postgresql://USER@HOST[:PORT]/DBNAME (password from PGPASSWORD or ~/.pgpass), that any "
                   "number of gateways share (docs/scale-out.md)")
    p.add_argument("--db-reconnect-max", type=float, default=30.0, metavar="SECONDS",
                   help="PostgreSQL: the longest wait between reconnection attempts after the database is "
                   "lost (backoff from 0.5 s, doubling; default 30); frames get 5.03 meanwhile"),
    add_keys_option(p, "keystore with the nodes' keys, re-read when it changes")
    p.add_argument("--mqtt", metavar="URL", default=None,
                   help="publish readings to mqtt://[USER@]HOST[:PORT][/PREFIX] (mqtts:// for TLS; "
                   f"password from ${PASSWORD_ENV}); topics PREFIX/SITE/NODE/SENSOR, retained, prefix default "
                   "'fieldnode'; availability (online/offline) on PREFIX/SITE/$availability (the last will) "
                   "and PREFIX/SITE/NODE/$availability")
    p.add_argument("--mqtt-discovery", nargs="?", const="homeassistant", default=None, metavar="PREFIX",
                   help="with --mqtt: publish Home Assistant discovery configs (retained) for every reading, "
                   "and with --mqtt-commands for every actuator, under PREFIX (default homeassistant)")
    p.add_argument("--mqtt-commands", action="store_true",
                   help="with --mqtt: take commands on PREFIX/SITE/NODE/$command (JSON {\"actuator\": value}), "
                   "sign and queue them for actuators the node's board has; guard the topic with a broker "
                   "ACL (docs/security.md)")
    p.add_argument("--node-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --mqtt: a node is published offline after this long without a frame (default 300)")
    p.add_argument("--site", default=None,
                   help="site name in the MQTT topics (default: the keystore file name, e.g. "
                   "farm-north.json -> farm-north; 'default' for keys.json)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N processes sharing the port (SO_REUSEPORT, Linux) for more than one core, each storing "
                   "its share of the devices in its own file beside --db (gateway.db: gateway.shard1.db, ...; "
                   "at most 11; default 1)")
    p.add_argument("--strict-keys", action="store_true",
                   help="refuse a keystore that other users of this machine can read or write (default: "
                   "warn on stderr and use it); a change to such a file while running is not taken")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="also serve the web page (as `fieldnode web`) on this address, e.g. 127.0.0.1:8080; "
                   "beyond loopback with --http-token; nodes show offline after --node-timeout")
    p.add_argument("--http-token", default=None, metavar="TOKEN",
                   help="with --http: the page's access token (or $FIELDNODE_WEB_TOKEN; see docs/web.md)")
    p.add_argument("--http-allow-commands", action="store_true",
                   help="with --http: let the page sign and queue commands with the keystore's keys")
    p.add_argument("--quiet", action="store_true", help="no line per frame; print a summary every --summary seconds")
    p.add_argument("--summary", type=float, default=60.0, metavar="SECONDS",
                   help="interval of the --quiet summary (default 60)")
    p.add_argument("--sync", choices=("full", "normal"), default="full",
                   help="SQLite durability: full (default) survives a power cut once a frame is "
                   "acknowledged; normal is faster but may lose the last acknowledged frames on power loss")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise FieldnodeError(f"--workers {args.workers}: give 1 or more")
    if not args.mqtt and (args.mqtt_discovery or args.mqtt_commands):
        raise FieldnodeError("--mqtt-discovery and --mqtt-commands go with --mqtt URL (the broker to use)")
    if not args.db_reconnect_max > 0:
        raise FieldnodeError(f"--db-reconnect-max {args.db_reconnect_max:g}: a positive number of seconds")
    if not args.node_timeout > 0:
        raise FieldnodeError(f"--node-timeout {args.node_timeout:g}: a positive number of seconds")
    if args.mqtt_discovery is not None and not args.mqtt_discovery.strip("/") or any(
            c in (args.mqtt_discovery or "") for c in "+#\0"):
        raise FieldnodeError(f"--mqtt-discovery {args.mqtt_discovery!r}: a topic prefix without + or #")
    opts = Options(
        listen=parse_listen(args.listen, "--listen"), db=args.db or default_db_path(), keys=keys_path(args),
        mqtt=MqttUrl.parse(args.mqtt) if args.mqtt else None, site=args.site, workers=args.workers,
        quiet=args.quiet, summary=args.summary, synchronous=args.sync.upper(),
        mqtt_discovery=args.mqtt_discovery.strip("/") if args.mqtt_discovery else None,
        mqtt_commands=args.mqtt_commands, node_timeout=args.node_timeout,
        strict_keys=args.strict_keys, db_reconnect_max=args.db_reconnect_max)
    if args.http:
        opts.http, opts.web = args.http, _web_options(args, opts)
    elif args.http_token or args.http_allow_commands:
        raise FieldnodeError("--http-token and --http-allow-commands go with --http HOST:PORT")
    return run_gateway(opts)


def _web_options(args: argparse.Namespace, opts: Options):
    from .web import web_options

    page = argparse.Namespace(offline_after=args.node_timeout, allow_commands=args.http_allow_commands,
                              token=args.http_token, site=opts.site, keys=opts.keys)
    return web_options(page, opts.db)

"""fieldnode command: set a node's actuator with a signed, expiring command."""
from __future__ import annotations

import argparse

from ...node.commanding import (ack_result, build_command, counters_path, find_node, next_counter, parse_value,
                          send_over_usb, wait_for_outcome)
from ..options import add_keys_option, read_keys
from ...infra.errors import FieldnodeError
from ...store.target import PgTarget, parse_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "command", help="send a signed command to a node's actuator",
        description="Builds a COSE_Mac0 command frame (kind 3) with this host's next command counter "
        "for the node and an expiry, and delivers it over USB (--port: the node answers with a signed "
        "ack, printed here) or through the gateway (--db: queued, carried in the response to the "
        "node's next frame). The node checks MAC, counter, expiry, value and interlocks; anything "
        "refused changes nothing and the ack says why.")
    p.add_argument("node", help="node name or device id (see `fieldnode keys list`)")
    p.add_argument("actuator", help="actuator name from the node's board definition")
    p.add_argument("value", help="on/off for a relay, 0..1 for a PWM output")
    p.add_argument("--ttl", type=float, default=30.0, help="seconds until the command expires (default 30)")
    via = p.add_mutually_exclusive_group(required=True)
    via.add_argument("--port", help="deliver over this USB serial port")
    via.add_argument("--db", type=parse_db, metavar="PATH|URI",
                     help="queue in this gateway database (a file, or the postgresql://... URI the gateways share)")
    add_keys_option(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack over USB")
    p.add_argument("--wait", action="store_true",
                   help="with --db: wait for the node's ack (until the command expires) and print it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise FieldnodeError("--ttl must be a positive number of seconds")
    if args.wait and not args.db:
        raise FieldnodeError("--wait goes with --db (over --port the ack is always awaited)")
    if args.db and not isinstance(args.db, PgTarget) and not args.db.exists():
        # The gateway creates its database; a command queued in a new file would never be sent.
        raise FieldnodeError(f"--db {args.db}: no such database; give the one the running gateway writes "
                             "(its start line shows it; `fieldnode status --db PATH` checks it)")
    store = read_keys(args)
    entry = find_node(store, args.node)
    value = parse_value(args.value)
    counter = next_counter(counters_path(store.path), entry.device)
    frame, expires = build_command(entry, counter, [(args.actuator, value)], args.ttl)
    if args.port:
        names = {e.device: e.name for e in store if e.name}
        ack = send_over_usb(args.port, entry, frame, counter, args.timeout, names)
        result, reason = ack_result(ack)
        print(f"{entry.name or entry.device.hex()}: {args.actuator}={args.value} {result}"
              + (f" ({reason})" if reason else ""))
        return 0 if result == "applied" else 1
    from ...store.commandqueue import enqueue_command

    command_id = enqueue_command(args.db, entry.device, frame, expires)
    # The queue's id, as the gateway's log ("command #N sent") and `status` number commands.
    print(f"queued command #{command_id} for {entry.name or entry.device.hex()}: {args.actuator}={args.value}; "
          f"delivered with the node's next frame, expires in {args.ttl:.0f} s", flush=True)
    if not args.wait:
        return 0
    info = wait_for_outcome(args.db, command_id)
    label = f"{entry.name or entry.device.hex()}: {args.actuator}={args.value}"
    if info.state == "expired":
        print(f"{label} expired: the node did not answer before the command expired "
              f"(delivery attempts: {info.attempts}); see `fieldnode status`")
    else:
        print(f"{label} {info.state}" + (f" ({info.reason})" if info.reason else ""))
    return 0 if info.state == "applied" else 1

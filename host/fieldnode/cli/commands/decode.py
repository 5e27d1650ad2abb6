"""fieldnode decode: verify and show frames from a file, a capture or stdin."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import BinaryIO

from cbor_diag import cbor2diag

from ...ui.capture import decode_capture
from ..options import add_declarations_option, add_keys_option, read_declarations, read_keys
from ...infra.errors import FieldnodeError
from ...wire.frame import KIND_NAMES, FrameRejected, ReplayWindow, Verifier, parse_unverified
from ...wire.capturesummary import SILENT_AFTER
from ...wire.framesource import read_items
from ...wire.pcap import DEFAULT_PORT, MAGIC_LENGTH, is_capture
from ...wire.render import frame_json, frame_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode", help="verify and print frames from a file or stdin",
        description="Verify and print fieldnode frames. Input is detected: a pcap or pcapng network "
        "capture (tcpdump, Wireshark; CoAP over UDP on --port, each datagram with its answer, then a "
        "summary), a CBOR sequence of frames (binary), or text such as a serial console capture where "
        "frame lines start with 'FN1 ' (other lines are logs). With --hex every line is one frame in "
        "hex. Each frame is checked against the keystore and a replay window over the input. Exit "
        "status 1 if any frame was rejected or a capture is damaged.",
    )
    p.add_argument("file", nargs="?", default="-", help="input file, or - for stdin (default)")
    p.add_argument("--hex", action="store_true", help="one hex-encoded frame per line")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per frame")
    fmt.add_argument("--diag", action="store_true", help="CBOR diagnostic notation (RFC 8949 §8)")
    add_keys_option(p, "keystore to verify with")
    add_declarations_option(p)
    p.add_argument("--logs", action="store_true", help="also print the log lines of a console capture")
    p.add_argument("--port", type=_port, default=None, metavar="PORT",
                   help=f"pcap: the gateway's UDP port (default {DEFAULT_PORT})")
    p.add_argument("--silent-after", type=_seconds, default=None, metavar="SECONDS",
                   help=f"pcap: a node with no frame in the capture's last SECONDS is reported silent "
                   f"(default {SILENT_AFTER:g})")
    p.set_defaults(func=run)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UDP port (1-65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")


def _open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return Path(name).open("rb")
    except FileNotFoundError:
        raise FieldnodeError(f"{name}: no such file") from None
    except OSError as exc:
        raise FieldnodeError(f"{name}: cannot read ({exc.strerror})") from None


def _read_head(stream: BinaryIO, name: str) -> bytes:
    """The first bytes, enough to tell a capture (a pipe may hand them over in pieces)."""
    head = b""
    try:
        while len(head) < MAGIC_LENGTH:
            chunk = stream.read(MAGIC_LENGTH - len(head))
            if not chunk:
                break
            head += chunk
    except OSError as exc:
        raise FieldnodeError(f"{name}: cannot read ({exc.strerror})") from None
    return head


def run(args: argparse.Namespace) -> int:
    keys = read_keys(args)
    args.declarations = read_declarations(args)
    stream = _open_input(args.file)
    try:
        head = _read_head(stream, args.file)
        if is_capture(head):
            if args.hex or args.diag:
                raise FieldnodeError(f"{args.file} is a pcap capture: --hex and --diag do not apply to it "
                                     "(use --json for the details)")
            return decode_capture(stream, head, keys, sys.stdout, port=args.port or DEFAULT_PORT,
                                  as_json=args.json, declarations=args.declarations,
                                  silent_after=SILENT_AFTER if args.silent_after is None else args.silent_after)
        if args.file.lower().endswith(CAPTURE_SUFFIXES):
            raise FieldnodeError(f"{args.file}: not a pcap or pcapng capture (it starts with "
                                 f"{head.hex() or 'nothing'}; a capture starts with a1b2c3d4, d4c3b2a1 or 0a0d0d0a)")
        if args.port is not None or args.silent_after is not None:
            raise FieldnodeError(f"{args.file} is not a pcap capture: --port and --silent-after apply to captures only")
        try:
            data = head + stream.read()
        except OSError as exc:
            raise FieldnodeError(f"{args.file}: cannot read ({exc.strerror})") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return _decode_frames(args, keys, data)


def _decode_frames(args: argparse.Namespace, keys, data: bytes) -> int:
    # The declarations seen in the input join those from --db: v2 telemetry after its
    # declaration is shown expanded.
    verifier = Verifier(keys.lookup, ReplayWindow(), accept_kinds=KIND_NAMES, declarations=args.declarations)
    out = sys.stdout
    rejected = accepted = 0
    for item in read_items(data, hex_lines=args.hex):
        if item.log is not None:
            if args.logs:
                out.write(f"log  {item.log}\n")
            continue
        if item.frame is None:
            rejected += 1
            reason = (item.error or "bad-cbor").split(":")[0]
            if args.json:
                out.write(json.dumps({"status": "rejected", "reason": reason, "where": item.where,
                                      "detail": item.error}) + "\n")
            else:
                out.write(f"REJECTED {item.where}: {item.error}\n")
            continue
        try:
            frame = verifier.verify(item.frame)
        except FrameRejected as exc:
            rejected += 1
            _show_rejected(out, args, item.where, item.frame, exc)
            continue
        accepted += 1
        if args.json:
            out.write(frame_json(frame) + "\n")
        elif args.diag:
            out.write(f"# {item.where}: verified, {frame.kind_name} #{frame.counter}\n")
            _write_diag(out, item.frame, frame.protected, frame.payload)
        else:
            out.write(f"ok   {frame_line(frame)}\n")
    print(f"{accepted} verified, {rejected} rejected", file=sys.stderr)
    if accepted == 0 and rejected == 0:
        print("no frames found in the input", file=sys.stderr)
    return 1 if rejected else 0


def _show_rejected(out, args: argparse.Namespace, where: str, data: bytes, exc: FrameRejected) -> None:
    # Show what an unverified frame claims, marked as such: it helps find a wrong key or a
    # mis-provisioned node, and nothing in it is trusted.
    try:
        claimed = parse_unverified(data)
    except FrameRejected:
        claimed = None
    if args.json:
        if claimed is not None:
            out.write(frame_json(claimed, status="rejected", reason=exc.reason) + "\n")
        else:
            out.write(json.dumps({"status": "rejected", "reason": exc.reason, "where": where,
                                  "detail": exc.detail}) + "\n")
    elif args.diag:
        out.write(f"# {where}: REJECTED {exc}\n")
        if claimed is not None:
            _write_diag(out, data, claimed.protected, claimed.payload)
        else:
            try:
                out.write(cbor2diag(data).strip() + "\n")
            except Exception:
                out.write(f"# not CBOR: {data[:64].hex()}\n")
    else:
        text = f"REJECTED {where}: {exc}"
        if claimed is not None and exc.reason != "bad-senml":
            text += f"  (unverified: {frame_line(claimed)})"
        out.write(text + "\n")


def _write_diag(out, data: bytes, protected: bytes, payload: bytes) -> None:
    """The envelope, then the two byte strings that hold CBOR, each in diagnostic notation."""
    out.write(cbor2diag(data).strip() + "\n")
    out.write("# protected header: " + cbor2diag(protected).strip() + "\n")
    out.write("# payload (SenML): " + cbor2diag(payload).strip() + "\n")

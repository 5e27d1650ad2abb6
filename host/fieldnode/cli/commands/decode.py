"""fieldnode decode: verify and show frames from a file, a capture or stdin."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cbor_diag import cbor2diag

from ..options import add_keys_option, read_keys
from ...infra.errors import FieldnodeError
from ...wire.frame import KIND_NAMES, FrameRejected, ReplayWindow, Verifier, parse_unverified
from ...wire.framesource import read_items
from ...wire.render import frame_json, frame_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode", help="verify and print frames from a file or stdin",
        description="Verify and print fieldnode frames. Input is detected: a CBOR sequence of "
        "frames (binary), or text such as a serial console capture where frame lines start with "
        "'FN1 ' (other lines are logs). With --hex every line is one frame in hex. Each frame is "
        "checked against the keystore and a replay window over the input. Exit status 1 if any "
        "frame was rejected.",
    )
    p.add_argument("file", nargs="?", default="-", help="input file, or - for stdin (default)")
    p.add_argument("--hex", action="store_true", help="one hex-encoded frame per line")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per frame")
    fmt.add_argument("--diag", action="store_true", help="CBOR diagnostic notation (RFC 8949 §8)")
    add_keys_option(p, "keystore to verify with")
    p.add_argument("--logs", action="store_true", help="also print the log lines of a console capture")
    p.set_defaults(func=run)


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FieldnodeError(f"{name}: no such file") from None
    except OSError as exc:
        raise FieldnodeError(f"{name}: cannot read ({exc.strerror})") from None


def run(args: argparse.Namespace) -> int:
    keys = read_keys(args)
    verifier = Verifier(keys.lookup, ReplayWindow(), accept_kinds=KIND_NAMES)
    out = sys.stdout
    rejected = accepted = 0
    for item in read_items(_read_input(args.file), hex_lines=args.hex):
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

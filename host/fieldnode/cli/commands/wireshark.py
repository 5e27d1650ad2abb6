"""fieldnode wireshark: where the Wireshark plugin is, and installing it for this user."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...infra.errors import FieldnodeError
from ...wireshark import install, personal_plugin_dir, shipped_plugin


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wireshark", help="show where the Wireshark plugin goes, or install it",
        description="The package ships a Wireshark Lua plugin that names the fields of fieldnode frames "
        "in CoAP (Content-Format 17): frame kind, key id (device and key generation), counter and the "
        "SenML records. Wireshark cannot verify MACs (it holds no keys): `fieldnode decode CAPTURE` does. "
        "Without options this prints where the plugin is and where it goes.",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--install", action="store_true",
                      help=f"copy the plugin into Wireshark's personal plugin folder ({personal_plugin_dir()})")
    what.add_argument("--path", action="store_true",
                      help="print only the shipped plugin's path (for tshark -X lua_script:PATH)")
    p.add_argument("--dir", type=Path, default=None, metavar="DIR",
                   help="with --install: this plugin folder instead of the personal one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dir is not None and not args.install:
        raise FieldnodeError("--dir goes with --install")
    plugin = shipped_plugin()
    if args.path:
        print(plugin)
        return 0
    if args.install:
        target, changed = install(args.dir)
        state = "installed" if changed else "already installed, unchanged"
        print(f"{state}: {target}\nrestart Wireshark (or Analyze > Reload Lua Plugins); "
              "for a port other than 5683: Edit > Preferences > Protocols > fieldnode")
        return 0
    print(f"plugin: {plugin}\n"
          f"install for this user: fieldnode wireshark --install  (copies it to {personal_plugin_dir()})\n"
          f"or once: wireshark -X lua_script:{plugin} capture.pcap  (tshark takes the same option)\n"
          "it cannot verify MACs (Wireshark holds no keys): verify with fieldnode decode capture.pcap")
    return 0

"""HOST:PORT as the CLI takes it, in one place: where a node sends (provision --gateway, sim
--gateway) and where this machine listens (gateway --listen, monitor --udp).

Accepted: ``host:port``, ``[v6]:port``, and for a destination also a bare ``host`` (port 5683)
and the URL the gateway prints, ``coap://host[:port][/f]``. Everything else is refused with one
line naming the option, the input and a form that works: a setting written to a node must be one
its firmware can use, as a node that cannot parse it sends nothing.
"""
from __future__ import annotations

import ipaddress
import re
from typing import NoReturn
from urllib.parse import urlsplit

from ..infra.errors import FieldnodeError

COAP_PORT = 5683
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_MAX_SETTING = 255  # the node keeps each setting in one length byte (firmware/lib/fnode/config.py)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_destination(text: str, option: str) -> tuple[str, int]:
    """Where a node sends its frames -> (host, port). No IPv6 literal: the node's uplink opens an
    IPv4 socket (firmware/lib/fnode/uplink.py)."""
    example = "give HOST:PORT, e.g. 10.0.0.5:5683, gw.local:5683 or coap://gw.local:5683"
    bad = _Bad(option, text, example)
    if "://" in text:
        host, port = _from_url(text, bad)
    else:
        host, port = _split(text, bad, default_port=COAP_PORT)
    _check_host(host, bad, numeric=False)
    if port == 0:
        bad("port 0 is not a port a gateway listens on")
    if ":" in host:
        bad("the node sends over IPv4 only, so an IPv4 address or a host name")
    if len(format_hostport(host, port)) > _MAX_SETTING:
        bad(f"longer than the {_MAX_SETTING} characters a node can store")
    return host, port


def parse_destinations(texts: list[str], option: str) -> list[str]:
    """Where a node sends, in order of preference (provision --gateway A --gateway B) -> each as
    HOST:PORT. The node keeps the first as its gateway and the others, comma-separated, in one
    more setting of _MAX_SETTING characters (firmware/lib/fnode/config.py), so they must fit it."""
    gateways = [format_hostport(*parse_destination(text, option)) for text in texts]
    for i, gateway in enumerate(gateways):
        if gateway in gateways[:i]:
            raise FieldnodeError(f"{option} {texts[i]!r}: {gateway} is given twice; list each gateway once, "
                                 "the preferred one first")
    if len(",".join(gateways[1:])) > _MAX_SETTING:
        raise FieldnodeError(f"{option}: the gateways after the first take {len(','.join(gateways[1:]))} "
                             f"characters, more than the {_MAX_SETTING} a node can store; give fewer or shorter ones")
    return gateways


def parse_listen(text: str, option: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """A local UDP address to bind -> (host, port): 'HOST:PORT', '[IPv6]:PORT', ':PORT' or
    'PORT' (on default_host). Port 0 takes any free port."""
    bad = _Bad(option, text, "give HOST:PORT, e.g. 0.0.0.0:5683, 127.0.0.1:5683 or [::]:5683")
    if "://" in text:
        bad("give an address to listen on, not a URL")
    if text.isdigit():
        text = ":" + text
    host, port = _split(text, bad, default_port=None)
    host = host or default_host
    _check_host(host, bad, numeric=True)
    return host, port


class _Bad:
    def __init__(self, option: str, text: str, example: str) -> None:
        self.option, self.text, self.example = option, text, example

    def __call__(self, why: str) -> NoReturn:
        raise FieldnodeError(f"{self.option} {self.text!r}: {why} ({self.example})")


def _from_url(text: str, bad: _Bad) -> tuple[str, int]:
    url = urlsplit(text)
    if url.scheme != "coap":
        bad(f"{url.scheme}:// is not spoken by nodes (they send CoAP over UDP, coap://)")
    if url.username is not None or url.query or url.fragment or url.path not in ("", "/", "/f"):
        bad("the URL may hold only coap://HOST[:PORT] (nodes always post to /f)")
    try:
        port = url.port
    except ValueError:
        bad("the URL's port is not a number 0-65535")
    host = url.hostname or ""
    if not host:
        bad("no host in the URL")
    return host, COAP_PORT if port is None else port


def _split(text: str, bad: _Bad, default_port: int | None) -> tuple[str, int]:
    if any(c.isspace() for c in text):
        bad("contains a space (a colon goes between host and port)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            bad("an IPv6 address goes in brackets, then a colon and the port: [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
        if ":" not in host:
            bad("brackets are for IPv6 addresses only")
    elif text.count(":") > 1:
        bad("an IPv6 address goes in brackets: [ADDRESS]:PORT")
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
    if port_text is None:
        if default_port is None:
            bad("no port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        bad(f"{port_text!r} is not a port 0-65535")
    return host, int(port_text)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_host(host: str) -> bool:
    """An IP address or an RFC 1123 host name (what a URL's host may be, too)."""
    if is_ip(host):
        return True
    return 0 < len(host) <= 253 and all(_LABEL.match(label) for label in host.rstrip(".").split(".")) \
        and not host.replace(".", "").isdigit()


def _check_host(host: str, bad: _Bad, numeric: bool) -> None:
    if is_ip(host):
        return
    if numeric:
        bad(f"{host!r} is not an IP address of this machine (use 0.0.0.0 for all IPv4 interfaces, "
            ":: for IPv6)")
    if not host:
        bad("no host")
    if not is_host(host):
        bad(f"{host!r} is neither an IP address nor a host name")

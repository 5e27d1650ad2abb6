"""Real peers and test nodes for the gateway tests: Mosquitto, an MQTT observer, node keys/frames,
and a bare CoAP endpoint."""
from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldnode.wire import coap
from fieldnode.wire.frame import KIND_COMMAND, build_frame, device_base_name
from fieldnode.node.keystore import KeyEntry, Keystore, make_kid
from support.ports import claimed_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


GATEWAY_LISTENING = re.compile(r"listening on coap://127\.0\.0\.1:(\d+)/f ")


def gateway_port(startup: str) -> int:
    """The port a gateway started with `--listen 127.0.0.1:0` says it listens on."""
    found = GATEWAY_LISTENING.search(startup)
    if not found or found.group(1) == "0":
        raise AssertionError(f"not a gateway's startup line: {startup!r}")
    return int(found.group(1))


class Nodes:
    """n test nodes with keys in a keystore file; frames(...) signs frames as they would."""

    def __init__(self, path: Path, n: int = 3, alg: int = 4, first: int = 1) -> None:
        self.path = path
        self.devices = [bytes.fromhex("02f0000000") + bytes((first + i,)) if first + i < 256
                        else bytes.fromhex("02f1") + (first + i).to_bytes(4, "big") for i in range(n)]
        self.keys = {d: os.urandom(32) for d in self.devices}
        self.alg = alg
        self.counters = {d: 0 for d in self.devices}
        store = Keystore(path, [KeyEntry(make_kid(d, 1), self.keys[d], name=f"node-{i + first}", alg=alg)
                                for i, d in enumerate(self.devices)])
        store.save()

    def keystore(self) -> Keystore:
        return Keystore.load(self.path)

    def frame(self, i: int = 0, counter: int | None = None, kind: int = 0, records: list[dict] | None = None,
              bt: int = 1_764_057_600, key: bytes | None = None, bn: str | None = None) -> bytes:
        d = self.devices[i]
        if counter is None:
            counter = self.counters[d] = self.counters[d] + 1
        records = records or [{"n": "temp", "u": "Cel", "v": 20.5 + counter / 10},
                              {"n": "hum", "u": "%RH", "v": 40 + counter % 10}]
        return build_frame(key or self.keys[d], make_kid(d, 1), self.alg, counter, kind,
                           bn or device_base_name(d), bt + counter, records)

    def command(self, i: int, counter: int, exp: float) -> bytes:
        """A downlink command frame (relay1 on) for node i, valid until exp."""
        d = self.devices[i]
        return build_frame(self.keys[d], make_kid(d, 1), self.alg, counter, KIND_COMMAND, device_base_name(d),
                           int(time.time()), [{"n": "relay1", "vb": True}, {"n": "exp", "v": int(exp)}])


class Mosquitto:
    """A real broker on loopback with its own config: no persistence, two listeners.

    `port` is where the gateway connects; `observer_port` is where the test watches. The
    gateway's listener can refuse the gateway (anonymous access off) and be reopened by a
    configuration reload (SIGHUP) without restarting, so the observer is subscribed before the
    gateway can publish. `gateway_settings` replaces that listener's access settings (a password
    and ACL file, say). The ports are claimed (support/ports.py) for the broker's whole life, so
    a restart finds them again; started is when the broker's log says it runs.
    """

    def __init__(self, workdir: Path, gateway_settings: str | None = None) -> None:
        self.workdir = workdir
        self.gateway_settings = gateway_settings
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self._claims: ExitStack | None = None
        self.port = self.observer_port = 0

    def _claim(self) -> None:
        self._release()
        self._claims = ExitStack()
        self.port = self._claims.enter_context(claimed_port(socket.SOCK_STREAM))
        self.observer_port = self._claims.enter_context(claimed_port(socket.SOCK_STREAM))

    def _release(self) -> None:
        if self._claims is not None:
            self._claims.close()
            self._claims = None

    def _write_conf(self, gateway_allowed: bool) -> None:
        access = self.gateway_settings or f"allow_anonymous {'true' if gateway_allowed else 'false'}\n"
        self.conf.write_text(
            # Started as root, mosquitto would drop to the 'mosquitto' user and then could not
            # re-read this file (in a private temp dir) on reload: stay the current user.
            f"user {getpass.getuser()}\n"
            "per_listener_settings true\npersistence false\n"
            f"listener {self.port} 127.0.0.1\n{access}"
            f"listener {self.observer_port} 127.0.0.1\nallow_anonymous true\n"
            # 'information' for the line saying it runs, after every listener is open
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")

    def start(self, gateway_allowed: bool = True) -> Mosquitto:
        if self._claims is None:
            self._claim()
        for _ in range(5):
            if self._run(gateway_allowed):
                return self
            # Something outside the tests bound a port in the moment before the broker did.
            self._claim()
        raise RuntimeError(f"mosquitto could not listen on five pairs of free ports: {self.log.read_text()}")

    def _run(self, gateway_allowed: bool) -> bool:
        """Starts the broker; False if a port was taken, RuntimeError on any other failure."""
        self._write_conf(gateway_allowed)
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            said = self.log.read_bytes()[offset:].decode(errors="replace")
            if " running" in said:
                return True
            if self.proc.poll() is not None:
                if "Address already in use" in said:
                    return False
                raise RuntimeError(f"mosquitto exited: {said}")
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def allow_gateway(self) -> None:
        self._write_conf(True)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stops the broker; its ports stay claimed for a restart until close()."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._release()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}/test"


def wait_until(cond, timeout: float = 20) -> bool:
    """cond() became true within timeout (checked every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def is_reading(topic: str) -> bool:
    """A reading's topic (prefix/site/node/sensor), not one of the gateway's own ($availability,
    $command, discovery configs)."""
    parts = topic.split("/")
    return len(parts) == 4 and not parts[-1].startswith("$")


class Observer:
    """A paho subscriber on the broker's observer port that keeps every message it gets (those
    `keep` accepts), with the retain flag of each in `retained` (topic -> payload)."""

    def __init__(self, port: int, topic: str = "#", keep=None, auth: tuple[str, str] | None = None) -> None:
        self.keep = keep or (lambda topic: True)
        self.messages: list[tuple[str, bytes]] = []
        self.retained: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        # retainAsPublished: a retained message keeps its flag when it arrives live, too.
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        if auth:
            self.client.username_pw_set(*auth)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("observer could not subscribe")

    def _on_message(self, c, u, msg) -> None:
        with self._lock:
            if msg.retain:
                self.retained[msg.topic] = msg.payload
            if self.keep(msg.topic):
                self.messages.append((msg.topic, msg.payload))

    def wait_until(self, cond, timeout: float = 20) -> bool:
        """cond(messages) became true within timeout (checked on each arrival)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if cond(list(self.messages)):
                    return True
            time.sleep(0.02)
        return False

    def wait_for(self, n: int, timeout: float = 20) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Client:
    """A bare CoAP endpoint (one UDP socket = one source port), so tests control mids and tokens."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.mid = int.from_bytes(os.urandom(2), "big")

    def request(self, payload: bytes, *, mid: int | None = None, token: bytes = b"\x01\x02",
                mtype: int = coap.CON, code: int = coap.POST, path: str = "f", cf: int | None = 17,
                extra: list[tuple[int, bytes]] | None = None) -> bytes:
        if mid is None:
            self.mid = mid = (self.mid + 1) & 0xFFFF
        options = [(coap.URI_PATH, path.encode())] if path else []
        if cf is not None:
            options.append((coap.CONTENT_FORMAT, coap.encode_uint(cf)))
        options += extra or []
        return coap.encode(coap.Message(mtype, code, mid, token, options, payload))

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    def recv(self) -> coap.Message:
        return coap.decode(self.sock.recv(2048))

    def exchange(self, data: bytes) -> coap.Message:
        self.send(data)
        return self.recv()

    def post(self, frame: bytes, **kw) -> coap.Message:
        return self.exchange(self.request(frame, **kw))

    def close(self) -> None:
        self.sock.close()

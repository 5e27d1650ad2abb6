"""Files that hold readings, commands or keys are for their owner only: the gateway creates its
database files (shards, WAL, shared memory, lock files) mode 0600, and a keystore other users can
read or write is named on stderr, refused with --strict-keys, and not taken by a running strict
gateway until it is private again."""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fieldnode.wire import coap
from fieldnode.gateway import GatewayThread
from fieldnode.store.sqlite.shards import create_shards, shard_path
from fieldnode.gateway.writerlock import WriterLock, lock_path
from fieldnode.node.keystore import KeyEntry, Keystore, make_kid
from support.gateway_peers import Client, Nodes
from support.nodesite import wait_for

FIELDNODE = str(Path(sys.executable).parent / "fieldnode")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask():
    """umask 000: whatever the files get, they get from fieldnode, not from the user's umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_gateway_creates_its_database_files_for_its_owner_only(tmp_path, open_umask):
    nodes = Nodes(tmp_path / "site.json", n=1)
    db = tmp_path / "new-dir" / "gw.db"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)) as gt:
        client = Client(gt.address)
        assert client.post(nodes.frame(0)).code == coap.CHANGED
        client.close()
        files = {p.name: mode(p) for p in db.parent.iterdir()}
    assert files == {"gw.db": 0o600, "gw.db-wal": 0o600, "gw.db-shm": 0o600, "gw.db.lock": 0o600}, files
    assert mode(db.parent) == 0o700
    create_shards(db, 3)  # what --workers 3 makes, with each worker's lock
    for k in (1, 2):
        WriterLock(shard_path(db, k)).acquire().release()
        assert mode(shard_path(db, k)) == mode(lock_path(shard_path(db, k))) == 0o600


def test_an_existing_database_keeps_the_permissions_the_site_gave_it(tmp_path, open_umask):
    nodes = Nodes(tmp_path / "site.json", n=1)
    db = tmp_path / "gw.db"
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)):
        pass
    db.chmod(0o640)  # opened to a group on purpose (a dashboard's account)
    with GatewayThread(nodes.keystore(), db, ("127.0.0.1", 0)):
        pass
    assert mode(db) == 0o640


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FIELDNODE, *args], capture_output=True, text=True, timeout=60)


def test_a_keystore_others_can_read_is_named_and_refused_with_strict_keys(tmp_path):
    nodes = Nodes(tmp_path / "site.json", n=1)
    nodes.path.chmod(0o644)  # copied over with scp, say
    listed = run_cli("keys", "--keys", str(nodes.path), "list")
    assert listed.returncode == 0 and "node-1" in listed.stdout
    (warning,) = listed.stderr.splitlines()
    assert warning.startswith(f"warning: keystore {nodes.path} can be read by other users") and \
        f"chmod 600 {nodes.path}" in warning
    strict = run_cli("gateway", "--keys", str(nodes.path), "--db", str(tmp_path / "gw.db"),
                     "--listen", "127.0.0.1:0", "--strict-keys")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    (error,) = strict.stderr.splitlines()
    assert error.startswith(f"error: keystore {nodes.path} can be read by other users") and "--strict-keys" in error
    assert not (tmp_path / "gw.db").exists()  # refused before anything was made
    nodes.path.chmod(0o620)  # writable by the group: whoever can add a key can forge for it
    assert "can be changed by other users" in run_cli("keys", "--keys", str(nodes.path), "list").stderr
    nodes.path.chmod(0o600)
    assert run_cli("keys", "--keys", str(nodes.path), "list").stderr == ""


def test_a_strict_gateway_takes_a_changed_keystore_only_once_it_is_private(tmp_path, caplog):
    nodes = Nodes(tmp_path / "site.json", n=1)
    newcomer = Nodes(tmp_path / "newcomer.json", n=1, first=7)
    with GatewayThread(nodes.keystore(), tmp_path / "gw.db", ("127.0.0.1", 0), health_interval=0.1,
                       strict_keys=True) as gt:
        client = Client(gt.address)
        store = Keystore.load(nodes.path)
        store.add(KeyEntry(make_kid(newcomer.devices[0], 1), newcomer.keys[newcomer.devices[0]], name="node-7"))
        store.save()
        with caplog.at_level(logging.WARNING):
            nodes.path.chmod(0o644)
            for _ in range(5):  # each refused lookup looks at the file again; the warning comes once
                assert client.post(newcomer.frame(0)).payload == b"unknown-kid"
            assert client.post(nodes.frame(0)).code == coap.CHANGED  # the keys it had still work
        refusals = [r for r in caplog.records if "keystore reload failed" in r.getMessage()]
        assert len(refusals) == 1 and "can be read by other users" in refusals[0].getMessage()
        nodes.path.chmod(0o600)  # only the mode changes (its ctime), not the contents
        wait_for(lambda: client.post(newcomer.frame(0)).code == coap.CHANGED, timeout=10,
                 what="the keystore taken once private")
        client.close()

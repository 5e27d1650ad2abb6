"""The keys a gateway verifies frames with, taken again when the keystore file changes, so a
node provisioned while the gateway runs is accepted without a restart."""
from __future__ import annotations

import logging

from ..node.keystore import Keystore

log = logging.getLogger(__name__)


class SiteKeys:
    """`exposed`: what to do with a keystore changed to be readable by others (Keystore.load):
    'refuse' keeps the keys loaded before, 'warn' takes it with a warning."""

    def __init__(self, keys: Keystore, exposed: str) -> None:
        self.keys = keys
        self._exposed = exposed
        self._names = {e.device: e.name for e in keys}
        self._version = self._file_version()

    def name(self, device: bytes) -> str:
        """The node's name in the keystore, or ''."""
        return self._names.get(device, "")

    def lookup(self, kid: bytes) -> tuple[bytes, int] | None:
        """(key, algorithm) of a key id, for the Verifier."""
        found = self.keys.lookup(kid)
        if found is None:
            # A node provisioned a moment ago sends its boot frame at once: look at the keystore
            # file now (one stat when it has not changed) rather than at the next housekeeping.
            self.reload()
            found = self.keys.lookup(kid)
        return found

    def _file_version(self) -> tuple[int, int, int] | None:
        """The keystore file's version: a rewrite changes its mtime (and inode), a chmod its ctime."""
        try:
            st = self.keys.path.stat() if self.keys.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) if st else None

    def reload(self) -> None:
        """Picks up nodes provisioned while the gateway runs (the keystore file changed)."""
        version = self._file_version()
        if version is None or version == self._version:
            return
        try:
            keys = Keystore.load(self.keys.path, exposed=self._exposed)
        except Exception as exc:
            # A half-written or refused file: keep the old keys, and try again (and say so again)
            # only when the file changes, not at every lookup.
            self._version = version
            log.warning("keystore reload failed, keeping the keys loaded before: %s", exc)
            return
        self.keys, self._version = keys, version
        self._names = {e.device: e.name for e in keys}
        log.info("keystore reloaded: %d keys", len(keys))

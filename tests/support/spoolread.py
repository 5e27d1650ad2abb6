"""What a node's flash spool holds, read by the firmware's own reader (fnode.spool.contents) on
the MicroPython unix port, read-only, from a node's directory flash or its littlefs image."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fieldnode.infra.paths import FIRMWARE_DIR, SIMHAL_DIR

_DUMP = """
import json
from binascii import hexlify
{mount}
from fnode.spool import contents


class NVS:
    def __init__(self, d):
        self.d = d

    def get_i32(self, key):
        if key not in self.d:
            raise OSError(-4354)
        return self.d[key]


print(json.dumps([[c, hexlify(f).decode()] for c, f in contents("spool", NVS({marks!r}))]))
"""


def spool_contents(binary: str, nvs: dict, *, flash_dir: Path | None = None,
                   image: Path | None = None) -> dict[int, bytes]:
    """{counter: frame} the node would send from flash, oldest first. nvs: the node's committed
    NVS ({namespace: {key: [type, value]}}), for the spool's read marks."""
    marks = {k: v[1] for k, v in nvs.get("fieldnode", {}).items() if k in ("sptr", "sdbt")}
    mount = f"import simflash\nsimflash.mount({str(image)!r})" if image else ""
    env = {**os.environ, "MICROPYPATH": f"{SIMHAL_DIR}:{FIRMWARE_DIR / 'lib'}:.frozen"}
    out = subprocess.run([binary, "-c", _DUMP.format(mount=mount, marks=marks)], capture_output=True, text=True,
                         env=env, cwd=flash_dir or Path.cwd(), timeout=60, check=True)
    return {c: bytes.fromhex(f) for c, f in json.loads(out.stdout.strip().splitlines()[-1])}

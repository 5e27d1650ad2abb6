"""The spool's flash room and wear (issue 21, "Flash: room and wear"), counted in the simulated
flash's block device, and the spool's ring of segment files on the real MicroPython unix port.

The figures in docs/firmware.md come from bench/spool_flash.py; the first test runs the same
measurement, shorter, and checks the targets from what it counted: for the esp32-devkitc, the
richest shipped board, >= 24 hours of outage in the spool's flash budget, >= 10 years of flash
life at its rate with the link up, and no frame on the console lost at a power cut.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fieldnode.infra.paths import BOARDS_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import spool_flash  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_devkitc_spool_meets_room_and_wear_targets_counted_in_the_simulated_flash(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDNODE_WIFI_PASSWORD", "sim")  # read by `fieldnode provision --wifi`
    m = spool_flash.measure(tmp_path, frames_up=120, frames_down=240)
    print(json.dumps(m))
    # With the link up every frame is answered within spool_after_ms: none touches the flash.
    assert m["up"]["frames"] >= 120
    assert m["up"]["progs"] == 0 and m["up"]["erases"] == 0, m["up"]
    # The outage: every frame the node printed reached the gateway after the power cut, in order.
    assert m["down"]["frames"] >= 240 and m["lost_in_outage"] == 0 and m["in_order"]
    assert m["down"]["erases"] > 0  # the counting device saw the spool's writes
    budget = json.loads((BOARDS_DIR / "esp32-devkitc.json").read_text())["spool_kb"]
    figures = spool_flash.compute(m, budget)
    print(json.dumps({"measured": m, "figures": figures}, indent=1))
    assert figures["outage_hours"] >= 24, figures
    assert figures["years_link_up"] is None or figures["years_link_up"] >= 10, figures
    assert figures["years_harsh"] >= 10, figures
    assert budget * 1024 <= spool_flash.FS_BYTES - 128 * 1024  # room left for the application


RING = r"""
import json, os, time
from fnode.frame import FrameBuilder
from fnode.spool import Spool, contents, encode, decode
from fnode.cose import counter_of

fb = FrameBuilder(bytes(32), b"\x24\x0a\xc4\xa1\xb2\xc3\x00\x01", 4)

def frame(c):
    fb.begin(0, c, 1700000000 + c)
    fb.add("env.temp", "Cel", 21.5 + c * 0.013)
    if c % 3:
        fb.add("env.hum", "%RH", 40.25 + c * 0.1)
    return bytes(fb.finish())

class NVS:
    def __init__(self):
        self.d = {}
    def get_i32(self, k):
        if k not in self.d:
            raise OSError(-4354)
        return self.d[k]
    def set_i32(self, k, v):
        self.d[k] = v
    def commit(self):
        pass

out = {}
# The codec: a delta turns the reference into the frame, whatever the gap between changes.
ref = bytearray(bytes(range(256)) * 2)
new = bytearray(ref)
new[3] ^= 1; new[300] ^= 1; new[301] ^= 2; new[511] ^= 4
buf = bytearray(800)
n = encode(bytes(ref), bytes(new), buf)
out["delta"] = [n & 0x7FFF, bool(n & 0x8000), decode({512: bytes(ref)}, buf[:n & 0x7FFF], 1) == bytes(new)]

nvs = NVS()
printed = []
s = Spool("spool", capacity=1000, nvs=nvs, after_ms=0, ram_frames=2, segment_bytes=2048)
s.on_out = printed.append
for c in range(1, 301):
    s.put(c, frame(c))
    s.settle(time.ticks_ms())
out["segments"] = len(os.listdir("spool"))
out["printed"] = [counter_of(f) for f in printed] == list(range(1, 301))
for c in range(1, 101):  # answered
    assert s.peek()[0] == c
    s.drop(c)
out["after_drops"] = len(s)
# A reset: frames answered since the last mark come again (the gateway says 2.03), none lost.
s = Spool("spool", capacity=1000, nvs=nvs, after_ms=0, ram_frames=2, segment_bytes=2048)
again = [c for c, _ in contents("spool", nvs)]
out["reset"] = [len(s), again[0] <= 101, again[-1], again == list(range(again[0], 301))]
got = []
while len(s):
    c, f = s.peek()
    assert f == frame(c)
    got.append(c)
    s.drop(c)
out["sent"] = got == again
out["empty"] = os.listdir("spool")

# Overflow with a frame in doubt: it is kept (sent first), the next ones are dropped and
# counted, and a reset brings back neither a dropped frame nor loses the one in doubt.
s = Spool("spool", capacity=10, nvs=nvs, after_ms=0, ram_frames=2, segment_bytes=2048)
for c in range(1000, 1010):
    s.put(c, frame(c))
    s.settle(time.ticks_ms())
s.doubt = 1000
for c in range(1010, 1015):
    s.put(c, frame(c))
    s.settle(time.ticks_ms())
out["overflow"] = [s.lost, s.peek()[0]]
s = Spool("spool", capacity=10, nvs=nvs, after_ms=0, ram_frames=2, segment_bytes=2048)
out["overflow_reset"] = [c for c, _ in contents("spool", nvs)]
# Overflow with no frame in doubt: after a reset the dropped frames stay dropped.
nvs2 = NVS()
s = Spool("spool2", capacity=5, nvs=nvs2, after_ms=0, ram_frames=2, segment_bytes=2048)
for c in range(1, 9):
    s.put(c, frame(c))
    s.settle(time.ticks_ms())
s = Spool("spool2", capacity=5, nvs=nvs2, after_ms=0, ram_frames=2, segment_bytes=2048)
out["plain_overflow"] = [s.lost, [c for c, _ in contents("spool2", nvs2)], s.peek()[0]]
print(json.dumps(out))
"""


def test_spool_ring_keeps_order_across_segments_resets_and_overflow(micropython, tmp_path):
    script = tmp_path / "ring.py"
    script.write_text(RING)
    out = micropython.eval_json(f"import os\nos.chdir({str(tmp_path)!r})\nexec(open('ring.py').read())")
    size, is_delta, round_trip = out["delta"]
    assert is_delta and round_trip and size < 40
    assert out["segments"] >= 3 and out["printed"]  # printed once in flash, in order
    assert out["after_drops"] == 200
    length, starts_at_a_segment, last, contiguous = out["reset"]
    assert starts_at_a_segment and last == 300 and contiguous and length >= 200
    assert out["sent"] and out["empty"] == []  # the empty spool has no file
    assert out["overflow"] == [5, 1000]  # five dropped, the one in doubt still first
    assert out["overflow_reset"] == [1000] + list(range(1006, 1015))
    assert out["plain_overflow"] == [3, [4, 5, 6, 7, 8], 4]


MIGRATE = r"""
import json, os, struct
from binascii import crc32
from fnode.frame import FrameBuilder
from fnode.spool import Spool

fb = FrameBuilder(bytes(32), b"\x24\x0a\xc4\xa1\xb2\xc3\x00\x01", 4)
frames = []
os.mkdir("spool")
for c in (7, 8, 9):
    fb.begin(0, c, 1700000000 + c)
    fb.add("env.temp", "Cel", 21.5)
    f = bytes(fb.finish())
    frames.append(f)
    with open("spool/%08x" % c, "wb") as out:  # earlier firmware: a file a frame
        out.write(struct.pack("<HI", len(f), crc32(f)))
        out.write(f)
s = Spool("spool")
got = []
while len(s):
    c, f = s.peek()
    got.append([c, f == frames[len(got)]])
    s.drop(c)
print(json.dumps(got))
"""


def test_an_update_takes_the_frames_of_the_old_one_file_a_frame_spool(micropython, tmp_path):
    (tmp_path / "migrate.py").write_text(MIGRATE)
    got = micropython.eval_json(f"import os\nos.chdir({str(tmp_path)!r})\nexec(open('migrate.py').read())")
    assert got == [[7, True], [8, True], [9, True]]
    assert list((tmp_path / "spool").iterdir()) == []

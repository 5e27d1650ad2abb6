"""The firmware tier's ground: the simulated OTA partitions (simhal/simota.py) behave as ESP-IDF's
app_update and bootloader do through MicroPython's esp32.Partition: an image written to the next
slot, set_boot refusing a slot without an image, a new image booted pending verification, and
the bootloader rolling back by itself an image that never confirmed (docs/updates.md)."""
from __future__ import annotations

import json

import pytest

from fieldnode.infra.errors import FieldnodeError
from fieldnode.sim.vnode import VirtualNode

PENDING_VERIFY, VALID, ABORTED = 1, 2, 4

MAIN = """
import esp32, machine, os
PLAN = {plan!r}
r = esp32.Partition(esp32.Partition.RUNNING)
try:
    with open("step") as f:
        step = int(f.read())
except OSError:
    step = 0
with open("step", "w") as f:
    f.write(str(step + 1))
print("BOOT", step, r.info()[4])
what = PLAN[step] if step < len(PLAN) else "idle"
if what == "write":
    nxt = r.get_next_update()
    try:
        nxt.set_boot()  # nothing written there yet: no image to validate
    except OSError as e:
        print("REFUSED", e.args[0], e.args[1])
    image = bytearray(b"\\xe9" + bytes(0x2F) + b"fw-2.0" + bytes(26)) + bytes(range(256)) * 40
    for i in range(0, len(image), 4096):
        nxt.writeblocks(i // 4096, image[i:i + 4096])
    back = bytearray(len(image))
    for i in range(0, len(image), 4096):
        chunk = bytearray(min(4096, len(image) - i))
        nxt.readblocks(i // 4096, chunk)
        back[i:i + len(chunk)] = chunk
    print("READBACK", back == image, nxt.info()[4], nxt.ioctl(4, 0), nxt.ioctl(5, 0))
    nxt.set_boot()
    machine.reset()
elif what == "reset":
    machine.reset()  # pending verification, never confirmed: as a crash or a watchdog reset
elif what == "confirm":
    esp32.Partition.mark_app_valid_cancel_rollback()
    machine.reset()
elif what == "give-up":
    esp32.Partition.mark_app_invalid_rollback_and_reboot()
"""


def ota_node(tmp_path, plan: list[str]) -> VirtualNode:
    flash = tmp_path / "n" / "flash"
    flash.mkdir(parents=True)
    (flash / "main.py").write_text(MAIN.format(plan=plan))
    return VirtualNode(tmp_path / "n", "240ac4000001", board=None, partitions="ota").start()


def otadata(node: VirtualNode) -> dict:
    return json.loads((node.node_dir / "otadata.json").read_text())


def test_an_image_never_confirmed_is_rolled_back_by_the_bootloader(tmp_path):
    node = ota_node(tmp_path, ["write", "reset"])
    try:
        node.wait_output(b"BOOT 2 ota_0", timeout=30)
        out = node.console_tail().decode()
        assert "REFUSED -5379 ESP_ERR_OTA_VALIDATE_FAILED" in out
        assert "READBACK True ota_1 384 4096" in out
        assert "BOOT 0 ota_0" in out and "BOOT 1 ota_1" in out and "BOOT 2 ota_0" in out
        d = otadata(node)
        assert d["running"] == "ota_0" and d["states"]["ota_1"] == ABORTED
        assert node.boots == ["pwron", "hard", "hard"]
    finally:
        node.stop()


@pytest.mark.parametrize("plan, running, state", [
    (["write", "confirm"], "ota_1", VALID),
    (["write", "give-up"], "ota_0", 3),  # INVALID: the image said so itself
])
def test_a_confirmed_image_stays_and_one_that_gives_up_goes_back(tmp_path, plan, running, state):
    node = ota_node(tmp_path, plan)
    try:
        node.wait_output(f"BOOT 2 {running}", timeout=30)
        d = otadata(node)
        assert (d["running"], d["states"]["ota_1"]) == (running, state)
    finally:
        node.stop()


def test_pending_verification_is_what_a_new_image_boots_into(tmp_path):
    node = ota_node(tmp_path, ["write", "idle"])
    try:
        node.wait_output(b"BOOT 1 ota_1", timeout=30)
        assert otadata(node)["states"]["ota_1"] == PENDING_VERIFY
    finally:
        node.stop()


def test_a_node_is_generic_or_ota_and_nothing_else(tmp_path):
    with pytest.raises(FieldnodeError, match="partitions 'tiny'"):
        VirtualNode(tmp_path / "n", "240ac4000001", board=None, partitions="tiny")

"""One port through esptool's Python API: connect, check the chip, then one write of both images.

Everything that can refuse the port (no answer, an unsupported or different chip, a flash too
small for the filesystem, an application that does not fit) happens before `write_flash`, so a
refused port has nothing written. MicroPython and the littlefs image go in a single `write_flash`
call (two offset/data pairs), which verifies each by MD5 afterwards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import serial
from esptool.cmds import attach_flash, connect_esp, detect_flash_size, reset_chip, run_stub, write_flash
from esptool.loader import ESPLoader
from esptool.util import FatalError, flash_size_bytes

from ..infra.errors import FieldnodeError
from . import esplog
from .appimage import ImageCache
from ..node.chips import CHIPS, Chip, chip_by_esptool_name
from .firmware import Firmware
from .partitions import filesystem_region
from .report import PortLine, PortResult, Stopped

ROM_BAUD = ESPLoader.ESP_ROM_BAUD
RESET_MODES = ("default-reset", "usb-reset", "no-reset")
AFTER_MODES = ("hard-reset", "soft-reset", "no-reset", "watchdog-reset")


@dataclass(frozen=True)
class FlashJob:
    chip: Chip
    firmware: Firmware
    images: ImageCache
    baud: int = 460800
    before: str = "default-reset"
    after: str = "hard-reset"
    compress: bool | None = None  # None: esptool's default (compressed, as the stub runs)


class _Refused(Exception):
    """The port was checked and refused: nothing was written to it."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def flash_port(port: str, job: FlashJob, line: PortLine) -> PortResult:
    result = PortResult(port, transcript=line.transcript)
    started = time.monotonic()
    writing = False
    with esplog.attached(line):
        try:
            line.check_stop()
            line.phase("connecting")
            try:
                esp = connect_esp(port=port, chip="auto", initial_baud=ROM_BAUD, before=job.before)
            except (FatalError, serial.SerialException, OSError) as exc:
                raise _Refused(f"no ESP chip in download mode answered ({_first_line(exc)}); "
                               f"hold BOOT, tap EN/RST and retry") from None
            with esp:  # closes the port whatever happens
                esp = _check_chip(esp, job, result)
                line.phase("starting the flasher stub")
                esp = run_stub(esp)
                # No silent reconnect loop: a node that drops off mid-write is reported at once.
                esp.WRITE_FLASH_ATTEMPTS = 1
                if job.baud > ROM_BAUD:
                    esp.change_baud(job.baud)
                attach_flash(esp)
                flash_size = _flash_size(esp)
                try:
                    region = filesystem_region(job.firmware.table, flash_size)
                    image = job.images.image(region.size)
                except FieldnodeError as exc:
                    raise _Refused(str(exc)) from None
                fw = job.firmware
                line.expect_writes([len(fw.data), len(image)])
                line.check_stop()
                writing = True
                write_flash(esp, [(fw.chip.firmware_offset, fw.data), (region.offset, image)],
                            compress=job.compress is True, no_compress=job.compress is False)
                writing = False
                line.phase("resetting")
                reset_chip(esp, job.after)
            result.ok = True
            result.message = (f"firmware {len(fw.data) // 1024} KiB @0x{fw.chip.firmware_offset:x}, "
                              f"app {region.size // 1024} KiB @0x{region.offset:x}")
            line.phase("done")
        except _Refused as exc:
            result.message = f"{exc} (nothing written)"
            line.phase("refused")
        except Stopped:
            result.stopped = True
            result.message = ("stopped by Ctrl-C while writing: the flash is partly written; flash this port "
                              "again" if writing else "stopped by Ctrl-C (nothing written)")
            line.phase("stopped")
        except (FatalError, serial.SerialException, OSError, StopIteration) as exc:
            if writing:
                result.message = (f"connection lost or write failed while writing "
                                  f"({_first_line(exc)}); the flash is partly written: fix the "
                                  f"connection and flash this port again")
            else:
                result.message = f"{_first_line(exc)} (nothing written)"
            line.phase("failed")
    result.seconds = time.monotonic() - started
    return result


def _check_chip(esp: ESPLoader, job: FlashJob, result: PortResult) -> ESPLoader:
    detected = chip_by_esptool_name(esp.CHIP_NAME)
    if detected is None:
        raise _Refused(f"this is an {esp.CHIP_NAME}, which fieldnode does not flash "
                       f"(supported: {', '.join(CHIPS)})")
    result.chip = esp.get_chip_description()
    result.mac = ":".join(f"{b:02x}" for b in esp.read_mac())
    if detected is not job.chip:
        raise _Refused(f"this node is an {esp.CHIP_NAME} but the firmware and application are for "
                       f"{job.chip.name}; flash it with --chip {detected.name} and a "
                       f"{detected.micropython_board} firmware")
    return esp


def _flash_size(esp: ESPLoader) -> int:
    name = detect_flash_size(esp)
    size = flash_size_bytes(name) if name else None
    if not size:
        raise _Refused("the flash chip did not report its size (no SPI flash id); check the module")
    return size

"""An emulated ESP32 ROM serial loader (and esptool's flasher stub) on a pty, for the real esptool.

`EspRomEmulator` opens a pty pair and serves the SLIP-framed download-mode protocol on the master
end from a thread; esptool, pyserial or `fieldnode flash` open the slave path (`.port`) as if it
were a USB-serial adapter. The flash is a bytearray (`.flash`) tests can read; writes behave like
NOR flash (erase sets 0xFF, programming can only clear bits), so a write that skipped its erase
shows up as wrong bytes instead of passing silently.

What is emulated, and no more: chip detection (the magic word at 0x40001000 for ESP32/ESP8266,
GET_SECURITY_INFO's chip id for ESP32-S3/C3), eFuse MAC words, the SPI1 user-command registers
that esptool drives for flash-id/SFDP, plain and deflate flash writes, MD5, reads, RAM download
with the stub switch (no code runs: MEM_END answers OHAI and the loader then speaks the stub's
dialect), and an unplug that closes the pty like a pulled USB cable.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import os
import pty
import select
import struct
import threading
import time
import tty
import zlib
from dataclasses import dataclass, field
from collections.abc import Callable

# Opcodes, as esptool's ESPLoader.ESP_CMDS names them.
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0  # stub only
ERASE_REGION = 0xD1  # stub only
READ_FLASH = 0xD2  # stub only

# Error codes sent in the second status byte.
ERR_INVALID_MESSAGE = 0x05
ERR_FAILED = 0x06
ERR_BAD_CHECKSUM = 0x07
ERR_FLASH_WRITE = 0x08
ERR_FLASH_READ = 0x09
ERR_DEFLATE = 0x0B

CHIP_DETECT_MAGIC_REG = 0x40001000
# esptool takes a SYNC reply value of 0 to mean "the stub is already running"; the ROM's is not 0.
ROM_SYNC_VALUE = 0x20120707
CHECKSUM_SEED = 0xEF
SECTOR = 0x1000
MIB = 1024 * 1024

SPI_CMD_USR = 1 << 18
SPIFLASH_RDID = 0x9F
SPIFLASH_RDSFDP = 0x5A
SPIFLASH_STATUS_READS = (0x05, 0x35, 0x15)
# A Winbond-like SFDP table start: the signature esptool checks, then a byte at 0x10 that is not
# XMC's vendor id (esptool would otherwise run its XMC recovery sequence).
SFDP_TABLE = b"SFDP\x06\x01\x00\xff\x00\x06\x01\x10\x30\x00\x00\xff\xef\x00\x01\x01"
FLASH_VENDOR_WINBOND = 0xEF
FLASH_TYPE = 0x40


@dataclass(frozen=True)
class ChipModel:
    """The registers that tell esptool which chip it talks to (values from esptool's targets/)."""

    name: str
    magic: int  # word at 0x40001000
    chip_id: int | None  # GET_SECURITY_INFO chip id; None: the ROM rejects the command
    spi_base: int  # SPI1 (flash) controller
    spi_usr2: int  # offsets from spi_base
    spi_miso_dlen: int
    spi_w0: int
    mac_low: int  # eFuse word with MAC bytes 2..5, big-endian
    mac_high: int  # eFuse word with MAC bytes 0..1 in its low 16 bits
    registers: dict[int, int] = field(default_factory=dict)  # other non-zero reset values


CHIPS: dict[str, ChipModel] = {
    "esp32": ChipModel(
        "esp32", magic=0x00F01D83, chip_id=None,
        spi_base=0x3FF42000, spi_usr2=0x24, spi_miso_dlen=0x2C, spi_w0=0x80,
        mac_low=0x3FF5A004, mac_high=0x3FF5A008,
        registers={
            0x3FF5A00C: (1 << 15) | (1 << 9),  # eFuse word 3: revision bit 0, package D0WD
            0x3FF5A010: 0x50,  # eFuse word 4: 8 MHz oscillator calibration
            0x3FF5A014: 1 << 20,  # eFuse word 5: revision bit 1
            0x3FF6607C: 1 << 31,  # APB_CTL_DATE: revision bit 2 -> chip revision v3.0
            0x3FF40014: 347,  # UART_CLKDIV at 115200 baud: a 40 MHz crystal
            0x3FF5F06C: 1280 << 7,  # RTC calibration: the ROM's crystal estimate is 40 MHz too
        },
    ),
    "esp32s3": ChipModel(
        "esp32s3", magic=0x00000009, chip_id=9,
        spi_base=0x60002000, spi_usr2=0x20, spi_miso_dlen=0x28, spi_w0=0x58,
        mac_low=0x60007044, mac_high=0x60007048,
    ),
    "esp32c3": ChipModel(
        "esp32c3", magic=0x1B31506F, chip_id=5,
        spi_base=0x60002000, spi_usr2=0x20, spi_miso_dlen=0x28, spi_w0=0x58,
        mac_low=0x60008844, mac_high=0x60008848,
    ),
    # Not a target of the project: here so a test can present "some other Espressif chip".
    "esp8266": ChipModel(
        "esp8266", magic=0xFFF0C101, chip_id=None,
        spi_base=0x60000200, spi_usr2=0x24, spi_miso_dlen=0x2C, spi_w0=0x40,
        mac_low=0x3FF00050, mac_high=0x3FF00054,
    ),
}


@dataclass
class EmulatorStats:
    bytes_in: int = 0
    bytes_out: int = 0
    flash_programmed: int = 0  # bytes written into the flash array (after inflating)
    stub_starts: int = 0
    baud: int | None = None  # last CHANGE_BAUDRATE request
    write_started: float | None = None  # monotonic time of the first flash write command
    write_ended: float | None = None  # ... and of the last byte programmed
    bytes_in_at_write_start: int = 0
    bytes_in_at_write_end: int = 0
    commands: collections.Counter = field(default_factory=collections.Counter)


class _Fail(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _FlashWrite:
    offset: int
    block_size: int
    inflate: zlib._Decompress | None = None  # set for FLASH_DEFL_*
    position: int = 0  # next flash address of the inflated stream


@dataclass
class _FlashRead:
    offset: int
    length: int
    packet: int
    in_flight: int
    sent: int = 0
    acked: int = 0


class EspRomEmulator:
    """A download-mode ESP chip behind a pty: `port` is the path to hand to esptool.

    ``chip`` is a key of CHIPS or a ChipModel; ``magic`` overrides the detect word (an
    unknown chip). ``unplug_after_flash_bytes`` closes the pty, without answering, once that many
    bytes were programmed: an unplug in the middle of a write, at a deterministic point.
    ``hold_after_flash_bytes`` stalls the chip there instead, before it answers the write, until
    ``release()``: ``held`` is set meanwhile, so a test can act (press Ctrl-C) while the write is
    certainly in flight. esptool waits for the answer a few seconds (its DEFAULT_TIMEOUT), so
    release soon.
    ``line_rate`` paces both directions like a UART (10 bits a byte at the baud rate esptool set,
    115200 until CHANGE_BAUDRATE): without it a pty moves bytes as fast as the CPUs allow.
    """

    def __init__(self, chip: str | ChipModel = "esp32", *, flash_size: int = 4 * MIB,
                 mac: bytes = bytes.fromhex("240ac4f1e2d3"), magic: int | None = None,
                 unplug_after_flash_bytes: int | None = None, hold_after_flash_bytes: int | None = None,
                 line_rate: bool = False) -> None:
        model = CHIPS[chip] if isinstance(chip, str) else chip
        if magic is not None:
            model = dataclasses.replace(model, magic=magic)
        if flash_size < 256 * 1024 or flash_size & (flash_size - 1):
            raise ValueError("flash_size must be a power of two of at least 256 KiB")
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        self.chip = model
        self.mac = bytes(mac)
        self.flash = bytearray(b"\xff" * flash_size)
        self.stats = EmulatorStats()
        self.stub_running = False
        self.unplug_after_flash_bytes = unplug_after_flash_bytes
        self.hold_after_flash_bytes = hold_after_flash_bytes
        self.held = threading.Event()
        self._released = threading.Event()
        self.line_rate = line_rate
        self.baud = 115200
        self._line_free = 0.0
        self.regs: dict[int, int] = dict(model.registers)
        self.regs[CHIP_DETECT_MAGIC_REG] = model.magic
        self.regs[model.mac_low] = int.from_bytes(self.mac[2:6], "big")
        self.regs[model.mac_high] = int.from_bytes(self.mac[0:2], "big")
        self._write: _FlashWrite | None = None
        self._read: _FlashRead | None = None
        self._after_reply: Callable[[], None] | None = None  # a state change that follows the reply
        self._begin_time = 0.0
        self._begin_bytes_in = 0
        self._ram: bytearray = bytearray()
        self._rx = bytearray()
        self._tx = bytearray()
        self._plugged = True
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

        self._master, slave = pty.openpty()
        # Raw before any client opens it: with the default echo, our replies would come back to us.
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        # Only the master is kept: a slave fd held here would make the port look busy to others.
        os.close(slave)
        os.set_blocking(self._master, False)

        self._rom_handlers = {
            SYNC: self._sync, READ_REG: self._read_reg, WRITE_REG: self._write_reg,
            SPI_SET_PARAMS: self._ok, SPI_ATTACH: self._ok, CHANGE_BAUDRATE: self._change_baud,
            GET_SECURITY_INFO: self._security_info,
            FLASH_BEGIN: self._flash_begin, FLASH_DATA: self._flash_data, FLASH_END: self._flash_end,
            FLASH_DEFL_BEGIN: self._defl_begin, FLASH_DEFL_DATA: self._defl_data,
            FLASH_DEFL_END: self._flash_end, SPI_FLASH_MD5: self._md5,
            READ_FLASH_SLOW: self._read_flash_slow,
            MEM_BEGIN: self._mem_begin, MEM_DATA: self._mem_data, MEM_END: self._mem_end,
        }
        self._stub_handlers = {
            **{op: h for op, h in self._rom_handlers.items() if op != READ_FLASH_SLOW},
            ERASE_FLASH: self._erase_flash, ERASE_REGION: self._erase_region,
            READ_FLASH: self._read_flash,
        }
        self._thread = threading.Thread(target=self._serve, name=f"esp-rom {self.port}", daemon=True)
        self._thread.start()

    # -- public surface ------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._plugged

    def release(self) -> None:
        """Lets a chip held by hold_after_flash_bytes answer and go on."""
        self._released.set()

    def unplug(self) -> None:
        """Close the pty as a pulled cable would: the client's next read or write fails."""
        self._stop.set()
        self._released.set()
        os.write(self._wake_w, b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.unplug()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> EspRomEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flash_bytes(self, offset: int, length: int) -> bytes:
        return bytes(self.flash[offset:offset + length])

    # -- the serial loop -----------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                writers = [self._master] if self._tx else []
                readable, writable, _ = select.select([self._master, self._wake_r], writers, [], 0.5)
                if self._stop.is_set():
                    break
                if self._master in readable:
                    try:
                        data = os.read(self._master, 65536)
                    except BlockingIOError:
                        data = b""
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        # EIO: no client has the port open. Replies to a closed port are lost,
                        # as they are on a real adapter.
                        self._tx.clear()
                        time.sleep(0.01)
                        continue
                    if data:
                        self.stats.bytes_in += len(data)
                        self._pace(len(data))
                        self._rx += data
                        self._take_frames()
                if self._tx and self._plugged:
                    self._flush()
        finally:
            self._plugged = False
            try:
                os.close(self._master)
            except OSError:
                pass

    def _flush(self) -> None:
        try:
            n = os.write(self._master, self._tx[:65536])
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            self._tx.clear()
            return
        self.stats.bytes_out += n
        del self._tx[:n]
        self._pace(n)

    def _pace(self, nbytes: int) -> None:
        """With line_rate: wait until nbytes would have crossed a UART at the current baud."""
        if not self.line_rate:
            return
        now = time.monotonic()
        self._line_free = max(self._line_free, now) + nbytes * 10 / self.baud
        if self._line_free > now:
            time.sleep(self._line_free - now)

    def _take_frames(self) -> None:
        rx = self._rx
        while not self._stop.is_set():
            start = rx.find(0xC0)
            if start < 0:
                rx.clear()
                return
            end = rx.find(0xC0, start + 1)
            if end < 0:
                del rx[:start]
                return
            if end == start + 1:  # C0 C0: one frame's end, the next one's start
                del rx[:end]
                continue
            body = bytes(rx[start + 1:end]).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
            del rx[:end + 1]
            self._handle(body)

    def _send(self, body: bytes) -> None:
        self._tx += b"\xc0" + body.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"

    def _reply(self, op: int, value: int = 0, payload: bytes = b"", error: int = 0) -> None:
        # The ROM sends 4 status bytes (2 reserved), the stub 2.
        status = bytes((1 if error else 0, error)) + (b"" if self.stub_running else b"\0\0")
        self._send(struct.pack("<BBHI", 1, op, len(payload) + len(status), value) + payload + status)

    def _handle(self, packet: bytes) -> None:
        if self._read is not None and len(packet) == 4:
            self._read_ack(struct.unpack("<I", packet)[0])
            return
        if len(packet) < 8 or packet[0] != 0:
            return  # not a request: the ROM ignores it
        _, op, size, checksum = struct.unpack_from("<BBHI", packet)
        data = packet[8:8 + size]
        self.stats.commands[op] += 1
        handler = (self._stub_handlers if self.stub_running else self._rom_handlers).get(op)
        if handler is None:
            self._reply(op, error=ERR_INVALID_MESSAGE)
            return
        try:
            result = handler(data, checksum)
        except _Fail as fail:
            self._reply(op, error=fail.code)
            return
        except struct.error:
            self._reply(op, error=ERR_INVALID_MESSAGE)
            return
        if not self._plugged or self._stop.is_set():
            return
        if result is not None:
            value, payload = result
            self._reply(op, value, payload)
        if self._after_reply is not None:
            action, self._after_reply = self._after_reply, None
            action()

    # -- commands ------------------------------------------------------------------------------

    @staticmethod
    def _checked(data: bytes, checksum: int) -> tuple[int, int, bytes]:
        length, seq = struct.unpack_from("<II", data)
        block = data[16:16 + length]
        state = CHECKSUM_SEED
        for b in block:
            state ^= b
        if state != checksum & 0xFF or len(block) != length:
            raise _Fail(ERR_BAD_CHECKSUM)
        return length, seq, block

    def _ok(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        return 0, b""

    def _sync(self, data: bytes, checksum: int) -> None:
        # The ROM answers a SYNC eight times and esptool reads all eight.
        for _ in range(8):
            self._reply(SYNC, 0 if self.stub_running else ROM_SYNC_VALUE)

    def _read_reg(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        (addr,) = struct.unpack_from("<I", data)
        return self.regs.get(addr, 0), b""

    def _write_reg(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        for i in range(0, len(data) - 15, 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            self.regs[addr] = (self.regs.get(addr, 0) & ~mask | value & mask) & 0xFFFFFFFF
            if addr == self.chip.spi_base and value & mask & SPI_CMD_USR:
                self._spi_user_command()
        return 0, b""

    def _spi_user_command(self) -> None:
        chip = self.chip
        command = self.regs.get(chip.spi_base + chip.spi_usr2, 0) & 0xFF
        miso_bits = (self.regs.get(chip.spi_base + chip.spi_miso_dlen, 0) & 0xFFF) + 1
        address = self.regs.get(chip.spi_base + 4, 0) >> 8  # esptool sends 24-bit addresses MSB-first
        if command == SPIFLASH_RDID:
            capacity = len(self.flash).bit_length() - 1
            value = FLASH_VENDOR_WINBOND | FLASH_TYPE << 8 | capacity << 16
        elif command == SPIFLASH_RDSFDP:
            value = int.from_bytes(SFDP_TABLE[address:address + 4].ljust(4, b"\xff"), "little")
        elif command in SPIFLASH_STATUS_READS:
            value = 0
        else:
            value = None  # reset, write-enable...: nothing to read back
        if value is not None:
            if miso_bits < 32:
                value &= (1 << miso_bits) - 1
            self.regs[chip.spi_base + chip.spi_w0] = value
        self.regs[chip.spi_base] = self.regs[chip.spi_base] & ~SPI_CMD_USR  # done at once

    def _change_baud(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        baud = struct.unpack_from("<I", data)[0]
        self.stats.baud = baud
        if baud:
            self._after_reply = lambda: setattr(self, "baud", baud)  # the reply goes at the old rate
        return 0, b""

    def _security_info(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        if self.chip.chip_id is None:
            raise _Fail(ERR_INVALID_MESSAGE)
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version
        return 0, struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0)

    def _erase(self, offset: int, size: int) -> None:
        start = offset - offset % SECTOR
        end = -(-(offset + size) // SECTOR) * SECTOR
        if end > len(self.flash):
            raise _Fail(ERR_FLASH_WRITE)
        self.flash[start:end] = b"\xff" * (end - start)

    def _program(self, address: int, data: bytes) -> None:
        end = address + len(data)
        if end > len(self.flash):
            raise _Fail(ERR_FLASH_WRITE)
        now = time.monotonic()
        if self.stats.write_started is None:
            self.stats.write_started = self._begin_time
            self.stats.bytes_in_at_write_start = self._begin_bytes_in
        self.stats.write_ended = now
        self.stats.bytes_in_at_write_end = self.stats.bytes_in
        # NOR flash: programming only clears bits.
        old = int.from_bytes(self.flash[address:end], "little")
        self.flash[address:end] = (old & int.from_bytes(data, "little")).to_bytes(len(data), "little")
        self.stats.flash_programmed += len(data)
        limit = self.unplug_after_flash_bytes
        if limit is not None and self.stats.flash_programmed >= limit:
            self.unplug()
        hold = self.hold_after_flash_bytes
        if hold is not None and self.stats.flash_programmed >= hold and not self.held.is_set():
            self.held.set()
            self._released.wait()  # on the serial thread: nothing is read or answered meanwhile

    def _mark_begin(self) -> None:
        self._begin_time = time.monotonic()
        self._begin_bytes_in = self.stats.bytes_in

    def _flash_begin(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        self._mark_begin()
        # The stub sends a fifth word (encrypted write), the ESP32 ROM does not.
        erase_size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        self._erase(offset, erase_size)
        self._write = _FlashWrite(offset, block_size)
        return 0, b""

    def _flash_data(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        _length, seq, block = self._checked(data, checksum)
        if self._write is None or self._write.inflate is not None:
            raise _Fail(ERR_FAILED)
        self._program(self._write.offset + seq * self._write.block_size, block)
        return 0, b""

    def _defl_begin(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        # ROM: size rounded up to erase blocks; stub: the inflated size. Both erase that much.
        size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        self._mark_begin()
        self._erase(offset, size)
        self._write = _FlashWrite(offset, block_size, zlib.decompressobj(), offset)
        return 0, b""

    def _defl_data(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        _length, _seq, block = self._checked(data, checksum)
        write = self._write
        if write is None or write.inflate is None:
            raise _Fail(ERR_FAILED)
        try:
            out = write.inflate.decompress(block)
        except zlib.error:
            raise _Fail(ERR_DEFLATE) from None
        self._program(write.position, out)
        write.position += len(out)
        return 0, b""

    def _flash_end(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        (stay,) = struct.unpack_from("<I", data)
        self._write = None
        if self.stub_running and not stay:
            # esptool's "stay in bootloader" from the stub: it reboots into the ROM loader.
            self._after_reply = self._leave_stub
        return 0, b""

    def _leave_stub(self) -> None:
        self.stub_running = False

    def _md5(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        address, size = struct.unpack_from("<II", data)
        if address + size > len(self.flash):
            raise _Fail(ERR_FLASH_READ)
        digest = hashlib.md5(self.flash[address:address + size])
        return 0, digest.digest() if self.stub_running else digest.hexdigest().encode()

    def _read_flash_slow(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        address, length = struct.unpack_from("<II", data)
        if length > 64 or address + length > len(self.flash):
            raise _Fail(ERR_FLASH_READ)
        return 0, bytes(self.flash[address:address + length]).ljust(64, b"\xff")

    def _mem_begin(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        self._ram = bytearray()
        return 0, b""

    def _mem_data(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        _length, _seq, block = self._checked(data, checksum)
        self._ram += block
        return 0, b""

    def _mem_end(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        no_entry, entry = struct.unpack_from("<II", data)
        if not no_entry and entry:
            self._after_reply = self._start_stub
        return 0, b""

    def _start_stub(self) -> None:
        # Whatever was uploaded is taken for esptool's stub: it greets, then speaks stub.
        self._send(b"OHAI")
        self.stub_running = True
        self.stats.stub_starts += 1

    def _erase_flash(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        self.flash[:] = b"\xff" * len(self.flash)
        return 0, b""

    def _erase_region(self, data: bytes, checksum: int) -> tuple[int, bytes]:
        offset, size = struct.unpack_from("<II", data)
        if offset % SECTOR or size % SECTOR:
            raise _Fail(ERR_FAILED)
        self._erase(offset, size)
        return 0, b""

    def _read_flash(self, data: bytes, checksum: int) -> None:
        offset, length, packet, in_flight = struct.unpack_from("<IIII", data)
        if offset + length > len(self.flash) or not packet:
            raise _Fail(ERR_FLASH_READ)
        self._reply(READ_FLASH, 0)
        self._read = _FlashRead(offset, length, packet, max(1, in_flight))
        self._pump_read()

    def _pump_read(self) -> None:
        read = self._read
        assert read is not None
        while read.sent < read.length and read.sent - read.acked < read.in_flight * read.packet:
            n = min(read.packet, read.length - read.sent)
            start = read.offset + read.sent
            self._send(bytes(self.flash[start:start + n]))
            read.sent += n

    def _read_ack(self, acked: int) -> None:
        read = self._read
        assert read is not None
        read.acked = acked
        if acked >= read.length:
            self._send(hashlib.md5(self.flash[read.offset:read.offset + read.length]).digest())
            self._read = None
        else:
            self._pump_read()

# Lines typed into the USB console, read without ever blocking the asyncio loop.
# On the ESP32 port sys.stdin.readline() returns only at a newline, and asyncio's StreamReader
# calls it once stdin has one byte: a half-typed command or noise on UART0 would hold every task
# until the watchdog resets the node. So the task waits in the loop's poll for the first byte,
# then takes only the bytes already there (poll with a zero timeout), one at a time into a line
# buffer. The buffer is made when a line starts and dropped when it ends: lines are rare (a
# command typed or pasted), and a node at rest should not hold 1.4 KB for them.
# It reads sys.stdin.buffer: raw bytes, so noise that is not UTF-8 cannot
# raise, and no \r -> \n translation (the port does that in sys.stdin only): \r and \n both end
# a line. A line longer than the buffer is discarded whole, with a warning.
import asyncio
import select
import sys
from micropython import const
from fnode import log

_LINE_MAX = const(1400)  # "FN1 " + base64 of the largest command frame (cose.MAX_FRAME, 1024 bytes)
_BURST = const(256)  # bytes taken per wake-up: about the port's stdin ring (260 bytes)


class ConsoleIn:
    def __init__(self, size=_LINE_MAX, stream=None):
        s = stream if stream is not None else getattr(sys.stdin, "buffer", sys.stdin)
        self.stream = s
        self.reader = asyncio.StreamReader(s)
        self.poller = select.poll()
        self.poller.register(s, select.POLLIN)
        self.size = size
        self.buf = None  # while a line is read
        self.one = bytearray(1)
        self.n = 0
        self.dropping = False  # inside a line that outgrew the buffer: skip to its end

    async def lines(self, handle):
        # Calls handle(memoryview of the line, without its end) for every complete line.
        # The view is only valid during the call.
        one = self.one
        while True:
            first = await self.reader.read(1)  # the loop's poll waits: other tasks run
            if not first:  # end of input: a closed stdin (unix port only) never reads again
                await asyncio.Event().wait()
            self._byte(first[0], handle)
            burst = _BURST  # then back to the loop: a fast USB console must not starve the rest
            while burst and self.poller.poll(0) and self.stream.readinto(one):
                self._byte(one[0], handle)
                burst -= 1

    def _byte(self, c, handle):
        if c == 10 or c == 13:
            n, dropped = self.n, self.dropping
            self.n = 0
            self.dropping = False
            if dropped:
                log.warn("console: line longer than", self.size, "bytes discarded")
            elif n:
                handle(memoryview(self.buf)[:n])
            self.buf = None
            return
        if self.dropping:
            return
        if self.n == self.size:
            self.dropping = True
            self.buf = None
            return
        if self.buf is None:
            self.buf = bytearray(self.size)
        self.buf[self.n] = c
        self.n += 1

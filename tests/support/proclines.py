"""A running command's output lines as they come, so a test waits for what it said, not a time."""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


class ProcessLines:
    """Reads a text-mode Popen's stdout and stderr (both PIPE) in a thread each and keeps the lines."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines[name].append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def until(self, stream: str, found: Callable[[list[str]], bool], timeout: float) -> bool:
        """found(lines of stream) became true within timeout (checked on each new line)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not found(self.lines[stream]):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def wait(self, stream: str, found: Callable[[list[str]], bool], what: str, timeout: float = 30) -> list[str]:
        """The lines of stream once found(lines) holds; AssertionError after timeout or if the
        process ended without it."""
        assert self.until(stream, found, timeout), \
            f"no {what} within {timeout} s; stdout: {self.text('stdout')[-2000:]} stderr: {self.text('stderr')[-2000:]}"
        return list(self.lines[stream])

    def text(self, stream: str) -> str:
        with self._changed:
            return "".join(self.lines[stream])

    def wait_for_text(self, stream: str, text: str, timeout: float = 30) -> list[str]:
        return self.wait(stream, lambda lines: any(text in line for line in lines), repr(text), timeout)

    def finish(self, timeout: float = 30) -> tuple[str, str]:
        """Waits for the process to end and both streams to close; returns (stdout, stderr)."""
        self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return "".join(self.lines["stdout"]), "".join(self.lines["stderr"])


def stop_process(proc: subprocess.Popen) -> None:
    """Terminated, and killed when it does not end within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

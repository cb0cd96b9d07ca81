"""Run an interactive program (vdeterm, umlswitch top) on a pseudo-terminal and read its screen.

``Terminal(argv)`` starts the program with a pty of ``columns`` x ``rows`` as its stdin, stdout
and stderr; ``type`` sends keys, ``expect`` waits for text to appear in the output (with the
terminal's escape sequences and backspace redraws removed), ``close`` ends it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence

# CSI sequences (cursor moves, colours, erase), OSC titles, charset selection, and vdeterm's
# line redraws (a run of backspaces, blanks, backspaces).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\x1b[=>78]")
_REDRAW = re.compile(r"\x08+ *\x08*")


def plain(text: str) -> str:
    """Terminal output as text: escape sequences, redraws, NULs and carriage returns removed."""
    text = _ESCAPES.sub("", text)
    text = _REDRAW.sub("", text)
    return text.replace("\r", "").replace("\x00", "")


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        columns: int = 80,
        rows: int = 24,
        env: dict[str, str] | None = None,
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.master = master
        self.raw = b""
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            start_new_session=True,
            env={**os.environ, "TERM": "xterm-256color", **(env or {})},
        )
        os.close(slave)

    @property
    def text(self) -> str:
        return plain(self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the program closed the terminal
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = 10.0, *, since: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) matches the plain output after character ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern, re.S).search(self.text, since)
            if match is not None:
                return match
            remaining = deadline - time.monotonic()
            more = remaining > 0 and self._read(min(remaining, 0.1))
            if remaining <= 0 or (not more and self.proc.poll() is not None):
                raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{self.text}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = 5.0) -> int:
        """Wait for the program to exit (reading its output meanwhile); its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(max(deadline - time.monotonic(), 0.1))

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self.master)

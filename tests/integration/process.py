"""A umlswitch subprocess with its log in a file: read the log, wait for a line, stop it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

READY = "attached to unix socket"


class LoggedProcess:
    """What the integration tests' switch subprocesses share; ``proc`` writes to ``log_path``."""

    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.proc.poll() is not None:
                raise AssertionError(f"umlswitch exited ({self.proc.returncode}):\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log within {timeout} s:\n{self.log}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the switch and wait for it to exit; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"umlswitch ignored {sig!r}:\n{self.log}") from None
        return self.proc.wait()

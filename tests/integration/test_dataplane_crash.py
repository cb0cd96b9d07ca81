"""A bug in the data-plane thread ends the switch loudly: its traceback in the log, a clean-up,
exit status 70. Never a switch that runs on with a dead thread and forwards nothing.

The bug is planted in a real switch process: a ``ClientPort`` reader that raises, so the first
frame a guest sends crashes the thread.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from umlswitch.__main__ import EXIT_CRASHED
from umlswitch.testing import attach_sync

PLANTED = """
import sys
from umlswitch.ports.unix import clients

def broken(self):
    raise RuntimeError("planted bug in the data path")

clients.ClientReader.__call__ = broken
from umlswitch.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crash_in_the_data_plane_thread_stops_the_switch_with_status_70(
    tmp_path: Path,
) -> None:
    ctl = tmp_path / "ctl"
    proc = subprocess.Popen(
        [sys.executable, "-c", PLANTED, "-unix", str(ctl)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ctl.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = attach_sync(str(ctl))
        try:
            port.send(port.ether())
            out, err = proc.communicate(timeout=10)
        finally:
            port.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_CRASHED
    assert "the data-plane thread crashed" in out  # the log (stdout, as uml_switch's)
    assert "planted bug in the data path" in out  # with the traceback
    assert "the data plane crashed (see the log)" in err
    assert not ctl.exists()  # cleaned up on the way out

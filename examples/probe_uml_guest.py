"""Probe a real UML guest with the umlswitch scapy harness: ARP for it, then ping it.

Run as root on a machine with Debian's user-mode-linux package (and gcc on a CPU with AVX-512
or AMX, where UML 6.1 needs uml_xstate_shim.c, built into the script's private temp dir):

    python3 examples/probe_uml_guest.py

It starts a umlswitch, boots a UML guest (hostfs root, an init script written here) on
``eth0=daemon`` with address 10.0.0.2, attaches a harness port as 10.0.0.1, and asserts the
guest's ARP reply and ICMP echo reply. Exit status 0 when both came back. ``UML_LINUX`` names
another UML kernel (default ``/usr/bin/linux``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP

from umlswitch.testing import SwitchProcess, attach_sync

GUEST_MAC, GUEST_IP = "02:00:00:00:00:02", "10.0.0.2"
HARNESS_MAC, HARNESS_IP = "02:00:00:00:00:01", "10.0.0.1"

INIT = f"""#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -n -t proc proc /proc
ip link set lo up
ip addr add {GUEST_IP}/24 dev eth0
ip link set eth0 up
touch "$dir/up"
while [ ! -e "$dir/stop" ]; do sleep 0.2; done
halt -d -f
"""


def fp_state_shim(workdir: Path) -> dict[str, str]:
    """The environment for UML: on AVX-512/AMX hosts, Debian's UML 6.1 needs uml_xstate_shim.c."""
    flags = set(Path("/proc/cpuinfo").read_text().split())
    if not flags & {"avx512f", "amx_tile"}:
        return dict(os.environ)
    shim = workdir / "xstate.so"
    source = Path(__file__).with_name("uml_xstate_shim.c")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"], check=True)
    return {**os.environ, "LD_PRELOAD": str(shim)}


def boot_guest(ctl: str, workdir: Path) -> subprocess.Popen[bytes]:
    init = workdir / "init.sh"
    init.write_text(INIT)
    init.chmod(0o755)
    console = open(workdir / "console.log", "wb")  # noqa: SIM115 - lives as long as the guest
    return subprocess.Popen(
        [os.environ.get("UML_LINUX", "/usr/bin/linux"), "mem=64M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
         f"init={init}", f"dir={workdir}", f"eth0=daemon,{GUEST_MAC},unix,{ctl}",
         "con=null", "con0=fd:0,fd:1", f"umid=probe-{os.getpid()}", f"uml_dir={workdir}"],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
        start_new_session=True, env=fp_state_shim(workdir),
    )  # fmt: skip


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp, SwitchProcess() as switch:
        workdir = Path(tmp)
        guest = boot_guest(switch.control_path, workdir)
        try:
            deadline = time.monotonic() + 30
            while not (workdir / "up").exists():
                if guest.poll() is not None or time.monotonic() > deadline:
                    print((workdir / "console.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.05)
            with attach_sync(switch.control_path, mac=HARNESS_MAC) as port:
                who_has = port.ether() / ARP(hwsrc=HARNESS_MAC, psrc=HARNESS_IP, pdst=GUEST_IP)
                port.send(who_has)
                reply = port.receive(timeout=5, match={"ARP.op": 2, "ARP.psrc": GUEST_IP})
                assert reply[ARP].hwsrc == GUEST_MAC
                print(f"ARP: {GUEST_IP} is at {reply[ARP].hwsrc}")

                echo = port.ether(dst=GUEST_MAC) / IP(src=HARNESS_IP, dst=GUEST_IP) / ICMP(id=7)
                port.send(echo / b"umlswitch harness")
                pong = port.receive(timeout=5, match={"ICMP.type": 0, "ICMP.id": 7})
                assert pong[IP].src == GUEST_IP and pong[ICMP].load == b"umlswitch harness"
                print(f"ICMP: echo reply from {pong[IP].src}")
        finally:
            (workdir / "stop").touch()
            try:
                guest.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(guest.pid, signal.SIGKILL)
                guest.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

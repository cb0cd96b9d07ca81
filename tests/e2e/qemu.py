"""Boot real QEMU guests (and UML guests that take commands while they run) for the e2e tests.

A QEMU guest is Debian's ``qemu-system-x86_64`` (7.2) under TCG (``-accel tcg``: KVM stops with
"KVM internal error" on this kind of host) with Debian's cloud kernel (``linux-image-cloud-amd64``,
which builds virtio-net as modules) and an initramfs this module builds itself
(``build_initramfs``): busybox-static, iperf3 with the libraries ``ldd`` lists, the eight virtio
modules, and an init script that loads them, configures ``eth0`` from the kernel command line
(``e2e.ip=``), starts ``iperf3 -s -D``, says ``E2E-READY`` on the serial console and then reads
commands from it. No disk image, no network download.

The test talks to a guest through its serial console (``-serial stdio``, pipes): it sends
``run ID BASE64`` (the command, base64-encoded, so quoting never matters) and the guest answers

    E2E-OUT ID            then the command's stdout, base64
    E2E-ERR ID            then its stderr, base64
    E2E-END ID STATUS

A reader thread collects the answers, so commands run on several guests at once. A guest that
hears nothing for ``IDLE_POWEROFF`` seconds powers itself off, and every guest's process group
is killed at teardown: a failed test run leaves nothing behind.

``InteractiveUmlGuest`` is the UML guest of ``uml.py`` with the same property: it takes commands
(``submit``) while it runs instead of a fixed list at boot, so one booted guest serves several
tests of a module.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .uml import (
    CommandResult,
    E2EError,
    Guest,
    exit_status,
    kill_group,
    log_excerpt,
)

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
IPERF3 = Path("/usr/bin/iperf3")
# In load order: each needs only those before it (``modinfo -F depends``).
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
QEMU_BOOT_TIMEOUT = 90.0  # TCG on two shared cores, several guests booting at once
QEMU_MEMORY = "192M"
IDLE_POWEROFF = 600  # seconds without a command before a guest powers itself off
QEMU_MAC_PREFIX = "52:54:00:12:34:"


def cloud_kernel() -> tuple[Path, Path] | None:
    """The newest ``/boot/vmlinuz-*-cloud-amd64`` and its modules directory, or None."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))
    for kernel in reversed(kernels):
        version = kernel.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version / "kernel"
        if modules.is_dir() and os.access(kernel, os.R_OK):
            return kernel, modules
    return None


def why_no_qemu() -> str | None:
    """Why QEMU guests cannot be booted here, or None."""
    if shutil.which(QEMU) is None:
        return f"e2e: {QEMU} is missing (Debian package qemu-system-x86)"
    if cloud_kernel() is None:
        return "e2e: no /boot/vmlinuz-*-cloud-amd64 (Debian package linux-image-cloud-amd64)"
    if not BUSYBOX.exists() or "statically linked" not in _file_kind(BUSYBOX):
        return f"e2e: {BUSYBOX} is not a static busybox (Debian package busybox-static)"
    if not IPERF3.exists():
        return "e2e: iperf3 is missing (Debian package iperf3)"
    return None


def _file_kind(path: Path) -> str:
    """Whether an ELF file has a program interpreter (dynamic) or not, as `file` would say."""
    data = path.read_bytes()[:4096]
    return "dynamically linked" if b"/lib64/ld-linux" in data else "statically linked"


# ---------------------------------------------------------------------------------------------
# The initramfs

INIT_SCRIPT = r"""#!/bin/busybox sh
# init of a QEMU e2e guest, written by tests/e2e/qemu.py
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty -echo -onlcr 2>/dev/null
for m in @MODULES@; do
    insmod "/modules/$m.ko" || echo "E2E-FAILED insmod $m"
done
for word in $(cat /proc/cmdline); do
    case "$word" in e2e.ip=*) E2E_IP="${word#e2e.ip=}";; esac
done
ip link set lo up
if ! { ip link set eth0 up && ip addr add "$E2E_IP/24" dev eth0; }; then
    echo "E2E-FAILED network setup"; ip link
fi
iperf3 -s -D
e2e_run() {
    echo "$2" | base64 -d > /tmp/cmd.sh
    ( . /tmp/cmd.sh ) < /dev/null > /tmp/cmd.out 2> /tmp/cmd.err
    e2e_rc=$?
    echo "E2E-OUT $1"; base64 /tmp/cmd.out
    echo "E2E-ERR $1"; base64 /tmp/cmd.err
    echo "E2E-END $1 $e2e_rc"
}
echo "E2E-READY $E2E_IP"
while read -t @IDLE@ -r verb id code; do
    case "$verb" in run) e2e_run "$id" "$code";; esac
done
echo "E2E-POWEROFF"
poweroff -f
"""


def _newc(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One entry of a cpio archive in the "newc" format the kernel unpacks into its rootfs."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    entry = header + encoded
    entry += b"\0" * (-len(entry) % 4)
    entry += data
    entry += b"\0" * (-len(entry) % 4)
    return entry


def _libraries(program: Path) -> list[Path]:
    """The shared libraries ``ldd`` lists for ``program`` (the dynamic loader included)."""
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in re.findall(r"(/\S+\.so[.\d]*)", out)]


def initramfs_files(modules_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Path in the guest -> (mode, content) of every file of the initramfs."""
    script = INIT_SCRIPT.replace("@MODULES@", " ".join(VIRTIO_MODULES)).replace(
        "@IDLE@", str(IDLE_POWEROFF)
    )
    files: dict[str, tuple[int, bytes]] = {
        "init": (0o100755, script.encode()),
        "bin/busybox": (0o100755, BUSYBOX.read_bytes()),
        "bin/iperf3": (0o100755, IPERF3.read_bytes()),
    }
    for library in _libraries(IPERF3):
        files[str(library).lstrip("/")] = (0o100755, library.read_bytes())
    for module in VIRTIO_MODULES:
        found = list(modules_dir.rglob(f"{module}.ko"))
        if not found:
            raise E2EError(f"e2e: no {module}.ko under {modules_dir}")
        files[f"modules/{module}.ko"] = (0o100644, found[0].read_bytes())
    return files


def build_initramfs(modules_dir: Path) -> Path:
    """The guests' initramfs (an uncompressed newc cpio), built once per content."""
    files = initramfs_files(modules_dir)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name][1])
    built = Path(tempfile.gettempdir()) / f"umlswitch-e2e-initramfs-{digest.hexdigest()[:12]}.cpio"
    if built.exists():
        return built
    directories = {"proc", "sys", "dev", "tmp", "root"}
    for name in files:
        parts = name.split("/")[:-1]
        directories.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    archive = bytearray()
    inode = 1
    for directory in sorted(directories):
        archive += _newc(directory, 0o40755, ino=inode)
        inode += 1
    for name in sorted(files):
        mode, data = files[name]
        archive += _newc(name, mode, data, ino=inode)
        inode += 1
    archive += _newc("TRAILER!!!", 0)
    partial = built.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(archive)
    partial.replace(built)
    return built


# ---------------------------------------------------------------------------------------------
# QEMU guests


@dataclass
class _Pending:
    done: threading.Event
    stdout: list[str]
    stderr: list[str]
    returncode: int | None = None


class QemuGuest:
    """One QEMU guest with one virtio-net NIC on ``netdev`` (a ``-netdev`` value, ``id=n0``)."""

    def __init__(self, name: str, ip: str, mac: str, netdev: str, workdir: Path) -> None:
        self.name = name
        self.ip = ip
        self.mac = mac
        self.netdev = netdev
        self.console_path = workdir / f"{name}.console.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = iter(range(1, 1 << 30))
        self._failed: str | None = None
        self._commands: dict[int, str] = {}
        self.boot_seconds: float | None = None
        self._started_at = 0.0

    def argv(self, kernel: Path, initramfs: Path) -> list[str]:
        return [
            QEMU,
            "-accel",
            "tcg",
            "-m",
            QEMU_MEMORY,
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initramfs),
            "-append",
            f"console=ttyS0 quiet loglevel=1 panic=-1 e2e.ip={self.ip}",
            "-netdev",
            self.netdev,
            "-device",
            f"virtio-net-pci,netdev=n0,mac={self.mac}",
        ]

    def start(self, kernel: Path, initramfs: Path) -> None:
        """Boot (without waiting); ``wait_up`` waits for the guest's eth0."""
        argv = self.argv(kernel, initramfs)
        self.console_path.write_text(f"[e2e] $ {shlex.join(argv)}\n")
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._read_console, daemon=True).start()

    def _read_console(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        current: _Pending | None = None
        target: list[str] | None = None
        with self.console_path.open("a", errors="replace") as log:
            for raw in self._proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                words = line.split()
                if words[:1] == ["E2E-OUT"] and len(words) == 2:
                    current = self._pending.get(int(words[1]))
                    target = current.stdout if current else None
                elif words[:1] == ["E2E-ERR"] and current is not None:
                    target = current.stderr
                elif words[:1] == ["E2E-END"] and current is not None and len(words) == 3:
                    current.returncode = int(words[2])
                    current.done.set()
                    current = target = None
                elif target is not None:
                    target.append(line)
                    continue  # base64: not worth a log line
                else:
                    log.write(line + "\n")
                    log.flush()
                    if line.startswith("E2E-READY"):
                        self.boot_seconds = time.monotonic() - self._started_at
                        self._ready.set()
                    elif line.startswith("E2E-FAILED"):
                        self._failed = line
                        self._ready.set()
        self._ready.set()  # the console ended: QEMU is gone

    def _exited(self) -> str | None:
        status = exit_status(self._proc) if self._proc is not None else None
        return None if status is None else f"QEMU {status}"

    def wait_up(self, timeout: float = QEMU_BOOT_TIMEOUT) -> None:
        """Wait until the guest's eth0 is configured (E2E-READY on its console)."""
        if not self._ready.wait(timeout):
            raise E2EError(
                f"QEMU guest {self.name} did not come up within {timeout:.0f} s\n"
                f"{log_excerpt(self.console_path)}"
            )
        reason = self._failed or (None if self.boot_seconds is not None else self._exited())
        if reason is not None:
            raise E2EError(f"QEMU guest {self.name}: {reason}\n{log_excerpt(self.console_path)}")

    def submit(self, command: str) -> int:
        """Start ``command`` (shell text) in the guest; ``result`` waits for it."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        number = next(self._ids)
        self._pending[number] = _Pending(threading.Event(), [], [])
        code = base64.b64encode(command.encode()).decode()
        with self._lock:
            self._commands[number] = command
            try:
                proc.stdin.write(f"run {number} {code}\n".encode())
                proc.stdin.flush()
            except OSError as exc:
                raise E2EError(f"QEMU guest {self.name}: console gone: {exc}") from None
        return number

    def result(self, number: int, timeout: float = 60.0) -> CommandResult:
        pending = self._pending[number]
        deadline = time.monotonic() + timeout
        while not pending.done.wait(0.2):
            reason = self._exited()
            if reason is None and time.monotonic() >= deadline:
                reason = f"timed out after {timeout:.0f} s"
            if reason is not None:
                raise E2EError(
                    f"QEMU guest {self.name}: command {self._commands[number]!r}: {reason}\n"
                    f"{log_excerpt(self.console_path)}"
                )
        assert pending.returncode is not None
        return CommandResult(
            guest=self.name,
            command=self._commands[number],
            returncode=pending.returncode,
            stdout=base64.b64decode("".join(pending.stdout)).decode(errors="replace"),
            stderr=base64.b64decode("".join(pending.stderr)).decode(errors="replace"),
        )

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        return self.result(self.submit(command), timeout)

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if exit_status(proc) is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)  # QEMU exits at once on SIGTERM
            deadline = time.monotonic() + 3
            while exit_status(proc) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        kill_group(proc, 5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# ---------------------------------------------------------------------------------------------
# UML guests that take commands while they run

# iperf3 -s runs in the background of the command loop (its output goes to a log of its own).
_COMMAND_LOOP = r"""
iperf3 -s > "$E2E_DIR/$E2E_NAME.iperf3.log" 2>&1 &
e2e_i=0
e2e_idle=0
until [ -e "$E2E_DIR/stop" ] || [ -e "$E2E_DIR/$E2E_NAME.stop" ]; do
    if [ -e "$E2E_DIR/$E2E_NAME.cmd$e2e_i.sh" ]; then
        e2e_run "$e2e_i"
        e2e_i=$((e2e_i + 1))
        e2e_idle=0
    else
        sleep 0.05
        e2e_idle=$((e2e_idle + 1))
        if [ "$e2e_idle" -gt $((E2E_LINGER * 20)) ]; then e2e_log "no command for long"; break; fi
    fi
done
"""
_DONE_LINE = 'touch "$E2E_DIR/$E2E_NAME.done"'


class InteractiveUmlGuest(Guest):
    """A UML guest of ``uml.py`` that runs commands given while it runs (``submit``).

    It starts an iperf3 server once its eth0 is up. Commands are files ``<name>.cmdN.sh`` that
    appear one after the other (written under another name, then renamed); the guest runs each
    as soon as it sees it, and ``result(N)`` of ``uml.Guest`` waits for it.
    """

    def init_script(self) -> str:
        assert not self.commands and not self.wait_for
        script = super().init_script()
        head, sep, tail = script.rpartition(_DONE_LINE)
        assert sep, "uml.Guest.init_script changed: no place for the command loop"
        return head + _COMMAND_LOOP + sep + tail

    def submit(self, command: str) -> int:
        number = len(self.commands)
        self.commands.append(command)
        path = self.workdir / f"{self.name}.cmd{number}.sh"
        partial = path.with_suffix(".tmp")
        partial.write_text(command + "\n")
        partial.replace(path)
        return number

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        return self.result(self.submit(command), timeout)

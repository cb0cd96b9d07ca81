"""The documentation runs as written: README.md, every page in docs/ and the examples.

What a page may hold, and what this file does with it:

* ```` ```python ```` blocks run (under pytest when they define a ``test_`` function).
* ```` ```sh ```` blocks are commands a user copies: each runs as root with ``bash -e -o
  pipefail`` in a sandbox of its own (``unshare``: private network, mount and pid namespaces,
  a fresh tmpfs on /tmp and /run, ``examples/`` in the working directory, multicast routed on
  lo as a host's default route would), and must exit 0 within its time. Whatever it leaves
  running is killed with its pid namespace.
* A block that cannot run on one test machine (it installs packages, needs systemd as PID 1 or a
  second host) is preceded by ``<!-- not run: WHY -->``; the reason must be given.
* ```` ```console ```` blocks are transcripts (a prompt, a command, what it printed: pids and
  times differ from run to run) and ```` ```text ```` blocks show syntax or file contents; neither
  runs.

Links: every relative link of README.md and of the pages resolves, and the README links every
page of DOCS_PAGES. The README's test command is the one ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# One page per topic, each linked from the README.
DOCS_PAGES = {
    "docs/guests.md",
    "docs/host.md",
    "docs/vlans-stp.md",
    "docs/impairment.md",
    "docs/management.md",
    "docs/service.md",
    "docs/security.md",
    "docs/testing.md",
    "benchmarks/README.md",
    "docs/uplink.md",
    "docs/observability.md",
    "docs/restart.md",
    "docs/architecture.md",
}
README_MAX_LINES = 250
SH_TIMEOUT = 240  # seconds for one block: QEMU guests under TCG on a loaded machine are slow

_BLOCK = re.compile(
    r"(?:<!-- not run: (?P<why>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S
)


def blocks(lang: str) -> list[tuple[str, int, str, str | None]]:
    """(page, index on the page, code, not-run reason) of every ``lang`` block of every page."""
    found = []
    for page in PAGES:
        matches = [m for m in _BLOCK.finditer(page.read_text()) if m["lang"] == lang]
        for index, match in enumerate(matches):
            found.append((page.relative_to(ROOT).as_posix(), index, match["code"], match["why"]))
    return found


PYTHON = blocks("python")
SH = [block for block in blocks("sh") if block[3] is None]
NOT_RUN = [block for block in blocks("sh") if block[3] is not None]


def _id(block: tuple[str, int, str, str | None]) -> str:
    return f"{block[0]}#{block[1]}"


def test_the_readme_is_short_and_the_pages_have_examples() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"
    assert len(PYTHON) >= 4
    assert len(SH) >= 2


@pytest.mark.parametrize("block", PYTHON, ids=_id)
def test_python_block_runs(block: tuple[str, int, str, str | None], tmp_path: Path) -> None:
    code = block[2]
    if "def test_" in code:  # a pytest example: run it under pytest, plugin fixtures and all
        test_file = tmp_path / "test_doc_example.py"
        test_file.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if "def test_" in code:
        assert "1 passed" in result.stdout


def _why_no_sandbox() -> str | None:
    if os.geteuid() != 0:
        return "the documented commands run as root (UML guests, taps, namespaces)"
    for tool in ("unshare", "ip", "umlswitch"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH"
    return None


SANDBOX = r"""
set -e
cd "$DOC_REPO/examples"  # first: the checkout may itself live under /tmp, which is covered next
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
ip link set lo up
ip route add 224.0.0.0/4 dev lo  # multicast leaves by lo, as by a host's default route
mkdir -p /tmp/user/examples && cp -a . /tmp/user/examples && cd /tmp/user
export HOME=/tmp/user
exec bash -e -o pipefail -c "$DOC_BLOCK"
"""


def _cpu_needs_the_uml_shim() -> bool:
    return bool({"avx512f", "amx_tile"} & set(Path("/proc/cpuinfo").read_text().split()))


def _cloud_kernel() -> bool:
    return any(Path("/boot").glob("vmlinuz-*-cloud-amd64"))


# What a block's words need from the machine: (word in the block, is it there?, what to install)
NEEDS: list[tuple[str, Callable[[], bool], str]] = [
    ("uml-guest.sh", lambda: Path("/usr/bin/linux").exists(), "Debian package user-mode-linux"),
    ("probe_uml_guest", lambda: Path("/usr/bin/linux").exists(), "Debian package user-mode-linux"),
    ("uml-guest.sh", lambda: not _cpu_needs_the_uml_shim() or bool(shutil.which("cc")), "gcc"),
    ("probe_uml_guest", lambda: not _cpu_needs_the_uml_shim() or bool(shutil.which("cc")), "gcc"),
    ("ping ", lambda: bool(shutil.which("ping")), "Debian package iputils-ping"),
    ("qemu-guest.sh", lambda: bool(shutil.which("qemu-system-x86_64")), "qemu-system-x86"),
    ("qemu-guest.sh", _cloud_kernel, "Debian package linux-image-cloud-amd64"),
    ("qemu-guest.sh", lambda: Path("/bin/busybox").exists(), "Debian package busybox-static"),
    ("vde", lambda: bool(shutil.which("vde_plug")), "Debian package vde2 (libvdeplug)"),
    ("tcpdump", lambda: bool(shutil.which("tcpdump")), "Debian package tcpdump"),
    ("socat", lambda: bool(shutil.which("socat")), "Debian package socat"),
    ("curl ", lambda: bool(shutil.which("curl")), "Debian package curl"),
    ("tap", lambda: Path("/dev/net/tun").exists(), "/dev/net/tun (the tun module)"),
]


def _missing(code: str) -> list[str]:
    return sorted({need for word, there, need in NEEDS if word in code and not there()})


def run_in_sandbox(code: str) -> subprocess.CompletedProcess[str]:
    """Run shell ``code`` as a user would, in a sandbox of its own (see the module docstring).

    Skips, saying what to install, when the block uses something this machine lacks.
    """
    reason = _why_no_sandbox()
    if reason is not None:
        pytest.skip(reason)
    missing = _missing(code)
    if missing:
        pytest.skip(f"the block needs {', '.join(missing)}")
    env = {**os.environ, "DOC_REPO": str(ROOT), "DOC_BLOCK": code}
    # --kill-child: a block that overruns its time is killed with everything it started (the
    # pid namespace ends with its first process), and its output pipes close.
    command = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return subprocess.run(
        [*command, "--propagation", "private", "bash", "-c", SANDBOX],
        capture_output=True,
        text=True,
        timeout=SH_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _report(code: str, result: subprocess.CompletedProcess[str]) -> str:
    return f"{code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.mark.e2e
@pytest.mark.parametrize("block", SH, ids=_id)
def test_sh_block_runs_as_written(block: tuple[str, int, str, str | None]) -> None:
    result = run_in_sandbox(block[2])
    assert result.returncode == 0, _report(block[2], result)


@pytest.mark.e2e
def test_the_uml_guest_example_boots_quietly_and_returns_the_commands_status() -> None:
    code = """umlswitch -daemon
examples/uml-guest.sh 7 'ip -o link show eth0; cat /proc/partitions'
status=0; examples/uml-guest.sh 8 'exit 3' || status=$?; echo "status $status"
umlswitch ctl shutdown"""
    result = run_in_sandbox(code)
    assert result.returncode == 0, _report(code, result)
    assert "link/ether 02:00:00:00:00:07" in result.stdout, _report(code, result)
    assert "uml-guest: exit status 0" in result.stdout and "status 3" in result.stdout
    # ubd0=/dev/null: no "Failed to initialize ubd device 0" for a guest without a disk
    assert "ubd" not in result.stdout + result.stderr, _report(code, result)


@pytest.mark.e2e
def test_the_qemu_guest_example_returns_the_commands_status() -> None:
    code = """umlswitch -daemon --stream unix:/tmp/qemu.sock
status=0
examples/qemu-guest.sh 10.0.0.9 stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/qemu.sock \
    'ip -o addr show eth0; exit 3' || status=$?
echo "status $status"
umlswitch ctl shutdown"""
    result = run_in_sandbox(code)
    assert result.returncode == 0, _report(code, result)
    assert "inet 10.0.0.9/24" in result.stdout and "status 3" in result.stdout, _report(
        code, result
    )
    assert "+ qemu-system-x86_64 -accel tcg" in result.stderr  # it shows what it runs


def test_blocks_not_run_say_why() -> None:
    for page, index, _, why in NOT_RUN:
        assert why and why.strip(), f"{page} block {index}: say why it is not run"


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in m]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        assert path.exists(), f"{page.name}: link to {link} ({name}): no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name}: link to {link}: no such heading"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"(?m)^#+ (.*)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_one_page_per_topic() -> None:
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in _links(README)}
    missing = [page for page in sorted(DOCS_PAGES) if (ROOT / page).resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def _readme_test_command() -> str:
    text = README.read_text()
    match = re.search(r"Run the tests.*?```sh\n(.*?)\n```", text, re.S)
    assert match, "README.md: no 'Run the tests' command block"
    return match[1].strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_test_command()
    assert "pytest" in command and "-e" not in command.split()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci], f".ci/run does not run {command!r}"

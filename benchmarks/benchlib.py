"""What the benchmark scripts share: a private network namespace, and which umlswitch tree runs.

**Which code runs.** A benchmark names the umlswitch tree(s) it measures: tree A is
``$UMLSW_BENCH_PYTHONPATH`` or, unset, this repository; ``--ab OTHER_TREE`` adds tree B, labelled
``umlswitch-B``. Each tree is started through a small launcher script (``Tree.launcher``) that sets
``PYTHONPATH`` to the tree and runs Python with ``-P``, so neither the working directory nor the
script's directory can shadow it (``python -m umlswitch`` run from a checkout imports that
checkout, whatever PYTHONPATH says). The launcher prints ``umlswitch module: <file>`` on stderr
before it starts the switch; ``check_import`` reads that line back, refuses a run whose switch
imported anything but the tree's own ``umlswitch/__init__.py``, and prints the path the first
time each label starts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NETNS_ENV = "UMLSW_BENCH_NETNS"
TREE_ENV = "UMLSW_BENCH_PYTHONPATH"
MODULE_MARK = "umlswitch module:"
QLEN_PATH = Path("/proc/sys/net/unix/max_dgram_qlen")

# What the launcher runs: say which umlswitch was imported, then run the console entry point
# (`umlswitch.__main__.run` reads sys.argv[1:], which under -c is the launcher's arguments).
_LAUNCH = (
    "import sys, umlswitch; "
    f'print("{MODULE_MARK}", umlswitch.__file__, file=sys.stderr, flush=True); '
    "from umlswitch.__main__ import run; run()"
)

_announced: set[str] = set()


@dataclass(frozen=True)
class Tree:
    """A checkout whose ``umlswitch`` package a benchmark runs, under a label for the tables."""

    label: str
    path: Path

    @property
    def module(self) -> Path:
        """The file the switch must import: this tree's ``umlswitch/__init__.py``."""
        return self.path / "umlswitch" / "__init__.py"

    def launcher(self, directory: Path) -> Path:
        """An executable in `directory` that runs this tree's umlswitch with its arguments."""
        script = directory / f"run-{self.label}"
        python = shlex.quote(sys.executable)
        script.write_text(
            "#!/bin/sh\n"
            f"# {self.label}: umlswitch from {self.path}. -P keeps the working directory off\n"
            "# sys.path, so only PYTHONPATH decides which umlswitch is imported.\n"
            f"PYTHONPATH={shlex.quote(str(self.path))} "
            f'exec {python} -P -c {shlex.quote(_LAUNCH)} "$@"\n'
        )
        script.chmod(0o755)
        return script

    def check_import(self, output: str) -> str:
        """The module file named in the switch's `output`; exit unless it is this tree's own."""
        lines = [line for line in output.splitlines() if line.startswith(MODULE_MARK)]
        if not lines:
            raise SystemExit(f"{self.label} did not say which umlswitch it imported:\n{output}")
        imported = lines[-1][len(MODULE_MARK) :].strip()
        if Path(imported).resolve() != self.module.resolve():
            raise SystemExit(f"{self.label} imported {imported}, not {self.module}")
        if self.label not in _announced:
            _announced.add(self.label)
            print(f"# {self.label} imports {imported}", flush=True)
        return imported


def add_tree_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ab",
        metavar="OTHER_TREE",
        help="also run umlswitch from OTHER_TREE (a checkout holding umlswitch/), "
        "labelled umlswitch-B; tree A is $UMLSW_BENCH_PYTHONPATH or this repository",
    )


def trees(ab: str | None) -> list[Tree]:
    """Tree A (``$UMLSW_BENCH_PYTHONPATH`` or this repository) and, with ``--ab``, tree B."""
    found = [Tree("umlswitch", _checked(os.environ.get(TREE_ENV) or str(REPO)))]
    if ab:
        found.append(Tree("umlswitch-B", _checked(ab)))
    return found


def _checked(path: str) -> Path:
    tree = Path(path).resolve()
    if not (tree / "umlswitch" / "__init__.py").is_file():
        raise SystemExit(f"{tree} holds no umlswitch package (umlswitch/__init__.py)")
    return tree


def switch_kinds(chosen: Sequence[str], umlswitch_trees: Sequence[Tree]) -> list[str]:
    """`chosen` with every tree's label in the place of ``umlswitch`` (B right after A)."""
    out: list[str] = []
    for kind in chosen:
        out += [tree.label for tree in umlswitch_trees] if kind == "umlswitch" else [kind]
    return out


def in_private_netns(prefix: str) -> None:
    """Re-run this script in a fresh network namespace and exit; return if already in one."""
    if NETNS_ENV in os.environ:
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root (it needs a private network namespace)")
    name = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        env = dict(os.environ, **{NETNS_ENV: name})
        rc = subprocess.call(["ip", "netns", "exec", name, sys.executable, *sys.argv], env=env)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    sys.exit(rc)


def set_dgram_qlen(qlen: int) -> str:
    """Set ``net.unix.max_dgram_qlen`` (per namespace) and return what the kernel now says."""
    QLEN_PATH.write_text(str(qlen))
    return QLEN_PATH.read_text().strip()


def add_qlen_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qlen",
        type=int,
        default=10,
        help="net.unix.max_dgram_qlen inside the private namespace (kernel default 10)",
    )


def fmt_spread(values: Sequence[float], fmt: str) -> str:
    """``median (min-max)`` of `values`, each formatted with `fmt`."""
    figures = (statistics.median(values), min(values), max(values))
    median, low, high = (format(v, fmt) for v in figures)
    return f"{median} ({low}-{high})"

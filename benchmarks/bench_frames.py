#!/usr/bin/env python3
"""Frames per second through umlswitch, the C uml_switch and vde_switch, side by side.

Run as root: ``python3 benchmarks/bench_frames.py`` (``--help`` for options). It compiles
``benchmarks/loadgen.c`` into ``benchmarks/build/``, re-runs itself inside a private network
namespace (abstract unix sockets live in a namespace), and for every case runs the switches in
alternating rounds (A B C A B C ...), each time on a fresh switch. For each run it records frames/s
delivered during the measured window, loss over the whole run, the switch's CPU time (utime+stime
from /proc/PID/stat) per delivered frame, and its peak RSS (VmHWM). It prints medians, min-max
spreads and ratios to uml_switch.

``--mode closed`` (the default) keeps a window of outstanding frames per sender. ``--mode open``
pushes as fast as the switch's socket accepts (the load generator waits for POLLOUT, see
``loadgen.c``) and reads the receivers between bursts; its loss is what the switch accepted and
never delivered, and it prints the load generator's own CPU use, which must stay well under 100 %
for the figures to be the switch's.
``--mode prompt`` is the open loop with *prompt readers*: the receivers are read by a process of
their own, each frame as it arrives (as guests on CPUs of their own read), so the switch rarely
meets a full queue; ``--mode open`` reads them in the senders' thread between bursts (slow
readers: their 10-frame queues overflow and the switch's backlogs work all the time).
``--mode pingpong`` bounces one frame between two ports and prints the median and 99th
percentile round trip, back to back and with ``--gap-ms`` (default 20) between round trips.

umlswitch runs from this repository, from ``$UMLSW_BENCH_PYTHONPATH``, and with ``--ab OTHER_TREE``
also from OTHER_TREE (labelled umlswitch-B) in the same rounds; each run checks which
``umlswitch/__init__.py`` the switch imported and the first run of each prints it. ``--args-a``
gives tree A more options (``--args-a='--rc vlans.rc'``: A with VLANs on, against B). ``--metrics-ab`` is that for
``--metrics``: A serves metrics (nobody scrapes), B is the same tree without.

The scale case attaches IDLE extra ports (default 1000) and makes the switch learn MACS source
addresses (default 8000) before a 64-byte unicast run between two more ports.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Tree,
    add_qlen_option,
    add_tree_options,
    fmt_spread,
    in_private_netns,
    set_dgram_qlen,
    switch_kinds,
    trees,
)

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
LOADGEN = BUILD / "loadgen"
# umlswitch-stream: umlswitch again, its ports QEMU-style stream connections to --stream unix:PATH
# (loadgen's stream mode) instead of UML-style datagram sockets: the two transports side by side.
SWITCHES = ("umlswitch", "umlswitch-stream", "uml_switch", "vde_switch")
STREAM = "umlswitch-stream"

Case = dict[str, Any]  # name, size, pairs, bcast, idle, macs (and gap_us for ping-pong)
Figures = dict[str, float]  # one run's results
Runs = dict[str, list[Figures]]  # by switch label


def build_loadgen() -> None:
    source = HERE / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(LOADGEN), str(source)], check=True)


class Running:
    """One switch process on a fresh control path, started in `workdir`."""

    def __init__(
        self, kind: str, workdir: Path, numports: int, tree: Tree | None, extra: list[str]
    ) -> None:
        self.kind = kind
        self.stdin = subprocess.DEVNULL
        self.stderr_path = workdir / f"{kind}.stderr"
        if tree is not None:
            self.ctl = workdir / f"{kind}.ctl"
            argv = [str(tree.launcher(workdir)), "-unix", str(self.ctl)]
            argv += ["--log-level", "warning", *extra]
            self.mode, ready = "uml", self.ctl
            if kind == STREAM:
                self.ctl = workdir / "stream.sock"
                argv += ["--stream", f"unix:{self.ctl}"]
                self.mode, ready = "stream", self.ctl
        elif kind == "uml_switch":
            self.ctl = workdir / "uml_switch.ctl"
            argv = ["uml_switch", "-unix", str(self.ctl)]
            self.mode, ready = "uml", self.ctl
        else:
            self.ctl = workdir / "vde"
            argv = ["vde_switch", "-s", str(self.ctl), "-n", str(numports)]
            self.mode, ready = "vde", self.ctl / "ctl"
            self.stdin = subprocess.PIPE  # vde_switch exits on EOF of its console (stdin)
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                argv,
                stdin=self.stdin,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=workdir,  # not the repository: nothing may shadow the tree under test
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not self._serving(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"{kind} did not start (status {self.proc.poll()}):\n{self.stderr()}"
                )
            time.sleep(0.02)
        if tree is not None:
            tree.check_import(self.stderr())

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @staticmethod
    def _serving(path: Path) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def vmhwm_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.kind == "vde_switch":
            shutil.rmtree(self.ctl, ignore_errors=True)


def loadgen_argv(switch: Running, case: Case, args: argparse.Namespace) -> list[str]:
    """The load generator's command line for `case` in ``args.mode`` against `switch`."""
    pid = switch.proc.pid
    if args.mode == "pingpong":
        params = [case["size"], args.seconds, case["gap_us"]]
    elif args.mode in ("open", "prompt"):
        params = [case["pairs"], int(case["bcast"]), case["size"], args.seconds, pid]
    else:
        params = [case["pairs"], int(case["bcast"]), case["size"], args.seconds, args.window, pid]
        params += [case["idle"], case["macs"]]
    return [str(LOADGEN), args.mode, switch.mode, str(switch.ctl), *map(str, params)]


def run_once(
    kind: str, case: Case, args: argparse.Namespace, workdir: Path, tree: Tree | None
) -> Figures:
    extra = shlex.split(args.args_a or "") if kind == "umlswitch" else []
    switch = Running(kind, workdir, numports=case["idle"] + 64, tree=tree, extra=extra)
    try:
        out = subprocess.run(
            loadgen_argv(switch, case, args),
            check=True,
            capture_output=True,
            text=True,
            timeout=args.seconds + 120,
        ).stdout
        result = json.loads(out)
        result["vmhwm_kib"] = switch.vmhwm_kib()
    finally:
        switch.stop()
    return figures(args.mode, result)


def figures(mode: str, result: dict[str, Any]) -> Figures:
    """One run's figures from the load generator's JSON line."""
    if mode == "pingpong":
        keys = ("min_us", "p50_us", "p90_us", "p99_us", "max_us", "n", "lost")
        return {key: result[key] for key in keys}
    delivered = max(result["delivered"], 1)
    tick_us = 1e6 / result["hz"]
    out = {
        "fps": result["delivered"] / result["secs"],
        "loss": 1 - result["delivered_all"] / max(result["expected_all"], 1),
        "cpu_us": result["cpu_ticks"] * tick_us / delivered,
        "rss_mb": result["vmhwm_kib"] / 1024,
    }
    if mode in ("open", "prompt"):
        out.update(gen_cpu=result["gen_cpu"], refused=result["refused"])
    else:
        out.update(attach_s=result["attach_idle_s"], stalls=result["stalls"])
    return out


def case(name: str, size: int, pairs: int = 1, bcast: bool = False, **extra: int) -> Case:
    return dict(name=name, size=size, pairs=pairs, bcast=bcast, idle=0, macs=0, **extra)


def cases(args: argparse.Namespace) -> list[Case]:
    out: list[Case] = []
    for size in args.sizes:
        if args.mode == "pingpong":
            out.append(case(f"{size}B ping-pong, back to back", size, gap_us=0))
            gap = f"{args.gap_ms:g} ms gaps"
            out.append(case(f"{size}B ping-pong, {gap}", size, gap_us=round(args.gap_ms * 1000)))
            continue
        for pairs in args.pairs:
            out.append(case(f"{size}B unicast {pairs} pair(s)", size, pairs))
        if args.mode == "closed":
            out.append(case(f"{size}B broadcast to 3", size, 3, bcast=True))
    if args.idle and args.mode == "closed":
        scale = case(f"64B unicast 1 pair, {args.idle} idle ports, {args.macs} MACs", 64)
        out.append(dict(scale, idle=args.idle, macs=args.macs))
    if args.only:
        out = [c for c in out if args.only in c["name"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=("closed", "open", "prompt", "pingpong"),
        default="closed",
        help="closed: a window of outstanding frames per sender (default); open: senders push "
        "as fast as the switch accepts, receivers read between bursts (slow readers); prompt: "
        "the same with receivers read by a process of their own (prompt readers); pingpong: "
        "round-trip latency of one frame",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window per run")
    parser.add_argument("--window", type=int, default=16, help="outstanding frames per sender")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1500])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--gap-ms", type=float, default=20.0, help="pingpong: pause between round trips"
    )
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle ports in the scale case (0: skip)"
    )
    parser.add_argument("--macs", type=int, default=8000, help="MACs learned in the scale case")
    add_qlen_option(parser)
    add_tree_options(parser)
    parser.add_argument(
        "--args-a", metavar="OPTIONS", help="more umlswitch options for tree A only"
    )
    parser.add_argument(
        "--metrics-ab",
        action="store_true",
        help="tree A with --metrics 127.0.0.1:0 (nobody scraping) against the same tree without "
        "it (umlswitch-B), in the same rounds: the data plane's cost of metrics being on",
    )
    parser.add_argument("--switches", nargs="+", default=list(SWITCHES), choices=SWITCHES)
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args()
    if args.metrics_ab:
        args.ab = args.ab or os.environ.get("UMLSW_BENCH_PYTHONPATH") or str(HERE.parent)
        args.args_a = f"{args.args_a or ''} --metrics 127.0.0.1:0"
        print("# umlswitch: --metrics on, nobody scraping; umlswitch-B: the same tree, off")

    if os.geteuid() != 0:
        raise SystemExit("run as root (it needs a private network namespace)")
    by_label = {tree.label: tree for tree in trees(args.ab)}
    first_tree = next(iter(by_label.values()))  # umlswitch-stream runs tree A
    build_loadgen()
    in_private_netns("umlsw-bench")
    kinds = switch_kinds(args.switches, list(by_label.values()))

    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # 1000 ports need 2000+ fds
    qlen = set_dgram_qlen(args.qlen)
    pattern = {
        "closed": f"closed loop, window {args.window}",
        "open": "open loop, slow readers",
        "prompt": "open loop, prompt readers (a process of their own)",
        "pingpong": f"ping-pong, back to back and {args.gap_ms:g} ms apart",
    }
    print(
        f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, net.unix.max_dgram_qlen={qlen}, "
        f"{pattern[args.mode]}, {args.seconds} s per run, {args.rounds} rounds, "
        f"order {' '.join(kinds)} per round",
        flush=True,
    )
    all_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="umlsw-bench-") as tmp:
        workdir = Path(tmp)
        for c in cases(args):
            runs: Runs = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    tree = by_label.get(kind, first_tree if kind == STREAM else None)
                    r = run_once(kind, c, args, workdir, tree)
                    runs[kind].append(r)
                    all_runs.append(dict(case=c["name"], switch=kind, **r))
            if args.mode == "pingpong":
                report_pingpong(c, runs)
            else:
                report(c, runs, args.mode)
    if args.json:
        Path(args.json).write_text(json.dumps(all_runs, indent=1))


def medians(runs: Runs) -> dict[str, Figures]:
    return {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}


def ratio(med: dict[str, Figures], kind: str, field: str, base_kind: str = "uml_switch") -> float:
    """`kind`'s median `field` as a multiple of `base_kind`'s (nan without it in the run)."""
    base = med.get(base_kind, {}).get(field)
    return med[kind][field] / base if base else float("nan")


def report(case: Case, runs: Runs, mode: str) -> None:
    print(f"\n## {case['name']}")
    med = medians(runs)
    extra = "  attach idle s" if case["idle"] else ""
    extra += "  loadgen CPU %" if mode in ("open", "prompt") else ""
    print(
        f"{'switch':16s} {'frames/s median (min-max)':>30s} {'x uml':>6s} {'x vde':>6s} "
        f"{'loss %':>7s} {'CPU us/frame (min-max)':>24s} {'x uml':>6s} {'x vde':>6s} "
        f"{'RSS MB':>7s}{extra}"
    )
    for kind, v in runs.items():
        m = med[kind]
        line = (
            f"{kind:16s} {fmt_spread([r['fps'] for r in v], ',.0f'):>30s} "
            f"{ratio(med, kind, 'fps'):6.2f} {ratio(med, kind, 'fps', 'vde_switch'):6.2f} "
            f"{100 * m['loss']:7.3f} {fmt_spread([r['cpu_us'] for r in v], '.2f'):>24s} "
            f"{ratio(med, kind, 'cpu_us'):6.2f} {ratio(med, kind, 'cpu_us', 'vde_switch'):6.2f} "
            f"{m['rss_mb']:7.1f}"
        )
        if case["idle"]:
            line += f"  {m['attach_s']:.3f}"
        if mode in ("open", "prompt"):
            line += f"  {100 * m['gen_cpu']:13.0f}"
        print(line, flush=True)
    print_ab(med, {"fps": "frames/s", "cpu_us": "CPU per frame"})


def report_pingpong(case: Case, runs: Runs) -> None:
    print(f"\n## {case['name']}")
    med = medians(runs)
    print(
        f"{'switch':16s} {'RTT us p50 (min-max)':>24s} {'x uml':>6s} {'x vde':>6s} "
        f"{'RTT us p99 (min-max)':>28s} {'x uml':>6s} {'round trips':>12s} {'lost':>5s}"
    )
    for kind, v in runs.items():
        print(
            f"{kind:16s} {fmt_spread([r['p50_us'] for r in v], '.1f'):>24s} "
            f"{ratio(med, kind, 'p50_us'):6.2f} {ratio(med, kind, 'p50_us', 'vde_switch'):6.2f} "
            f"{fmt_spread([r['p99_us'] for r in v], '.1f'):>28s} "
            f"{ratio(med, kind, 'p99_us'):6.2f} {sum(r['n'] for r in v):12d} "
            f"{sum(r['lost'] for r in v):5d}",
            flush=True,
        )
    print_ab(med, {"p50_us": "RTT p50", "p99_us": "RTT p99"})


def print_ab(med: dict[str, Figures], fields: dict[str, str]) -> None:
    """With --ab: tree B's medians of `fields` as multiples of tree A's."""
    if "umlswitch-B" in med and "umlswitch" in med:
        a, b = med["umlswitch"], med["umlswitch-B"]
        parts = [f"{label} x{b[field] / a[field]:.2f}" for field, label in fields.items()]
        print(f"umlswitch-B / umlswitch: {', '.join(parts)}", flush=True)


if __name__ == "__main__":
    main()

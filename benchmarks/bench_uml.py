#!/usr/bin/env python3
"""Two real UML guests on umlswitch and on a C switch: ping RTT and iperf3 TCP Mbit/s.

Run as root: ``python3 benchmarks/bench_uml.py [--transport daemon|vde] [--rounds 3]
[--seconds 5]``. It re-runs itself in a private network namespace and boots the guests with the
end-to-end tests' recipe (``tests/e2e/uml.py``: the host's / as a hostfs root, an init script of
our own), alternating the switches every round (A B A B ...), each on a fresh switch, and prints
medians, min-max spreads and ratios to the C switch of that transport:

* ``--transport daemon`` (the default): the guests attach with ``eth0=daemon,MAC,unix,CTL`` to
  ``umlswitch -unix CTL`` and to the C ``uml_switch -unix CTL``. vde_switch cannot be measured
  this way: UML's daemon transport speaks only the uml_switch dialect.
* ``--transport vde``: the guests attach with UML's ``eth0=vde,vde://DIR,MAC`` (libvdeplug) to
  ``umlswitch --vde DIR`` and to Debian's ``vde_switch -s DIR`` (run in the foreground, its
  console a pipe held open: it exits on EOF of stdin).

``--ab OTHER_TREE`` adds umlswitch from another checkout (see ``benchlib.py``); the first run of
each umlswitch tree prints the module file it imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchlib import (
    REPO,
    Tree,
    add_qlen_option,
    add_tree_options,
    in_private_netns,
    set_dgram_qlen,
    switch_kinds,
    trees,
)

sys.path.insert(0, str(REPO))

from tests.e2e.uml import SWITCH_ENV, GuestPool, PingSummary, Switch, Switches, ip_for
from tests.umlshim import private_uml_shim

PORT = 5201
# Per transport: the switches measured (umlswitch's trees first) and the baseline of the ratios.
SWITCHES = {"daemon": ("umlswitch", "uml_switch"), "vde": ("umlswitch", "vde_switch")}


def start_switch(switches: Switches, kind: str, tree: Tree | None, vde: bool) -> Switch:
    """A fresh switch of `kind` (a C switch, or a umlswitch tree run by its launcher).

    For `vde`, the switch serves the VDE directory `<workdir>/vde` (control socket `vde/ctl`).
    """
    workdir = switches.workdir
    if not vde:
        os.environ[SWITCH_ENV] = kind if tree is None else str(tree.launcher(workdir))
        switch = switches()
    else:
        vde_dir = workdir / "vde"
        if tree is None:
            argv = [kind, "-s", str(vde_dir)]
        else:
            argv = [str(tree.launcher(workdir)), "--vde", str(vde_dir)]
        switch = Switch(vde_dir / "ctl", argv, workdir / "switch.log", console=tree is None)
        switches.started.append(switch)  # stopped with the others
        switch.start()
    if tree is not None:
        tree.check_import(switch.log_path.read_text(errors="replace"))
    return switch


def one_round(
    kind: str, tree: Tree | None, vde: bool, seconds: int, pings: int
) -> tuple[float, float]:
    """(median ping RTT in ms, iperf3 Mbit/s) with two fresh guests on a fresh switch."""
    with tempfile.TemporaryDirectory(prefix="umlsw-bench-uml-") as tmp:
        workdir = Path(tmp)
        switches, pool = Switches(workdir), GuestPool(workdir)
        try:
            switch = start_switch(switches, kind, tree, vde)
            server = (
                f"iperf3 -s -1 -p {PORT} & server=$!\n"
                f'e2e_wait_listening {PORT} && touch "$E2E_DIR/iperf3.listening"\n'
                "wait $server"
            )
            client = [
                # warm up ARP and the MAC table, then measure RTT
                f"ping -n -c 2 -i 0.2 -W 2 {ip_for(1)} >/dev/null; "
                f"ping -n -c {pings} -i 0.05 -W 2 {ip_for(1)}",
                'e2e_wait_file "$E2E_DIR/iperf3.listening" && '
                f"iperf3 -c {ip_for(1)} -p {PORT} -t {seconds} -J",
            ]
            _, g2 = pool(switch, [server], client, vde=vde)
            ping, iperf = g2.results(timeout=seconds + 60)
            switch.check_alive()
        finally:
            try:
                pool.stop_all()
            finally:
                switches.stop_all()
    summary = PingSummary.parse(ping.stdout)
    if summary is None or summary.received == 0:
        raise SystemExit(f"ping failed through {kind}:\n{ping.describe()}")
    rtts = [
        float(line.split("time=")[1].split()[0])
        for line in ping.stdout.splitlines()
        if "time=" in line
    ]
    if iperf.returncode != 0:
        raise SystemExit(f"iperf3 failed through {kind}:\n{iperf.describe()}")
    bits = iperf.json()["end"]["sum_received"]["bits_per_second"]
    return statistics.median(rtts), bits / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--transport",
        choices=sorted(SWITCHES),
        default="daemon",
        help="UML's eth0 transport: daemon (umlswitch vs uml_switch, the default) or "
        "vde (libvdeplug: umlswitch --vde vs vde_switch)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration")
    parser.add_argument("--pings", type=int, default=20)
    add_qlen_option(parser)
    add_tree_options(parser)
    args = parser.parse_args()
    vde = args.transport == "vde"
    chosen = SWITCHES[args.transport]
    baseline = chosen[-1]
    by_label = {tree.label: tree for tree in trees(args.ab)}
    kinds = switch_kinds(chosen, list(by_label.values()))
    in_private_netns("umlsw-bench-uml")

    qlen = set_dgram_qlen(args.qlen)
    print(
        f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
        f"net.unix.max_dgram_qlen={qlen}, eth0={args.transport}, iperf3 {args.seconds} s, "
        f"{args.rounds} rounds, order {' '.join(kinds)} per round",
        flush=True,
    )
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for i in range(args.rounds):
        for kind in kinds:
            rtt, mbit = one_round(kind, by_label.get(kind), vde, args.seconds, args.pings)
            results[kind].append((rtt, mbit))
            print(
                f"round {i + 1} {kind:11s} rtt {rtt:.3f} ms  iperf3 {mbit:.0f} Mbit/s",
                flush=True,
            )
    print_table(results, baseline)


def print_table(results: dict[str, list[tuple[float, float]]], baseline: str) -> None:
    """Medians, min-max spreads and ratios of medians to `baseline`'s, one row per switch."""
    base_rtt = statistics.median(r for r, _ in results[baseline])
    base_mbit = statistics.median(m for _, m in results[baseline])
    short = f"x {baseline.split('_')[0]}"  # x uml, x vde
    print(
        f"\n{'switch':11s} {'ping RTT ms (min-max)':>24s} {short:>6s} "
        f"{'iperf3 Mbit/s (min-max)':>26s} {short:>6s}"
    )
    for kind, rows in results.items():
        rtts, mbits = [r for r, _ in rows], [m for _, m in rows]
        rtt, mbit = statistics.median(rtts), statistics.median(mbits)
        print(
            f"{kind:11s} {f'{rtt:.3f} ({min(rtts):.3f}-{max(rtts):.3f})':>24s} "
            f"{rtt / base_rtt:6.2f} {f'{mbit:.0f} ({min(mbits):.0f}-{max(mbits):.0f})':>26s} "
            f"{mbit / base_mbit:6.2f}"
        )


if __name__ == "__main__":
    with private_uml_shim():  # UML 6.1 on AVX-512/AMX hosts (tests/umlshim.py)
        main()

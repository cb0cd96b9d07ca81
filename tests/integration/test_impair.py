"""Impairment of a running switch (a subprocess): ``umlswitch ctl port/impair``, its JSON, the
drops in ``port/print`` and ``umlswitch top``, and ``SwitchProcess.impair``/``impaired``."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from scapy.layers.l2 import ARP, Ether

from tests.integration.conftest import MAC_B
from umlswitch.__main__ import main
from umlswitch.mgmt.client import MgmtClient
from umlswitch.mgmt.top import render, take_sample
from umlswitch.testing import SwitchProcess, SyncPort, wait_until_sync

pytestmark = pytest.mark.integration


Ctl = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ctl(switch: SwitchProcess, capsys: pytest.CaptureFixture[str]) -> Ctl:
    """ctl(*args) runs ``umlswitch ctl -unix CTL *args``: (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["ctl", "-unix", switch.control_path, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def as_json(ctl: Ctl, *args: str) -> Any:
    code, out, err = ctl("--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_port_impair_sets_shows_and_restores(ctl: Ctl, lan: tuple[SyncPort, SyncPort]) -> None:
    code, out, err = ctl("port/impair", "2", "out", "loss=5", "correlation=25", "delay=40ms",
                         "jitter=10ms", "rate=20mbit", "seed=42")  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "port 2 (" + as_json(ctl, "port/print", "2")["ports"][0]["name"] + ")",
        " in:  none",
        " out: loss 5% (correlation 25%), delay 40ms ± 10ms (uniform), rate 20mbit, "
        "limit 1000; seed 42",
        "      queued 0; dropped: loss 0, queue full 0; none",
    ]
    doc = as_json(ctl, "port/impair", "2")
    assert doc["in"] is None
    assert doc["out"]["setting"] == {
        "loss": 5.0,
        "correlation": 25.0,
        "delay": 0.04,
        "jitter": 0.01,
        "distribution": "uniform",
        "rate": 20_000_000,
        "limit": 1000,
        "duplicate": 0.0,
        "reorder": 0.0,
        "corrupt": 0.0,
        "seed": 42,
    }
    assert doc["out"]["seed"] == 42
    both = as_json(ctl, "port/impair", "1", "both", "duplicate=1")
    assert both["in"]["setting"]["duplicate"] == both["out"]["setting"]["duplicate"] == 1
    assert both["in"]["seed"] == both["out"]["seed"]  # chosen at random, shown for a replay
    printed = ctl("port/print", "2")[1]
    assert " impair out: loss 5% (correlation 25%), delay 40ms" in printed
    assert as_json(ctl, "port/print", "2")["ports"][0]["impair"]["out"]["seed"] == 42
    assert as_json(ctl, "port/impair", "2", "off") == {
        "id": 2,
        "name": doc["name"],
        "in": None,
        "out": None,
    }
    assert as_json(ctl, "port/print", "2")["ports"][0]["impair"] is None
    assert as_json(ctl, "port/impair", "1", "in", "off")["in"] is None
    assert as_json(ctl, "port/impair", "1")["out"]["setting"]["duplicate"] == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["port/impair"], 1022, "usage: port/impair N"),
        (["port/impair", "9", "loss=1"], 1006, "no port 9"),
        (["port/impair", "1", "in"], 1022, "give KEY=VALUE settings"),
        (["port/impair", "1", "in", "loss=1", "off"], 1022, "or off"),
        (["port/impair", "1", "sideways", "loss=1"], 1022, "expected KEY=VALUE"),
        (["port/impair", "1", "loss=200"], 1022, "percentage from 0 to 100"),
        (["port/impair", "1", "delay=40"], 1022, "duration with a unit"),
        (["port/impair", "1", "rate=20mb"], 1022, "unknown unit 'mb'"),
        (["port/impair", "1", "reorder=5"], 1022, "reorder needs a delay"),
    ],
)
def test_port_impair_refuses_what_it_cannot_do(
    ctl: Ctl, lan: tuple[SyncPort, SyncPort], args: list[str], code: int, message: str
) -> None:
    status, out, err = ctl("--json", *args)
    assert status == 1
    error = json.loads(out)["error"]
    assert error["code"] == code and message in error["message"], error
    assert message in err


def test_drops_show_by_reason_in_port_print_and_top(
    ctl: Ctl, switch: SwitchProcess, lan: tuple[SyncPort, SyncPort]
) -> None:
    a, b = lan
    ctl("port/impair", "2", "out", "loss=100")
    with MgmtClient(str(switch.mgmt_path)) as client:
        before = take_sample(client)
        for _ in range(7):
            a.send(Ether(dst=MAC_B) / ARP(op=2))
        wait_until_sync(
            lambda: as_json(ctl, "port/print", "2")["ports"][0]["drops"]["impair_loss_out"] >= 7,
            5,
            "7 frames lost on their way out to port 2",
        )
        after = take_sample(client)
    assert "drops: impair_loss_out=7" in ctl("port/print", "2")[1]
    assert as_json(ctl, "showinfo")["totals"]["drops"]["impair_loss_out"] == 7
    console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
    console.print(render(before, after, live=False))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    row = next(line for line in text.splitlines() if line.lstrip().startswith("2~"))
    assert row.split()[-1] == "7", text
    assert "~ impaired" in text and "drops: impair_loss_out=7" in text, text
    assert as_json(ctl, "port/impair", "2", "out", "off")["out"] is None
    assert a.fence(b) == [[]]  # none of the 7 came late: all were lost


def test_switch_process_impairs_a_harness_port_for_a_block(
    switch: SwitchProcess, lan: tuple[SyncPort, SyncPort]
) -> None:
    a, b = lan
    assert switch.port_number(a) == 1 and switch.port_number(b) == 2
    with switch.impaired(b, "out", loss=100, seed=3) as doc:
        assert doc["out"]["setting"]["loss"] == 100 and doc["out"]["seed"] == 3
        a.send(Ether(dst=MAC_B) / ARP(op=2, psrc="10.0.0.1"))
        wait_until_sync(
            lambda: switch.counters()["ports"][2]["drops"]["impair_loss_out"] == 1,
            what="the ARP lost on its way out to b",
        )
    assert switch.impairment(b) == {"id": 2, "name": doc["name"], "in": None, "out": None}
    assert a.fence(b) == [[]]  # lost, not late
    a.send(Ether(dst=MAC_B) / ARP(op=2, psrc="10.0.0.1"))
    assert b.receive(timeout=2, match=ARP).psrc == "10.0.0.1"
    delayed = switch.impair(b, "out", delay=0.3)
    assert delayed["out"]["text"] == "delay 300ms, limit 1000"
    start = time.monotonic()
    a.send(Ether(dst=MAC_B) / ARP(op=2, psrc="10.0.0.1"))
    b.receive(timeout=2, match=ARP)
    assert time.monotonic() - start >= 0.3
    switch.restore(b)
    with pytest.raises(ValueError, match="1022 Invalid argument: distribution="):
        switch.impair(b, distribution="pareto")
    with pytest.raises(LookupError):
        switch.impair(9, loss=1)


def test_a_static_port_starts_impaired(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    spec = f"{local}:127.0.0.1:9,out-delay=40ms,loss=2,seed=5"
    with SwitchProcess("-ucast", spec, directory=str(tmp_path)) as switch:
        doc = switch.impairment(1)
    assert doc["name"] == f"ucast:{local}->127.0.0.1:9"
    assert doc["in"]["setting"]["loss"] == 2 and doc["in"]["setting"]["delay"] == 0
    assert doc["out"]["setting"]["delay"] == 0.04 and doc["out"]["setting"]["loss"] == 2
    assert doc["in"]["seed"] == doc["out"]["seed"] == 5

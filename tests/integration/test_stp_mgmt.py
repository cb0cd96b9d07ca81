"""The spanning tree and storm control through the management socket and ``umlswitch top``:
switched on and off at run time, tuned per port, shown in ``fstp/print``, ``port/print`` (text
and JSON), ``showinfo`` and ``top``."""

from __future__ import annotations

import io

from rich.console import Console

from umlswitch.mgmt.client import MgmtClient
from umlswitch.mgmt.top import render, take_sample
from umlswitch.testing import SwitchProcess, attach_sync

MAC_A = "02:00:00:00:00:1a"
MAC_B = "02:00:00:00:00:1b"


def test_stp_and_storm_control_at_run_time(tmp_path) -> None:
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
        MgmtClient(str(switch.mgmt_path)) as client,
    ):
        assert client.json("fstp/print") == {"stp": False}
        assert client.json("port/print")["ports"][0]["stp"] is None
        assert client.json("fstp/setfstp 1") == {"stp": True}
        doc = client.json("fstp/print")
        assert doc["is_root"] and doc["root"] == doc["bridge"]
        assert [(p["role"], p["state"], p["edge"]) for p in doc["ports"]] == [
            ("designated", "forwarding", True)
        ] * 2
        assert client.json("fstp/setpriority 4096") == {"priority": 4096}
        assert client.json("fstp/print")["bridge"].startswith("4096.")
        client.json("fstp/setportprio 1 16")
        client.json("fstp/setcost 2 2000")
        client.json("fstp/setedge 2 0")
        ports = client.json("port/print")["ports"]
        assert (ports[0]["stp"]["priority"], ports[1]["stp"]["cost"]) == (16, 2000)
        assert ports[1]["stp"]["edge"] is False
        reply = client.run("fstp/setportprio 1 17")
        assert reply.code == 1022, reply
        text = client.run("fstp/print").lines
        assert text is not None
        assert any(line.startswith("   1 unix:1") and "designated" in line for line in text), text
        assert "stp " in "\n".join(client.run("showinfo").lines or ())

        # storm control: port 1 floods 20 broadcasts, 5 get through
        b.send(b.ether(dst=MAC_A) / b"b is here")  # learnt: a's fence to b is not flooded
        a.receive(match=lambda f: b"b is here" in bytes(f))
        client.json("port/setstormlimit 1 5")
        for i in range(20):
            a.send(a.ether() / f"storm {i}".encode())
        (got,) = a.fence(b, dst=MAC_B)  # (a known unicast: not limited)
        assert len([f for f in got if b"storm" in bytes(f)]) == 5
        port1 = client.json("port/print 1")["ports"][0]
        assert port1["storm_limit"] == 5 and port1["drops"]["storm"] == 15
        assert " storm limit 5 flooded frames/s" in (client.run("port/print 1").lines or ())

        first = take_sample(client)
        second = take_sample(client)
        console = Console(record=True, width=80, file=io.StringIO(), color_system=None)
        console.print(render(first, second))
        shown = console.export_text()
        assert all(len(line) <= 80 for line in shown.splitlines()), shown
        assert "STP" in shown and "ED F" in shown and "DS F" in shown, shown
        assert "stp root this switch" in shown, shown

        assert client.json("fstp/setfstp 0") == {"stp": False}
        assert client.json("port/setstormlimit all 0")["storm_limit"] == 0
        for i in range(20):
            a.send(a.ether() / f"free {i}".encode())
        (got,) = a.fence(b)
        assert len([f for f in got if b"free" in bytes(f)]) == 20
    log = switch.log
    assert "spanning tree on" in log and "spanning tree off" in log

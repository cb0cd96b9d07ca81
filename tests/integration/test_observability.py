"""Observability of the real daemon: ``--metrics`` scraped and parsed with prometheus_client's
own parser, ``umlswitch capture`` streaming live pcap, ``umlswitch events`` (docs/observability.md).
"""

from __future__ import annotations

import contextlib
import json
import select
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.l2 import Ether

from umlswitch.testing import SwitchProcess, attach_sync, wait_until_sync

pytestmark = pytest.mark.integration

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
UMLSWITCH = [sys.executable, "-m", "umlswitch"]


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics by (name, labels), parsed by prometheus_client's parser."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[Any, float], metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def metrics_url(switch: SwitchProcess) -> str:
    with switch.manage() as client:
        url: str = client.json("metrics/showinfo")["url"]
    return url


def test_a_scrape_shows_the_traffic_drops_and_table(tmp_path: Path) -> None:
    with (
        SwitchProcess("--metrics", "127.0.0.1:0", directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        url = metrics_url(switch)
        port_a, port_b = switch.port_number(a), switch.port_number(b)
        b.send(b.ether(dst=MAC_A) / b"hello")  # B is learned: A's frames are unicast to it
        a.receive()
        for n in range(100):
            a.send(a.ether(dst=MAC_B) / f"frame {n}".encode().ljust(50))
        a.send(b"\x02\x00\x00\x00")  # a runt
        a.fence(b)
        samples: dict[Any, float] = {}

        def counted() -> bool:
            nonlocal samples
            samples = scrape(url)
            return value(samples, "umlswitch_port_drops_total", **label(port_a), reason="runt") >= 1

        def label(port: int) -> dict[str, str]:
            names = {
                dict(labels)["port"]: dict(labels)["name"]
                for (name, labels) in scrape(url)
                if name == "umlswitch_port_rx_frames_total"
            }
            return {"port": str(port), "name": names[str(port)]}

        wait_until_sync(counted, 5, "the runt counted")
        assert value(samples, "umlswitch_port_rx_frames_total", **label(port_a)) >= 101
        assert value(samples, "umlswitch_port_tx_frames_total", **label(port_b)) >= 100
        assert value(samples, "umlswitch_port_rx_bytes_total", **label(port_a)) >= 100 * 64
        assert value(samples, "umlswitch_mac_table_entries") >= 2
        assert value(samples, "umlswitch_ports") == 2
        assert value(samples, "umlswitch_mac_events_total", event="learned") >= 2
        assert value(samples, "umlswitch_port_drops_total", **label(port_b), reason="giant") == 0
        assert value(samples, "umlswitch_port_queue_frames", **label(port_b)) == 0
        (version,) = [dict(k[1])["version"] for k in samples if k[0] == "umlswitch_build_info"]
        assert version and not any(k[0] == "umlswitch_stp_port_state" for k in samples)


def test_stp_port_state_is_a_series_while_stp_is_on(tmp_path: Path) -> None:
    with (
        SwitchProcess("--stp", "--metrics", "0", directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
    ):
        port = str(switch.port_number(a))
        states = {
            dict(labels)["state"]: v
            for (name, labels), v in scrape(metrics_url(switch)).items()
            if name == "umlswitch_stp_port_state" and dict(labels)["port"] == port
        }
        assert states == {"discarding": 0, "learning": 0, "forwarding": 1}  # a guest: an edge


def test_a_taken_metrics_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with SwitchProcess("--metrics", "0", directory=str(tmp_path)) as first:
        taken = metrics_url(first).rsplit(":", 1)[1].split("/")[0]
        result = subprocess.run(
            [*UMLSWITCH, "-unix", str(tmp_path / "ctl2"), "--metrics", taken],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert f"--metrics 127.0.0.1:{taken}: cannot listen: Address already in use" in result.stderr


def read_exactly(stream: IO[bytes], size: int, deadline: float) -> bytes:
    data = b""
    fd = stream.fileno()
    while len(data) < size:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"only {len(data)} of {size} bytes before the deadline"
        chunk = stream.read1(size - len(data))  # type: ignore[attr-defined]
        assert chunk, "the capture ended"
        data += chunk
    return data


def start_capture(switch: SwitchProcess, *args: str) -> subprocess.Popen[bytes]:
    reader = subprocess.Popen(
        [*UMLSWITCH, "capture", "-unix", switch.control_path, *args, "-w", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stderr is not None
    line = reader.stderr.readline().decode()  # said once the capture is live
    assert "capturing" in line, line
    return reader


def test_capture_streams_frames_as_they_pass_and_a_killed_reader_ends_only_its_capture(
    tmp_path: Path,
) -> None:
    with (
        contextlib.ExitStack() as stack,
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        reader = start_capture(switch)
        other = start_capture(switch, str(switch.port_number(b)))  # several captures at once
        stack.enter_context(reader)
        stack.enter_context(other)
        assert reader.stdout is not None and other.stdout is not None
        header = read_exactly(reader.stdout, 24, time.monotonic() + 5)
        assert struct.unpack("=IHHiIII", header)[0::6] == (0xA1B2C3D4, 1)  # magic, ethernet
        sent = [bytes(a.ether(dst=MAC_B) / f"live {n}".encode().ljust(46)) for n in range(10)]
        for frame in sent:
            a.send(frame)
            passed = time.monotonic()
            record = read_exactly(reader.stdout, 16, passed + 1.0)
            caplen, wirelen = struct.unpack("=IIII", record)[2:]
            assert (caplen, wirelen) == (len(frame), len(frame))
            assert read_exactly(reader.stdout, caplen, passed + 1.0) == frame  # byte for byte
            assert b.receive_bytes() == frame
        read_exactly(other.stdout, 24 + 10 * (16 + 60), time.monotonic() + 5)

        reader.kill()
        reader.wait(5)
        for n in range(5):  # the switch forwards on, the other capture too
            frame = bytes(a.ether(dst=MAC_B) / f"after {n}".encode().ljust(46))
            a.send(frame)
            assert b.receive_bytes() == frame
            assert read_exactly(other.stdout, 16 + 60, time.monotonic() + 5)[16:] == frame
        with switch.manage() as client:
            wait_until_sync(
                lambda: len(client.json("pcap/showinfo").get("live", [])) == 1,
                5,
                "the killed reader's capture ended",
            )
        other.terminate()
        other.wait(5)


def test_capture_count_writes_exactly_count_frames_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "five.pcap"
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B),
        subprocess.Popen(
            [*UMLSWITCH, "capture", "-unix", switch.control_path, "-c", "5", "-w", str(out)],
            stderr=subprocess.PIPE,
        ) as reader,
    ):
        assert reader.stderr is not None
        assert "capturing" in reader.stderr.readline().decode()
        for n in range(8):
            a.send(a.ether(dst=MAC_B) / f"count {n}".encode().ljust(46))
        assert reader.wait(10) == 0
        assert "5 frame(s) captured" in reader.stderr.read().decode()
    assert out.stat().st_size == 24 + 5 * (16 + 60)
    assert [bytes(p)[14:21] for p in _read_pcap(out)] == [f"count {n}".encode() for n in range(5)]


def _read_pcap(path: Path) -> list[Ether]:
    from scapy.utils import rdpcap

    return [Ether(bytes(packet)) for packet in rdpcap(str(path))]


def test_events_prints_attach_and_detach_of_one_port(tmp_path: Path) -> None:
    with (
        SwitchProcess(directory=str(tmp_path)) as switch,
        subprocess.Popen(
            [*UMLSWITCH, "events", "-unix", switch.control_path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as events,
    ):
        assert events.stdout is not None
        try:
            first = json.loads(events.stdout.readline())
            assert first["event"] == "events/subscribed" and first["ports"] == []
            with attach_sync(switch.control_path, mac=MAC_A):
                pass
            attach = json.loads(events.stdout.readline())
            detach = json.loads(events.stdout.readline())
        finally:
            events.terminate()
    assert attach["event"] == "port/attach" and attach["kind"] == "unix"
    assert detach["event"] == "port/detach" and detach["port"] == attach["port"]
    assert 0 < attach["ts"] <= detach["ts"] <= time.time()


def test_a_reader_that_does_not_read_loses_capture_frames_never_switch_traffic(
    tmp_path: Path,
) -> None:
    with (
        contextlib.ExitStack() as stack,
        SwitchProcess(directory=str(tmp_path)) as switch,
        attach_sync(switch.control_path, mac=MAC_A) as a,
        attach_sync(switch.control_path, mac=MAC_B) as b,
    ):
        stalled = stack.enter_context(start_capture(switch))  # its stdout is never read
        payload = b"z" * 1400
        for burst in range(40):  # 4000 frames of 1414 bytes: far more than the capture holds
            for _ in range(100):
                a.send(a.ether(dst=MAC_B) / payload)
            (arrived,) = a.fence(b, dst=MAC_B)
            assert len(arrived) == 100, f"burst {burst}: {len(arrived)} of 100 frames arrived"
        with switch.manage() as client:
            (live,) = client.json("pcap/showinfo")["live"]
            ports = {p["id"]: p for p in client.json("port/print")["ports"]}
        assert live["dropped"] > 0  # counted, in the capture only
        assert sum(ports[switch.port_number(b)]["drops"].values()) == 0
        stalled.kill()


def test_the_rc_file_starts_metrics_and_metrics_stop_ends_them(tmp_path: Path) -> None:
    rc = tmp_path / "switch.rc"
    rc.write_text("# Prometheus on a free port\nmetrics/start 127.0.0.1:0\n")
    with SwitchProcess("--rc", str(rc), directory=str(tmp_path)) as switch:
        url = metrics_url(switch)
        assert value(scrape(url), "umlswitch_ports") == 0
        with switch.manage() as client:
            assert client.json("metrics/stop") == {"running": False, "url": None}
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)

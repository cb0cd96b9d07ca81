"""The trio part of loop and storm protection: build the guard from the command line, and the
task that runs the spanning tree's timers (hellos, forward delays, ageing of information).

Everything else happens in the fabric's call: a BPDU is handled, and its answers sent, as it
arrives (``umlswitch.fabric.guard``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

from umlswitch.config import SwitchConfig
from umlswitch.fabric.fabric import Fabric
from umlswitch.fabric.guard import Guard, LoopWatch
from umlswitch.fabric.stp import Bridge

STP_TICK = 0.05  # seconds between runs of the tree's timers


def bridge_mac() -> bytes:
    """A locally administered unicast address of the switch's own (its bridge id's MAC)."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFC) | 0x02
    return bytes(mac)


def new_bridge(config: SwitchConfig, mac: bytes | None = None) -> Bridge:
    return Bridge(
        mac or bridge_mac(),
        priority=config.stp_priority,
        port_priority=config.stp_port_priority,
        path_cost=config.stp_cost,
    )


def install(fabric: Fabric, config: SwitchConfig) -> Guard:
    """Give ``fabric`` its guard and loop watch, as the command line says."""
    guard = Guard(fabric, storm_limit=config.storm_limit)
    fabric.loop_watch = LoopWatch(fabric)
    if config.stp:
        guard.enable_stp(new_bridge(config))
    return guard


async def run(guard: Guard, apply: Callable[..., None] | None = None) -> None:
    """Run the tree's timers until cancelled (nothing to do while STP is off); ``apply`` is
    the data plane's, which applies each tick between two of its rounds."""
    while True:
        await trio.sleep(STP_TICK)
        if apply is None:
            guard.tick(trio.current_time())
        else:
            apply(guard.tick, trio.current_time())

"""``--rc FILE``: management commands run at start-up, before the switch announces itself.

The file holds one command per line, as typed at ``vdeterm`` or given to ``umlswitch ctl``
(``vlan/create 10``, ``port/setvlan 1 10``, ``hash/setexpire 60``...); empty lines and ``#``
comments are skipped. Every command runs in order in one management session of its own (logged
as ``--rc FILE``). The first failing line stops the start: ``StartupError`` names the file, the
line number, the line and the error, and the switch exits with status 1. ``logout`` ends the file
early; ``shutdown`` stops the switch once it has started.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from umlswitch.errors import StartupError
from umlswitch.listener import PeerCred
from umlswitch.mgmt import commands
from umlswitch.mgmt.protocol import parse_line

if TYPE_CHECKING:
    from umlswitch.mgmt.managed import ManagedSwitch

log = logging.getLogger("umlswitch.mgmt")


@dataclass(frozen=True)
class RcFile(PeerCred):
    """The start-up file as the management session's peer (the switch's own credentials)."""

    path: str = ""

    def __str__(self) -> str:
        return f"--rc {self.path}"


def read_rc_file(path: str) -> str:
    """The file's text; StartupError if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StartupError(f"--rc {path}: cannot read the file: {reason}") from None


async def run_rc_file(switch: ManagedSwitch, path: str, text: str) -> commands.Session:
    """Run every command of ``text`` (the file ``path``) on ``switch``; StartupError on the
    first that fails. Returns the session (``shutdown`` set if the file asked for it)."""
    peer = RcFile(os.getpid(), os.geteuid(), os.getegid(), path)
    session = commands.Session(switch, peer)
    ran = 0
    for number, line in enumerate(text.splitlines(), 1):
        invocation = parse_line(line)
        if invocation is None:
            continue
        reply = await commands.execute(session, invocation)
        if not reply.ok:
            raise StartupError(f"--rc {path} line {number}: {line.strip()}: {reply.message}")
        ran += 1
        if session.ended:
            break
    log.info("--rc %s: ran %d command(s)", path, ran)
    return session

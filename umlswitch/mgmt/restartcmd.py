"""The management console's ``restart``: hand the switch over, answer from the old process.

On success the old process exits right after the new one took over, without going back to the
event loop (so it reads no frame again): the answer is written then, synchronously
(``Session.send_now``), and the session ends with it. On failure the switch serves on and the
command fails with the reason (``umlswitch ctl restart`` exits 1).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from umlswitch.mgmt import protocol, views
from umlswitch.mgmt.protocol import Reply
from umlswitch.mgmt.views import Doc

if TYPE_CHECKING:
    from umlswitch.mgmt.commands import Session


async def restart_command(session: Session) -> Doc:
    """Restart: on success the process exits once ``answer`` has written the answer (a switch
    whose restart returns, a test's, answers as usual); RestartFailed if it did not happen."""
    old_pid = os.getpid()
    as_json = session.json
    doc: Doc = {"restarted": True, "old_pid": old_pid, "pid": None}

    def answer(pid: int) -> None:
        doc["pid"] = pid
        lines = [json.dumps(doc)] if as_json else views.restart_lines(doc)
        if session.send_now is not None:
            session.send_now(protocol.format_reply(Reply.end_of_session(lines), prompt=False))

    await session.switch.restart(answer)
    return doc


def send_now(fd: int, text: str) -> None:
    """Write ``text`` to the non-blocking socket ``fd``, waiting for room (at most 1 s a try)."""
    import select

    data = memoryview(text.encode())
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            if not select.select([], [fd], [], 1.0)[1]:
                return

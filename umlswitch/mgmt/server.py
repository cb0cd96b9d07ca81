"""The daemon's management socket: accept sessions and run their commands (the I/O only).

Each connection is one session in its own task: the banner and prompt, then for every complete
line (or a partial one followed by a pause, as vdeterm sends them) the answer of
``commands.execute``, written in one piece ending with the prompt (so that ``vdeterm``, which
looks for ``"$ "`` at the end of a read, sees whole answers). A session ends on EOF, ``logout``,
``shutdown`` (which then stops the switch), a line longer than 4 KiB, or a send error. At most
``max_sessions`` run at once; one more is told so and closed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from umlswitch import __version__
from umlswitch.listener import PeerCred, peer_cred, serve_listener
from umlswitch.mgmt import commands, protocol
from umlswitch.mgmt.protocol import LineReader, LineTooLong, Reply
from umlswitch.mgmt.restartcmd import send_now
from umlswitch.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from umlswitch.mgmt.managed import ManagedSwitch

log = logging.getLogger("umlswitch.mgmt")
ratelog = RateLimitedLog(log)

MAX_SESSIONS = 16
RECV_SIZE = 4096
QUIET_PERIOD = 0.02  # seconds after a partial line before it counts as a command (vdeterm)


async def _send_all(conn: trio.socket.SocketType, text: str) -> None:
    await _send_all_bytes(conn, text.encode())


async def _send_all_bytes(conn: trio.socket.SocketType, raw: bytes) -> None:
    data = memoryview(raw)
    while data:
        sent = await conn.send(data)
        data = data[sent:]


async def _run_stream(
    conn: trio.socket.SocketType,
    stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]],
    status: bytes,
) -> None:
    """Run a streaming command (``pcap/stream``, ``events/stream``) until the client closes the
    connection (EOF or an error, while reading or writing) or the switch stops. The command's
    ``status`` line goes out with the stream's first bytes: by then the stream is set up (a
    client that has read the status misses no frame or event from then on)."""
    unsent = [status]

    async def send(data: bytes) -> None:
        if unsent:
            data = unsent.pop() + data
        await _send_all_bytes(conn, data)

    async def until_closed(scope: trio.CancelScope) -> None:
        with contextlib.suppress(OSError):
            while await conn.recv(RECV_SIZE):
                pass  # a stream takes no input
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_closed, nursery.cancel_scope)
        with contextlib.suppress(OSError):
            await stream(send)
        nursery.cancel_scope.cancel()


class MgmtServer:
    """Serves the management protocol on a listening unix socket."""

    def __init__(
        self,
        listener: trio.socket.SocketType,
        switch: ManagedSwitch,
        *,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.listener = listener
        self.switch = switch
        self.max_sessions = max_sessions
        self.sessions = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_listener(
            self.listener, self._accepted, "management socket", task_status=task_status
        )

    async def _accepted(self, conn: trio.socket.SocketType) -> None:
        # Runs without a checkpoint up to here, so the count cannot be raced past the limit.
        if self.sessions >= self.max_sessions:
            await self._refuse(conn)
        else:
            self.sessions += 1
            await self._session(conn)

    async def _refuse(self, conn: trio.socket.SocketType) -> None:
        with conn, trio.move_on_after(1.0):
            reply = Reply.error(errno.EUSERS, f"at most {self.max_sessions} management sessions")
            with contextlib.suppress(OSError):
                await _send_all(conn, protocol.format_reply(reply, prompt=False))

    async def _session(self, conn: trio.socket.SocketType) -> None:
        try:
            with conn:
                try:
                    cred = peer_cred(conn)
                except OSError:
                    cred = PeerCred(0, -1, -1)
                session = commands.Session(
                    self.switch, cred, send_now=functools.partial(send_now, conn.fileno())
                )
                log.debug("management session opened by %s", cred)
                try:
                    await self._converse(conn, session)
                except OSError as exc:
                    log.debug("management session of %s: %s", cred, exc.strerror or exc)
                log.debug("management session of %s closed", cred)
        finally:
            self.sessions -= 1
        if session.shutdown:
            log.info("shutdown requested by management client %s", cred)
            self.switch.shutdown()

    async def _converse(self, conn: trio.socket.SocketType, session: commands.Session) -> None:
        await _send_all(conn, protocol.banner(__version__))
        reader = LineReader()
        while not session.ended:
            data: bytes | None = None
            if reader.pending:  # vdeterm's commands have no newline: a pause ends them
                with trio.move_on_after(QUIET_PERIOD):
                    data = await conn.recv(RECV_SIZE)
            else:
                data = await conn.recv(RECV_SIZE)
            if data is None:
                lines = [reader.flush()]
            elif not data:
                if reader.pending:
                    await self._run_lines(conn, session, [reader.flush()])
                return
            else:
                try:
                    lines = reader.feed(data)
                except LineTooLong as exc:
                    reply = Reply.error(errno.E2BIG, str(exc))
                    await _send_all(conn, protocol.format_reply(reply, prompt=False))
                    return
            await self._run_lines(conn, session, lines)

    async def _run_lines(
        self, conn: trio.socket.SocketType, session: commands.Session, lines: list[str]
    ) -> None:
        for line in lines:
            invocation = protocol.parse_line(line)
            if invocation is None:
                await _send_all(conn, protocol.PROMPT)
                continue
            reply = await commands.execute(session, invocation)
            if session.stream is not None and reply.ok:
                status = protocol.format_reply(reply, prompt=False).encode()
                await _run_stream(conn, session.stream, status)
                session.ended = True
                return
            session.stream = None
            await _send_all(conn, protocol.format_reply(reply))
            if session.ended:
                return

"""systemd without a dependency: readiness notification and socket activation.

Both are short documented protocols, spoken here directly:

* **Notification** (``sd_notify(3)``): ``NOTIFY_SOCKET`` names a unix datagram socket (``@name``
  is abstract). The switch sends newline-separated ``KEY=VALUE`` lines to it: ``READY=1`` with
  ``MAINPID=`` once it serves (``Type=notify`` units then count it as started), ``STATUS=`` for
  ``systemctl status`` (the ports and MACs, refreshed while it runs), ``STOPPING=1`` when it
  begins to stop. Without ``NOTIFY_SOCKET`` nothing is sent.
* **Socket activation** (``sd_listen_fds(3)``): when ``LISTEN_PID`` is our pid, ``LISTEN_FDS``
  sockets start at fd 3. The switch serves them instead of creating its own (``inherit``):

  - the listening unix stream socket is the control socket; its path takes the place of
    ``-unix CTL`` (a ``-unix`` or ``--vde`` naming another path is an error);
  - a second stream socket, bound to ``CTL.mgmt`` (or ``--mgmt PATH``), is the management socket;
  - a unix datagram socket is the shared data socket of v0 clients (``-unix CTL DATA``).

  They keep the owner and mode the socket unit gave them (``SocketUser=``, ``SocketMode=``) and
  are left in place on exit: they belong to systemd, which keeps listening while the switch is
  stopped, and starts it again on the next connection. Whatever the switch is not given, it
  creates as usual.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from umlswitch.config import DEFAULT_CONTROL, MGMT_SUFFIX, SwitchConfig
from umlswitch.digits import is_decimal
from umlswitch.errors import StartupError

log = logging.getLogger("umlswitch")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
STATUS_INTERVAL = 1.0  # seconds between checks for a changed STATUS= (sent only if changed)


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``; a failed send is logged once, not raised."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._failed = False
        self._last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when systemd does not ask for one."""
        value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        if not value:
            return None
        if value.startswith("@"):  # an abstract socket
            return cls("\0" + value[1:])
        if value.startswith("/"):
            return cls(value)
        log.warning("NOTIFY_SOCKET=%s: not a unix socket address; not notifying systemd", value)
        return None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False if it could not be sent."""
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.send(message)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "cannot notify systemd on NOTIFY_SOCKET '%s': %s",
                    self.address.replace("\0", "@"),
                    exc.strerror or exc,
                )
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """``STATUS=``, only when it changed."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self._last_status = "stopping"
        self.send("STOPPING=1", "STATUS=stopping")


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed us (``sd_listen_fds``), as socket objects, close-on-exec.

    The ``LISTEN_*`` variables are removed from the environment, as ``sd_listen_fds(1)`` does, so
    that no child takes them for its own.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not pid or not count:
        return []
    if not (is_decimal(pid) and int(pid) == os.getpid()):
        return []  # meant for another process (a parent that exec'd us without clearing them)
    if not is_decimal(count):
        raise StartupError(f"socket activation: LISTEN_FDS={count!r} is not a number of sockets")
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        try:
            os.set_inheritable(fd, False)
            sockets.append(socket.socket(fileno=fd))
        except OSError as exc:
            raise StartupError(
                f"socket activation: LISTEN_FDS={count} but fd {fd} is not a socket "
                f"({exc.strerror}); check the .socket unit"
            ) from None
    return sockets


@dataclass(frozen=True)
class Inherited:
    """The sockets systemd passed, by what the switch uses them for (None: create it)."""

    control: socket.socket | None = None
    mgmt: socket.socket | None = None
    data: socket.socket | None = None


NONE_INHERITED = Inherited()


def _path(sock: socket.socket) -> str:
    """The path a passed socket is bound to, or StartupError saying what the unit should have."""
    fd = sock.fileno()
    if sock.family != socket.AF_UNIX:
        raise StartupError(
            f"socket activation: fd {fd} is not a unix socket; umlswitch serves unix sockets "
            "only (ListenStream=/path or ListenDatagram=/path in the .socket unit)"
        )
    name = sock.getsockname()
    if not isinstance(name, str) or not name.startswith("/"):
        raise StartupError(
            f"socket activation: fd {fd} is not bound to a path (an abstract or unnamed socket); "
            "give the .socket unit ListenStream=/path"
        )
    if sock.type == socket.SOCK_STREAM and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise StartupError(
            f"socket activation: fd {fd} ('{name}') is a connection, not a listening socket; "
            "the .socket unit must not say Accept=yes"
        )
    return name


def inherit(config: SwitchConfig, sockets: list[socket.socket]) -> tuple[SwitchConfig, Inherited]:
    """Assign the passed sockets (see the module's docstring); the config with their paths."""
    if not sockets:
        return config, NONE_INHERITED
    streams: dict[str, socket.socket] = {}
    datagrams: dict[str, socket.socket] = {}
    for sock in sockets:
        path = _path(sock)
        if sock.type == socket.SOCK_STREAM:
            streams[path] = sock
        elif sock.type == socket.SOCK_DGRAM:
            datagrams[path] = sock
        else:
            raise StartupError(
                f"socket activation: '{path}' is neither a stream nor a datagram socket "
                "(ListenStream= for the control socket, ListenDatagram= for a v0 data socket)"
            )
    mgmt_paths = {
        p
        for p in streams
        if p == config.mgmt_path or (p.endswith(MGMT_SUFFIX) and p[: -len(MGMT_SUFFIX)] in streams)
    }
    controls = [p for p in streams if p not in mgmt_paths]
    if len(controls) != 1:
        given = ", ".join(sorted(streams)) or "none"
        raise StartupError(
            "socket activation: expected one control socket (and its CTL.mgmt) among the stream "
            f"sockets systemd passed, got: {given}"
        )
    (control_path,) = controls
    named = os.path.abspath(config.control_path)
    if config.control_path != DEFAULT_CONTROL and named != control_path:
        raise StartupError(
            f"socket activation: systemd passed the control socket '{control_path}' but the "
            f"command line names '{named}'; give both the same path (or leave -unix out)"
        )
    config = dataclasses.replace(config, control_path=control_path)
    mgmt = None
    if mgmt_paths:
        (mgmt_path,) = mgmt_paths
        if config.mgmt_socket != mgmt_path:
            raise StartupError(
                f"socket activation: systemd passed the management socket '{mgmt_path}' but "
                f"the command line says {'--no-mgmt' if config.no_mgmt else '--mgmt'}; "
                "leave it out or make it the same"
            )
        mgmt = streams[mgmt_path]
    data = None
    if datagrams:
        if len(datagrams) > 1:
            raise StartupError(
                "socket activation: several datagram sockets passed "
                f"({', '.join(sorted(datagrams))}); the switch takes one shared data socket"
            )
        ((data_path, data),) = datagrams.items()
        if config.data_path is not None and os.path.abspath(config.data_path) != data_path:
            raise StartupError(
                f"socket activation: systemd passed the data socket '{data_path}' but the "
                f"command line names '{config.data_path}'; give both the same path"
            )
        config = dataclasses.replace(config, data_path=data_path)
    return config, Inherited(control=streams[control_path], mgmt=mgmt, data=data)

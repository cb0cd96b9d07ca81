"""The slirp helper's private control socket: a directory of the switch's own in ``$TMPDIR``
(``umlswitch-slirp-PID-XXXXXXXX``, mode 0700, owned by the helper's user) holding ``ctl``
(mode 0600, likewise), where the helper attaches and where it makes its own data socket, as
libvdeplug clients do, and the switch its side of it.

A switch killed with SIGKILL leaves its directory behind; the next switch with ``--slirp``
removes those whose switch is gone: the pid in the name has exited and nobody listens on their
``ctl`` (under ``-daemon`` the serving process has another pid than the one that made it).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from umlswitch.errors import StartupError
from umlswitch.listener import LISTEN_BACKLOG

DIR_PREFIX = "umlswitch-slirp-"  # then the switch's pid, a dash and mkdtemp's letters


class PrivateSocket:
    """The directory and the listening socket ``ctl`` in it, for the helper's user (uid, gid)
    or, with ``user`` None, for the switch's own."""

    def __init__(self, user: tuple[int, int] | None) -> None:
        remove_stale_directories(owners={os.geteuid(), *(() if user is None else (user[0],))})
        self.directory = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-")
        self.control_path = os.path.join(self.directory, "ctl")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind(user)
        except OSError as exc:
            self.close()
            raise StartupError(
                f"--slirp: cannot create the helper's socket in {self.directory}: {exc.strerror}"
            ) from None

    def _bind(self, user: tuple[int, int] | None) -> None:
        old_umask = os.umask(0o177)
        try:
            self.listener.bind(self.control_path)
        finally:
            os.umask(old_umask)
        if user is not None:
            os.chown(self.control_path, *user)
            os.chown(self.directory, *user)
        self.listener.listen(LISTEN_BACKLOG)
        self.listener.setblocking(False)

    @property
    def data_path_prefix(self) -> str:
        """Where the switch binds its side of the helper's data socket: in the directory."""
        return os.path.join(self.directory, "")

    def close(self) -> None:
        """Close the listener and remove the directory (at exit)."""
        self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_stale_directories(parent: str | None = None, *, owners: set[int]) -> list[str]:
    """Remove the private directories of switches that are gone (killed with SIGKILL: no
    clean-up ran): the pid in the name has exited and nobody listens in it. Only those of our
    ``owners`` (our user, the helper's). Returns them."""
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        pid, dash, _ = name.removeprefix(DIR_PREFIX).partition("-")
        if not name.startswith(DIR_PREFIX) or not dash or not pid.isdigit():
            continue
        path = os.path.join(parent, name)
        try:
            if os.lstat(path).st_uid not in owners or _alive(int(pid)) or _served(path):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _served(directory: str) -> bool:
    """Somebody still listens on the directory's control socket (a switch under -daemon has
    another pid than the one that made the directory)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.path.join(directory, "ctl"))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Which command the restart runs: the one this switch was started as, with its arguments.

Started as the installed ``umlswitch`` script, ``sys.argv[0]`` is that script's path, and the
restart runs it again (so an upgraded install is what runs next). Started as
``python -m umlswitch``, ``sys.argv[0]`` is the package's ``__main__.py``; the restart then runs
``python -m umlswitch`` with the same interpreter, importing the package as the environment
finds it (``PYTHONPATH`` included). A relative path is made absolute when the switch starts,
before ``-daemon`` changes directory to ``/``.
"""

from __future__ import annotations

import os
import sys

_command: list[str] = []


def remember(argv: list[str] | None = None) -> None:
    """Note how this process was started (call once, early in ``main``)."""
    argv = sys.argv if argv is None else argv
    program = argv[0] if argv else "umlswitch"
    if os.path.basename(program) == "__main__.py" or program in ("-m", "-c", ""):
        _command[:] = [sys.executable, "-m", "umlswitch", *argv[1:]]
    else:
        if os.sep in program:
            program = os.path.abspath(program)
        _command[:] = [program, *argv[1:]]


def command() -> list[str]:
    """The command line the restart runs."""
    if not _command:
        remember()
    return list(_command)

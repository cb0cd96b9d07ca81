"""Build the LD_PRELOAD shim Debian's UML 6.1 needs on AVX-512/AMX hosts, privately.

UML guests run as root with the shim preloaded, so it is compiled into a fresh directory only
we can write (``mkdtemp``: mode 0700, checked) and removed afterwards; it is never looked for,
or reused from, a shared path. ``UMLSWITCH_TEST_UML_SHIM`` names it while it exists, for
``tests/e2e/uml.py``'s ``guest_env()``. Source and reasons: ``examples/uml_xstate_shim.c``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "uml_xstate_shim.c"
ENV = "UMLSWITCH_TEST_UML_SHIM"


class ShimUnavailable(Exception):
    """No compiler, or the build failed; the message says which and what to install."""


@contextlib.contextmanager
def private_uml_shim() -> Iterator[Path]:
    """Build the shim in a private directory; name it in ``UMLSWITCH_TEST_UML_SHIM`` meanwhile."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ShimUnavailable("no C compiler (cc) for the UML FP-state shim: Debian package gcc")
    directory = Path(tempfile.mkdtemp(prefix="umlswitch-uml-shim-"))
    previous = os.environ.get(ENV)
    try:
        info = directory.stat()
        if stat.S_IMODE(info.st_mode) != 0o700 or info.st_uid != os.geteuid():
            raise ShimUnavailable(f"{directory} is not a private directory")
        built = directory / "uml_xstate_shim.so"
        result = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", str(built), str(SOURCE), "-ldl"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ShimUnavailable(f"building {SOURCE.name} failed:\n{result.stderr}")
        os.environ[ENV] = str(built)
        yield built
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)

"""Every Python block of docs/testing.md runs, and the UML-guest example script passes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.uml import guest_env

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_block_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    if "def test_" in code:  # a pytest example: run it under pytest, plugin fixtures and all
        test_file = tmp_path / "test_doc_example.py"
        test_file.write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if "def test_" in code:
        assert "1 passed" in result.stdout


@pytest.mark.e2e
def test_probe_uml_guest_example() -> None:
    if os.geteuid() != 0:
        pytest.skip("booting a UML guest with a hostfs root needs root")
    if not Path("/usr/bin/linux").exists() or shutil.which("ip") is None:
        pytest.skip("needs /usr/bin/linux (Debian user-mode-linux) and iproute2")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "probe_uml_guest.py")],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        env=guest_env(),  # UML 6.1 needs the FP-state shim on AVX-512/AMX hosts (tests/e2e/uml.py)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ARP: 10.0.0.2 is at 02:00:00:00:00:02" in result.stdout
    assert "ICMP: echo reply from 10.0.0.2" in result.stdout

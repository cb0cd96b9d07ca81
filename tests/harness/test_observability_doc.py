"""Every Python block of docs/observability.md runs; its Grafana dashboard is valid JSON that
queries only series the switch serves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from umlswitch import metrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "observability.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[index])
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_queries_series_the_switch_serves() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 5
    served = set(re.findall(r"umlswitch_\w+", metrics.__doc__ or ""))
    for expr in exprs:
        for name in re.findall(r"umlswitch_\w+", expr):
            assert name in served, f"{name} (in {expr!r}) is not a series umlswitch serves"

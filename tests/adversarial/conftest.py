"""Shared pieces of the adversarial suite: bounded, so CI stays fast."""

from __future__ import annotations

import resource

import pytest


@pytest.fixture(autouse=True)
def _enough_descriptors() -> None:
    """Idle-connection tests hold about 1,200 descriptors in this process (switch included)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or soft < hard < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

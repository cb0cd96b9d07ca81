"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import netns_unavailable, private_netns


@pytest.fixture
def netns() -> Iterator[str]:
    """Run the test inside a private network namespace (skips without root or iproute2)."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with private_netns() as name:
        yield name

"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import netns_unavailable, private_netns
from tests.umlshim import ShimUnavailable, private_uml_shim


@pytest.fixture
def netns() -> Iterator[str]:
    """Run the test inside a private network namespace (skips without root or iproute2)."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with private_netns() as name:
        yield name


@pytest.fixture(scope="session")
def uml_shim() -> Iterator[Path]:
    """The UML FP-state shim, built once per session in a private directory (tests/umlshim.py).

    Its path is also in ``UMLSWITCH_TEST_UML_SHIM`` while the session runs (guest_env() reads it).
    """
    try:
        with private_uml_shim() as built:
            yield built
    except ShimUnavailable as exc:
        pytest.skip(str(exc))

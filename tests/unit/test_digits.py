"""Numbers in options, management commands and the environment are ASCII digits only.

``str.isdigit`` accepts ``"²"``, which ``int`` then refuses with a ValueError that escapes the
parser: a management command could stop the switch that way (issue 19). Every parser that
checks for digits refuses such words with its own clear error.
"""

from __future__ import annotations

import os

import pytest

from umlswitch.digits import is_decimal
from umlswitch.errors import StartupError
from umlswitch.fabric.impair import parse_settings
from umlswitch.fabric.vlan import VlanError, parse_vid
from umlswitch.ports.overlay.spec import vni_value
from umlswitch.ports.stream.spec import parse_stream
from umlswitch.ports.udp.spec import ttl_value, udp_port_number
from umlswitch.systemd import listen_sockets

ODD_DIGITS = ["²", "¹0", "٣", "\uff11\uff12", "1²"]  # the fourth: fullwidth 1 and 2


@pytest.mark.parametrize("text", ["0", "7", "4094", "0010"])
def test_ascii_digits_are_decimal(text: str) -> None:
    assert is_decimal(text)


@pytest.mark.parametrize("text", [*ODD_DIGITS, "", " 1", "+1", "-1", "1_000", "1.0", "0x10"])
def test_anything_else_is_not(text: str) -> None:
    assert not is_decimal(text)


@pytest.mark.parametrize("text", ODD_DIGITS)
def test_every_parser_refuses_other_digits_with_its_own_error(text: str) -> None:
    with pytest.raises(VlanError, match="must be a VLAN number"):
        parse_vid(text)
    with pytest.raises(ValueError, match="VNI"):
        vni_value(text)
    with pytest.raises(ValueError, match="port"):
        udp_port_number(text, "port")
    with pytest.raises(ValueError, match="ttl"):
        ttl_value(text, 1)
    with pytest.raises(ValueError, match="TCP port must be a number"):
        parse_stream(f"tcp:{text}")
    with pytest.raises(ValueError, match="reorder"):
        parse_settings(["reorder", text])


def test_socket_activation_ignores_a_pid_in_other_digits() -> None:
    environ = {"LISTEN_PID": "²", "LISTEN_FDS": "1"}
    assert listen_sockets(environ) == []


def test_socket_activation_refuses_a_count_in_other_digits() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "²"}
    with pytest.raises(StartupError, match="not a number of sockets"):
        listen_sockets(environ)

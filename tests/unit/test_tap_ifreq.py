"""The tun/tap ioctl helpers: ``struct ifreq`` layout, request numbers and interface-name rules.

The expected bytes are written out by hand from ``<linux/if.h>`` and ``<linux/if_tun.h>`` (name in
16 bytes, then ``short ifr_flags`` in host byte order, 40 bytes in all), not with the module's own
struct, so these tests check the layout independently.
"""

from __future__ import annotations

import pytest

from umlswitch.tap import ifreq


def test_ioctl_numbers_match_linux_headers():
    assert ifreq.TUNSETIFF == 0x400454CA
    assert ifreq.TUNGETIFF == 0x800454D2
    assert ifreq.SIOCGIFFLAGS == 0x8913
    assert ifreq.TAP_FLAGS == 0x1002  # IFF_TAP | IFF_NO_PI, as /sys/class/net/DEV/tun_flags shows


def test_pack_ifreq_for_tunsetiff():
    packed = ifreq.pack_ifreq(b"tap0", ifreq.TAP_FLAGS)
    assert packed == b"tap0" + b"\0" * 12 + b"\x02\x10" + b"\0" * 22
    assert len(packed) == 40


def test_pack_ifreq_fifteen_byte_name_keeps_its_nul():
    packed = ifreq.pack_ifreq(b"a" * 15)
    assert packed[:16] == b"a" * 15 + b"\0"
    assert packed[16:] == b"\0" * 24


def test_pack_ifreq_refuses_a_name_that_does_not_fit():
    with pytest.raises(ifreq.InvalidName, match="16 bytes long; at most 15"):
        ifreq.pack_ifreq(b"a" * 16)


def test_unpack_ifreq_reads_name_and_flags():
    reply = b"tap7" + b"\0" * 12 + b"\x02\x18" + b"\xaa" * 22  # the union's tail is not ours
    assert ifreq.unpack_ifreq(reply) == (b"tap7", 0x1802)


def test_unpack_of_pack_round_trips():
    assert ifreq.unpack_ifreq(ifreq.pack_ifreq(b"umlsw-tap", ifreq.IFF_UP)) == (b"umlsw-tap", 1)


@pytest.mark.parametrize(
    "name",
    ["tap0", "t", "a" * 15, "br-lan.10", "uml_tap-1", "tä"],
    ids=["tap0", "one-char", "15-bytes", "dot-and-dash", "underscore", "utf8"],
)
def test_valid_names(name):
    assert ifreq.validate_name(name) == name.encode()


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "empty"),
        ("a" * 16, "16 bytes long; at most 15"),
        ("ä" * 8, "16 bytes long; at most 15"),  # 8 characters, 16 bytes
        (".", "'.' is not allowed"),
        ("..", "'..' is not allowed"),
        ("a/b", "'/'"),
        ("eth0:1", "':'"),
        ("tap%d", "'%'"),
        ("a\0b", "NUL"),
        ("tap 0", "whitespace"),
        ("tap\t0", "whitespace"),
        ("tap0\n", "whitespace"),
    ],
    ids=[
        "empty", "16-bytes", "16-bytes-utf8", "dot", "dotdot", "slash", "colon",
        "template", "nul", "space", "tab", "newline",
    ],
)  # fmt: skip
def test_invalid_names_say_why(name, reason):
    with pytest.raises(ifreq.InvalidName, match=reason):
        ifreq.validate_name(name)

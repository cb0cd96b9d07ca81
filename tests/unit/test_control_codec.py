"""Case tables for the control-request decoder (PROTOCOLS.md §1a and §1c).

Every request is built here by hand with ``struct`` from the wire layouts in PROTOCOLS.md, not with
the module's own ``encode_*`` helpers, so these tests check the layout independently.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from umlswitch.ports.unix.control import NeedMore, Request, RequestDecoder, RequestError

MAGIC = 0xFEEDFACE
AF_UNIX = 1
SUN_PATH = 108

# UML's local name as observed on a 6.1 boot: NUL, 3 padding bytes, pid LE, tv_usec LE, and then
# uninitialised kmalloc bytes up to byte 107 (PROTOCOLS.md §1a).
UML_ADDRESS = (
    b"\0\0\0\0"
    + struct.pack("<I", 0x3AFA)
    + struct.pack("<I", 0x4A472)
    + bytes((i * 37 + 11) % 256 for i in range(96))
)
assert len(UML_ADDRESS) == SUN_PATH
# libvdeplug's data socket is a pathname: DIR/.PPPPP-NNNNN.
VDE_PATH = b"/run/umlswitch/.14387-00000"
VDE_ADDRESS = VDE_PATH.ljust(SUN_PATH, b"\0")
MAC = bytes.fromhex("fe fd 0a 00 00 01")
VDE_DESCRIPTION = b"mytestdescr user=root pid=14387"


def sockaddr(path: bytes, family: int = AF_UNIX) -> bytes:
    """``struct sockaddr_un``: u16 family, then sun_path zero-padded to 108 bytes (110 in all)."""
    return struct.pack("<H108s", family, path)


def v0(path: bytes = UML_ADDRESS, *, req_type: int = 0, family: int = AF_UNIX) -> bytes:
    """uml_switch v0: type:u32 · mac[6] · sockaddr_un, no magic (120 bytes)."""
    return struct.pack("<I6s", req_type, MAC) + sockaddr(path, family)


def v1(path: bytes = UML_ADDRESS, *, req_type: int = 0, family: int = AF_UNIX) -> bytes:
    """uml_switch v1: magic · type:u32 · mac[6] · sockaddr_un (124 bytes, no padding)."""
    return struct.pack("<II6s", MAGIC, req_type, MAC) + sockaddr(path, family)


def v3_uml(
    path: bytes = UML_ADDRESS, *, version: int = 3, req_type: int = 0, family: int = AF_UNIX
) -> bytes:
    """struct request_v3 as UML writes it: 122 bytes plus 2 bytes of tail padding (124)."""
    return struct.pack("<III", MAGIC, version, req_type) + sockaddr(path, family) + b"\0\0"


def v3_vde(
    path: bytes = VDE_ADDRESS,
    *,
    port: int = 0,
    kind: int = 0,
    description: bytes = VDE_DESCRIPTION,
    family: int = AF_UNIX,
) -> bytes:
    """libvdeplug's packed request: magic · 3 · (port << 8 | kind) · sockaddr_un · description."""
    return struct.pack("<III", MAGIC, 3, (port << 8) | kind) + sockaddr(path, family) + description


def decode(data: bytes, *, finish: bool = False) -> object:
    decoder = RequestDecoder()
    result = decoder.feed(data)
    if finish:
        assert isinstance(result, NeedMore)
        assert result.can_finish, "finish() is only called after NeedMore(can_finish=True)"
        result = decoder.finish()
    return result


def test_hand_built_layouts_have_the_documented_sizes() -> None:
    assert len(v0()) == 120
    assert len(v1()) == 124
    assert len(v3_uml()) == 124
    assert len(v3_vde(description=b"")) == 122
    assert len(v3_vde()) == 122 + len(VDE_DESCRIPTION) == 153  # the 153 bytes seen from vde_plug
    assert v3_uml()[:4] == bytes.fromhex("cefaedfe")
    # The type bytes of vde:///DIR[7]
    assert v3_vde(port=7)[8:12] == bytes.fromhex("00070000")


# --- requests that decode ------------------------------------------------------------------------

GOOD = [
    pytest.param(
        v0(),
        False,
        Request("v0", UML_ADDRESS, mac=MAC),
        id="v0-120-bytes",
    ),
    pytest.param(
        v1(),
        True,  # 124 bytes may still grow a vde description: complete when the client goes quiet
        Request("v1", UML_ADDRESS, mac=MAC),
        id="v1-124-bytes",
    ),
    pytest.param(
        v1() + b"old vde client",
        True,
        Request("v1", UML_ADDRESS, mac=MAC, description="old vde client"),
        id="v1-with-vde-description",
    ),
    pytest.param(
        v3_uml(),
        False,
        Request("v3-uml", UML_ADDRESS),
        id="v3-uml-124-bytes",
    ),
    pytest.param(
        v3_vde(port=7),
        True,
        Request(
            "v3-vde", VDE_ADDRESS, requested_port=7, description=VDE_DESCRIPTION.decode("ascii")
        ),
        id="v3-vde-requested-port-7",
    ),
    pytest.param(
        v3_vde(),
        True,
        Request("v3-vde", VDE_ADDRESS, description=VDE_DESCRIPTION.decode("ascii")),
        id="v3-vde-any-port",
    ),
    pytest.param(
        v3_vde(port=300),
        True,
        Request(
            "v3-vde",
            VDE_ADDRESS,
            requested_port=300,
            description=VDE_DESCRIPTION.decode("ascii"),
        ),
        id="v3-vde-port-number-above-255",
    ),
    pytest.param(
        v3_vde(kind=1),
        True,
        Request(
            "v3-vde", VDE_ADDRESS, management=True, description=VDE_DESCRIPTION.decode("ascii")
        ),
        id="v3-vde-REQ_NEW_PORT0",
    ),
    pytest.param(
        v3_vde(description=b""),
        True,
        Request("v3-vde", VDE_ADDRESS),
        id="v3-vde-no-description",
    ),
    pytest.param(
        v3_vde(description=b"x" * 128),
        False,  # the longest description completes the request without waiting
        Request("v3-vde", VDE_ADDRESS, description="x" * 128),
        id="v3-vde-128-byte-description",
    ),
    pytest.param(
        v3_vde(description=b"bad\x01\x7fbytes"),
        True,
        Request("v3-vde", VDE_ADDRESS, description="bad??bytes"),
        id="v3-vde-unprintable-description-sanitised",
    ),
    pytest.param(
        v3_uml()[:-2] + b"\x7f\x01",  # the padding is uninitialised in UML's struct
        True,
        Request("v3-vde", UML_ADDRESS, description="??"),
        id="v3-uml-garbage-padding-served-after-quiet",
    ),
]


@pytest.mark.parametrize(("data", "needs_finish", "expected"), GOOD)
def test_request_decodes(data: bytes, needs_finish: bool, expected: Request) -> None:
    assert decode(data, finish=needs_finish) == expected


@pytest.mark.parametrize(("data", "needs_finish", "expected"), GOOD)
def test_request_split_at_every_byte(data: bytes, needs_finish: bool, expected: Request) -> None:
    decoder = RequestDecoder()
    for i, byte in enumerate(data[:-1]):
        result = decoder.feed(bytes([byte]))
        assert isinstance(result, NeedMore), f"decided after {i + 1} of {len(data)} bytes"
    result = decoder.feed(data[-1:])
    if needs_finish:
        assert isinstance(result, NeedMore)
        assert result.can_finish
        result = decoder.finish()
    assert result == expected
    assert decoder.buffered == len(data)


def test_uml_address_is_kept_whole() -> None:
    """UML's garbage after byte 12 is part of its identity: all 108 bytes, never trimmed."""
    request = decode(v3_uml())
    assert isinstance(request, Request)
    assert request.address == UML_ADDRESS
    assert len(request.address) == SUN_PATH
    assert request.is_abstract
    assert request.peer_address == UML_ADDRESS


def test_abstract_address_with_trailing_zeros_is_not_trimmed() -> None:
    name = b"\0umlswitch-test".ljust(SUN_PATH, b"\0")
    request = decode(v3_uml(name))
    assert isinstance(request, Request)
    assert request.peer_address == name
    assert len(request.peer_address) == SUN_PATH


def test_vde_pathname_becomes_a_path_string() -> None:
    request = decode(v3_vde(), finish=True)
    assert isinstance(request, Request)
    assert not request.is_abstract
    assert request.peer_address == VDE_PATH.decode()


def test_vde_request_needs_finish_after_quiet() -> None:
    decoder = RequestDecoder()
    result = decoder.feed(v3_vde(port=7))
    assert isinstance(result, NeedMore)
    assert result.can_finish
    finished = decoder.finish()
    assert isinstance(finished, Request)
    assert finished.requested_port == 7
    assert finished.description == "mytestdescr user=root pid=14387"


def test_vde_request_in_two_writes_keeps_the_whole_description() -> None:
    data = v3_vde()
    decoder = RequestDecoder()
    assert isinstance(decoder.feed(data[:130]), NeedMore)
    assert isinstance(decoder.feed(data[130:]), NeedMore)
    result = decoder.finish()
    assert isinstance(result, Request)
    assert result.description == VDE_DESCRIPTION.decode()


# --- requests that are refused -------------------------------------------------------------------

BAD = [
    pytest.param(v0(req_type=5), False, "bad_request", "not a v0", id="bad-magic-not-v0-type"),
    pytest.param(v0() + b"\0", False, "bad_request", "v0 request of 121", id="v0-too-long"),
    pytest.param(v1(req_type=1), False, "bad_request", "unknown type", id="v1-unknown-type"),
    pytest.param(v3_uml(version=2), False, "unsupported_version", "version 2", id="version-2"),
    pytest.param(
        v3_uml(version=2)[:8], False, "unsupported_version", "version 2", id="version-2-early"
    ),
    pytest.param(v3_uml(version=99), False, "unsupported_version", "version 99", id="version-99"),
    pytest.param(v3_uml(version=4), False, "unsupported_version", "version 4", id="version-4"),
    pytest.param(v3_uml(req_type=2), False, "bad_request", "unknown type 2", id="v3-unknown-type"),
    pytest.param(
        v3_vde(description=b"d" * 129), False, "bad_request", "too long", id="oversize-251"
    ),
    pytest.param(
        v3_vde(description=b"d" * 400), False, "bad_request", "too long", id="oversize-522"
    ),
    pytest.param(v3_uml(family=2), False, "bad_request", "family is 2", id="v3-family-AF_INET"),
    pytest.param(v1(family=0), True, "bad_request", "family is 0", id="v1-family-0"),
    pytest.param(v0(family=10), False, "bad_request", "family is 10", id="v0-family-AF_INET6"),
    pytest.param(v3_uml(b""), False, "bad_request", "empty", id="v3-empty-address"),
    pytest.param(v0(b""), False, "bad_request", "empty", id="v0-empty-address"),
    pytest.param(v3_vde(b"", description=b"x"), True, "bad_request", "empty", id="vde-empty"),
    pytest.param(v3_uml()[:60], True, "bad_request", "truncated v3", id="v3-truncated-finish"),
    pytest.param(v1()[:100], True, "bad_request", "truncated v1", id="v1-truncated-finish"),
    pytest.param(v0()[:119], True, "bad_request", "truncated v0", id="v0-truncated-finish"),
    pytest.param(v3_uml()[:6], True, "bad_request", "truncated", id="magic-only-finish"),
    pytest.param(b"\xce\xfa", True, "bad_request", "truncated", id="two-bytes-finish"),
    pytest.param(b"", True, "bad_request", "truncated", id="nothing-finish"),
]


@pytest.mark.parametrize(("data", "finish", "counter", "text"), BAD)
def test_request_refused(data: bytes, finish: bool, counter: str, text: str) -> None:
    decoder = RequestDecoder()
    result = decoder.feed(data)
    if finish:
        assert isinstance(result, NeedMore)
        result = decoder.finish()
    assert isinstance(result, RequestError)
    assert result.counter == counter
    assert text in result.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(v3_uml()[:60], id="v3"),
        pytest.param(v1()[:100], id="v1"),
        pytest.param(v0()[:119], id="v0"),
        pytest.param(b"\xce", id="one-byte"),
    ],
)
def test_truncated_request_waits_and_cannot_finish_early(data: bytes) -> None:
    """A request shorter than its fixed part is not complete yet: the switch keeps reading."""
    result = RequestDecoder().feed(data)
    assert isinstance(result, NeedMore)
    assert not result.can_finish


# --- properties -----------------------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def bytes_in_chunks(draw: st.DrawFn) -> list[bytes]:
    prefix = draw(
        st.sampled_from(
            [b"", struct.pack("<I", MAGIC), struct.pack("<II", MAGIC, 3), struct.pack("<I", 0)]
        )
    )
    data = prefix + draw(st.binary(max_size=300))
    return draw(chunked(data))


@given(bytes_in_chunks(), st.booleans())
def test_arbitrary_bytes_never_raise(chunks: list[bytes], finish: bool) -> None:
    decoder = RequestDecoder()
    for chunk in chunks:
        result = decoder.feed(chunk)
        assert isinstance(result, Request | RequestError | NeedMore)
        if not isinstance(result, NeedMore):
            return
    if finish:
        result = decoder.finish()
        assert isinstance(result, Request | RequestError)
        if isinstance(result, Request):
            assert len(result.address) == SUN_PATH


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, Request, bool]:
    """A well-formed request of any dialect, the Request it means, and whether it needs finish()."""
    address = draw(st.binary(min_size=SUN_PATH, max_size=SUN_PATH).filter(lambda a: any(a)))
    dialect = draw(st.sampled_from(["v0", "v1", "v3-uml", "v3-vde"]))
    if dialect == "v0":
        return v0(address), Request("v0", address, mac=MAC), False
    if dialect == "v1":
        return v1(address), Request("v1", address, mac=MAC), True
    if dialect == "v3-uml":
        return v3_uml(address), Request("v3-uml", address), False
    port = draw(st.integers(0, 0xFFFFFF))
    text = draw(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=3, max_size=100)
    )
    expected = Request("v3-vde", address, requested_port=port or None, description=text)
    return v3_vde(address, port=port, description=text.encode()), expected, True


@given(st.data())
def test_any_chunking_gives_the_same_request(data: st.DataObject) -> None:
    raw, expected, needs_finish = data.draw(valid_requests())
    chunks = data.draw(chunked(raw))
    decoder = RequestDecoder()
    result: object = NeedMore(can_finish=False)
    for chunk in chunks:
        result = decoder.feed(chunk)
    if needs_finish:
        assert isinstance(result, NeedMore)
        assert result.can_finish
        result = decoder.finish()
    assert result == expected

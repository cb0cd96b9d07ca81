"""Frame filters for the harness: a predicate, a scapy layer, or a table of scapy field values.

``match`` may be:

* a callable taking the frame as a scapy ``Ether`` and returning a bool;
* a scapy layer class (``ARP``, ``ICMP``): the frame must contain that layer;
* a dict of ``"Layer.field": value`` (e.g. ``{"ARP.op": 2, "Ether.src": "02:00:00:00:00:01"}``);
  a bare ``"field"`` is looked up in the first layer that has it. MAC and IP values compare as
  scapy shows them (lower-case strings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from scapy.packet import Packet

Match = Callable[[Packet], bool] | type[Packet] | Mapping[str, Any] | None

_MISSING = object()


def _field(packet: Packet, key: str) -> Any:
    if "." in key:
        layer_name, field = key.split(".", 1)
        layer = packet.getlayer(layer_name)
        if layer is None:
            return _MISSING
        return getattr(layer, field, _MISSING)
    layer = packet
    while layer is not None and layer.name != "NoPayload":
        if key in layer.fields or any(f.name == key for f in layer.fields_desc):
            return layer.getfieldval(key)
        layer = layer.payload if layer.payload else None
    return _MISSING


def _normalise(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def matches(packet: Packet, match: Match) -> bool:
    """Whether ``packet`` passes ``match`` (see the module docstring); None passes everything."""
    if match is None:
        return True
    if isinstance(match, type) and issubclass(match, Packet):
        return bool(packet.haslayer(match))
    if isinstance(match, Mapping):
        for key, expected in match.items():
            value = _field(packet, key)
            if value is _MISSING or _normalise(value) != _normalise(expected):
                return False
        return True
    predicate = cast(Callable[[Packet], bool], match)
    return bool(predicate(packet))

"""The state document's envelope: its format name and version, checked before anything is read.

Every document the handover sends says ``"format": "umlswitch-handover"``, its ``"version"``
and the ``"writer"`` (the umlswitch version that wrote it). A reader takes the versions it
knows (``READS``) and refuses any other with one line that says which umlswitch wrote it and
what to do, so the old process keeps serving. Version 1 is the first; a later version that
only adds keys keeps the number (readers ignore keys they do not know), one that changes the
meaning of a key raises it, and its reader keeps reading the older ones.
"""

from __future__ import annotations

from typing import Any

from umlswitch import __version__

FORMAT = "umlswitch-handover"
VERSION = 1
READS = frozenset({1})


class UnreadableState(Exception):
    """The other process's document is not one this umlswitch can read."""


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    """A document of ``kind`` (startup, ready, state, running, failed) in today's version."""
    return {"format": FORMAT, "version": VERSION, "writer": __version__, "kind": kind, **fields}


def check(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """``doc`` if it is a ``kind`` document in a version this umlswitch reads."""
    if doc.get("format") != FORMAT:
        raise UnreadableState(f"not a umlswitch handover document (format {doc.get('format')!r})")
    version, writer = doc.get("version"), doc.get("writer", "an unknown version")
    if version not in READS:
        raise UnreadableState(
            f"state document version {version!r} written by umlswitch {writer} cannot be read by "
            f"umlswitch {__version__} (it reads version {', '.join(map(str, sorted(READS)))}); "
            "stop the switch and start it anew, or install a umlswitch that reads it"
        )
    if doc.get("kind") == "failed" and kind != "failed":
        raise UnreadableState(str(doc.get("reason", "the other process failed")))
    if doc.get("kind") != kind:
        raise UnreadableState(f"expected a {kind!r} document, got {doc.get('kind')!r}")
    return doc

"""Whether a word of a command line, a management command or the environment is a number.

``str.isdigit`` is not that test: it accepts superscripts and other digits (``"²"``) that
``int`` refuses with a ValueError, which would escape the parser that checked first.
"""

from __future__ import annotations


def is_decimal(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits 0-9, and nothing else."""
    return text.isascii() and text.isdigit()

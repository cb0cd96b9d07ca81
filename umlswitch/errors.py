"""Errors shared by the daemon and the ports it opens at start-up."""

from __future__ import annotations


class StartupError(Exception):
    """The switch cannot start; the message is one line saying what is wrong and what to do."""

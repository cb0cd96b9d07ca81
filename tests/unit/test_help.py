"""``--help`` of ``umlswitch``, ``umlswitch ctl`` and ``umlswitch top``: what a user reads."""

from __future__ import annotations

import argparse
import re

import pytest

from umlswitch.config import USAGE
from umlswitch.config import build_parser as switch_parser
from umlswitch.mgmt.client import build_parser as ctl_parser
from umlswitch.mgmt.top import build_parser as top_parser

PARSERS = {"umlswitch": switch_parser, "umlswitch ctl": ctl_parser, "umlswitch top": top_parser}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def test_unix_takes_a_control_path_and_one_optional_data_path() -> None:
    text = switch_parser().format_help()
    assert "-unix CTL [DATA], --unix CTL [DATA]" in text
    assert "[-unix CTL [DATA]]" in text
    assert "DATA ..." not in text


def test_tap_says_it_repeats_and_that_a_missing_tap_is_created() -> None:
    (tap,) = [a for a in options(switch_parser()) if "-tap" in a.option_strings]
    assert tap.help is not None
    assert "repeatable" in tap.help
    assert "missing tap is created" in tap.help


@pytest.mark.parametrize("name", ["umlswitch ctl", "umlswitch top"])
def test_the_synopsis_names_every_option_of_ctl_and_top(name: str) -> None:
    (line,) = [line for line in USAGE.splitlines() if f"{name} " in line]
    for action in options(PARSERS[name]()):
        if action.dest == "help":
            continue
        assert any(
            option in line.split() or f"[{option}" in line for option in action.option_strings
        ), (
            action.option_strings,
            line,
        )


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_option_says_what_it_does(name: str) -> None:
    for action in options(PARSERS[name]()):
        words = re.sub(r"\(default [^)]*\)", "", action.help or "").strip()
        assert len(words.split()) >= 2, (name, action.option_strings, action.help)

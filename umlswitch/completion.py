"""Bash completion for ``umlswitch``, generated from the tables the code itself uses.

The options come from the argparse parsers of ``umlswitch``, ``umlswitch ctl``,
``umlswitch top``, ``umlswitch capture`` and ``umlswitch events``, the management commands and
their arguments from ``mgmt.commands.COMMANDS``, so the completion cannot fall behind them:
``completion/umlswitch`` in the source tree (installed as
``share/bash-completion/completions/umlswitch``) is this module's output, and a test checks that
it is current. Regenerate it with::

    python3 -m umlswitch.completion > completion/umlswitch

What an option's value completes to follows from its metavar: file names for FILE, PATH, CTL
and DATA, directories for DIR, network interfaces for DEV, groups for NAME, the choices where
argparse has them (``--log-level``), nothing for numbers and specs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from umlswitch.config import build_parser as switch_parser
from umlswitch.mgmt.client import build_parser as ctl_parser
from umlswitch.mgmt.commands import COMMANDS
from umlswitch.mgmt.streams import capture_parser, events_parser
from umlswitch.mgmt.top import build_parser as top_parser

CLIENTS = ("ctl", "top", "capture", "events")
FILES = "files"
DIRS = "dirs"
INTERFACES = "interfaces"
GROUPS = "groups"
NOTHING = "nothing"

_BY_METAVAR = {
    "FILE": FILES,
    "FILE|-": FILES,
    "PATH": FILES,
    "CTL": FILES,
    "DATA": FILES,
    "DIR": DIRS,
    "DEV": INTERFACES,
    "NAME": GROUPS,
}


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser``, in its order."""
    return [s for a in parser._actions for s in a.option_strings if a.help != argparse.SUPPRESS]


def value_kinds(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Option string -> what its value completes to (options that take a value only)."""
    kinds: dict[str, str] = {}
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        optional = action.nargs == argparse.OPTIONAL  # -mcast [SPEC]: an option may follow
        if action.choices is not None:
            kind = "words:" + " ".join(str(choice) for choice in action.choices)
        else:
            metavar = action.metavar
            first = metavar[0] if isinstance(metavar, tuple) else metavar
            kind = _BY_METAVAR.get(str(first), NOTHING)
        if optional and kind == NOTHING:
            continue
        for option in action.option_strings:
            kinds[option] = kind
    return kinds


def command_arguments() -> dict[str, list[str]]:
    """Management command -> what each of its arguments completes to, from its syntax."""
    arguments = {}
    for name, command in COMMANDS.items():
        words = command.syntax.replace("[", " ").replace("]", " ").split()
        arguments[name] = [FILES if word == "FILE" else NOTHING for word in words]
    return arguments


def _reply(kind: str) -> str:
    """The bash statement that fills COMPREPLY for a value of ``kind``."""
    if kind == FILES:
        return 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))'
    if kind == DIRS:
        return 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur"))'
    if kind == INTERFACES:
        return 'COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur"))'
    if kind == GROUPS:
        return 'COMPREPLY=($(compgen -g -- "$cur"))'
    if kind.startswith("words:"):
        return f'COMPREPLY=($(compgen -W "{kind[len("words:") :]}" -- "$cur"))'
    return "COMPREPLY=()"


def _value_cases(kinds: dict[str, str], indent: str) -> list[str]:
    """``case $prev in`` branches: an option's value is being typed."""
    by_kind: dict[str, list[str]] = {}
    for option, kind in kinds.items():
        by_kind.setdefault(kind, []).append(option)
    return [
        f"{indent}{'|'.join(opts)}) {_reply(kind)}; return ;;" for kind, opts in by_kind.items()
    ]


def _words(items: Iterable[str]) -> str:
    return " ".join(items)


def _client_branch(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """``umlswitch NAME ...``: a client whose words are all options (and their values)."""
    return [
        f"    if ((COMP_CWORD > 1)) && [[ ${{COMP_WORDS[1]}} == {name} ]]; then",
        "        case $prev in",
        *_value_cases(value_kinds(parser), "        "),
        "        esac",
        f'        COMPREPLY=($(compgen -W "{_words(options(parser))}" -- "$cur"))',
        "        return",
        "    fi",
    ]


def bash_script() -> str:
    """The completion script for bash."""
    switch, ctl, top = switch_parser(), ctl_parser(), top_parser()
    switch_values, ctl_values = value_kinds(switch), value_kinds(ctl)
    ctl_takes_value = "|".join(ctl_values)
    arguments = command_arguments()
    file_arguments = [
        f"        {name}) kinds=({' '.join(kinds)}) ;;"
        for name, kinds in arguments.items()
        if FILES in kinds
    ]
    lines = [
        "# bash completion for umlswitch(1): options, option values and management commands.",
        "# Generated by `python3 -m umlswitch.completion` from umlswitch's own option and command",
        "# tables; do not edit (a test checks that it is current).",
        "",
        "_umlswitch_ctl() {",
        '    local i word command="" nargs=0',
        "    for ((i = 2; i < COMP_CWORD; i++)); do",
        "        word=${COMP_WORDS[i]}",
        "        if [[ -n $command ]]; then",
        "            ((nargs++))",
        "            continue",
        "        fi",
        "        case $word in",
        f"        {ctl_takes_value}) ((i++)) ;;",
        "        -*|json) ;;",
        "        *) command=$word ;;",
        "        esac",
        "    done",
        "    case $prev in",
        *_value_cases(ctl_values, "    "),
        "    esac",
        "    if [[ -z $command ]]; then",
        "        if [[ $cur == -* ]]; then",
        f'            COMPREPLY=($(compgen -W "{_words(options(ctl))}" -- "$cur"))',
        "        else",
        f'            COMPREPLY=($(compgen -W "{_words(COMMANDS)}" -- "$cur"))',
        "        fi",
        "        return",
        "    fi",
        "    local kinds=()",
        "    case $command in",
        *file_arguments,
        "    esac",
        "    if [[ ${kinds[nargs]} == files ]]; then",
        f"        {_reply(FILES)}",
        "    fi",
        "}",
        "",
        "_umlswitch() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    COMPREPLY=()",
        "    if ((COMP_CWORD > 1)) && [[ ${COMP_WORDS[1]} == ctl ]]; then",
        "        _umlswitch_ctl",
        "        return",
        "    fi",
        *_client_branch("top", top),
        *_client_branch("capture", capture_parser()),
        *_client_branch("events", events_parser()),
        "    case $prev in",
        *_value_cases(switch_values, "    "),
        "    esac",
        "    # -unix CTL DATA: the second path",
        "    if ((COMP_CWORD > 2)) && [[ $cur != -* && $prev != -* ]]; then",
        "        case ${COMP_WORDS[COMP_CWORD-2]} in",
        f"        -unix|--unix) {_reply(FILES)}; return ;;",
        "        esac",
        "    fi",
        "    if [[ $cur == -* ]]; then",
        f'        COMPREPLY=($(compgen -W "{_words(options(switch))}" -- "$cur"))',
        "    elif ((COMP_CWORD == 1)); then",
        f'        COMPREPLY=($(compgen -W "{_words(CLIENTS)}" -- "$cur"))',
        "    fi",
        "}",
        "",
        "complete -F _umlswitch umlswitch",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(bash_script())
    return 0


if __name__ == "__main__":
    sys.exit(main())

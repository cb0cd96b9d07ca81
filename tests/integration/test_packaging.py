"""What ships beside the code: the man page, the bash completion, and the wheel that installs them.

The man page is rendered with ``man -l`` as a user reads it; the completion is sourced into a
real bash and asked what it offers; the wheel is built offline and opened.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from umlswitch import __version__, completion
from umlswitch.config import build_parser as switch_parser
from umlswitch.mgmt.client import build_parser as ctl_parser
from umlswitch.mgmt.commands import COMMANDS
from umlswitch.mgmt.streams import capture_parser, events_parser
from umlswitch.mgmt.top import build_parser as top_parser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANPAGE = ROOT / "man" / "umlswitch.1"
COMPLETION = ROOT / "completion" / "umlswitch"
PARSERS = {
    "umlswitch": switch_parser,
    "umlswitch ctl": ctl_parser,
    "umlswitch top": top_parser,
    "umlswitch capture": capture_parser,
    "umlswitch events": events_parser,
}

needs_man = pytest.mark.skipif(
    shutil.which("man") is None or shutil.which("groff") is None,
    reason="needs man and groff (Debian packages man-db and groff-base)",
)


def render_manpage(width: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["man", "--warnings=w", "-l", str(MANPAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MANWIDTH": str(width), "MAN_KEEP_FORMATTING": "", "MANPAGER": "cat",
             "PAGER": "cat", "LC_ALL": "C.UTF-8"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def manpage_text() -> str:
    result = render_manpage(200)
    assert result.returncode == 0, result.stderr
    # groff may print a hyphen or minus sign where the source says \- : read them as '-'
    return result.stdout.replace("\u2010", "-").replace("\u2212", "-")


@needs_man
def test_man_renders_the_page_without_warnings():
    result = render_manpage(80)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("UMLSWITCH(1)")
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


@needs_man
@pytest.mark.parametrize("name", list(PARSERS))
def test_every_option_in_help_is_in_the_man_page(name, manpage_text):
    for option in completion.options(PARSERS[name]()):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", manpage_text), option


@needs_man
def test_every_management_command_is_in_the_man_page(manpage_text):
    for command in COMMANDS:
        assert re.search(rf"(?<![\w/]){re.escape(command)}(?![\w/])", manpage_text), command


def test_the_man_page_is_of_this_version():
    assert f'"umlswitch {__version__}"' in MANPAGE.read_text().splitlines()[4]


# --- bash completion ------------------------------------------------------------------------


def test_the_shipped_completion_is_generated_from_the_current_tables():
    assert COMPLETION.read_text() == completion.bash_script(), (
        "completion/umlswitch is stale: python3 -m umlswitch.completion > completion/umlswitch"
    )


def complete(*words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being typed)."""
    script = (
        f"source {COMPLETION}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        "complete -p umlswitch >/dev/null || exit 3\n"
        '_umlswitch; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", *words],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["umlswitch", ""], ["ctl", "top", "capture", "events"]),
        (["umlswitch", "--log-l"], ["--log-level"]),
        (["umlswitch", "--log-level", ""], ["debug", "info", "warning", "error"]),
        (["umlswitch", "-com"], ["-compat-v0"]),
        (["umlswitch", "--max-macs", ""], []),
        (["umlswitch", "ctl", "port/"],
         ["port/print", "port/remove", "port/resetcounter", "port/sethub", "port/setvlan",
          "port/impair", "port/setstormlimit"]),
        (["umlswitch", "ctl", "vlan/"],
         ["vlan/create", "vlan/remove", "vlan/addport", "vlan/delport", "vlan/print"]),
        (["umlswitch", "ctl", "-unix", "/tmp/uml.ctl", "--json", "hash/f"],
         ["hash/find", "hash/flush"]),
        (["umlswitch", "ctl", "--t"], ["--timeout"]),
        (["umlswitch", "top", "--"], ["--help", "--unix", "--mgmt", "--interval", "--once"]),
        (["umlswitch", "top", "--interval", ""], []),
        (["umlswitch", "ev"], ["events"]),
        (["umlswitch", "capture", "-"],
         ["-h", "--help", "-unix", "--unix", "-M", "--mgmt", "-w", "-c"]),
        (["umlswitch", "events", "--"], ["--help", "--unix", "--mgmt"]),
        (["umlswitch", "--met"], ["--metrics"]),
    ],
)  # fmt: skip
def test_bash_completes_options_values_and_commands(words, offered):
    assert complete(*words) == offered


def test_bash_completes_every_option_and_every_command():
    assert complete("umlswitch", "-") == completion.options(switch_parser())
    assert complete("umlswitch", "ctl", "") == list(COMMANDS)
    assert set(complete("umlswitch", "ctl", "-")) == set(completion.options(ctl_parser()))


def test_bash_completes_paths_interfaces_and_groups(tmp_path):
    (tmp_path / "capture.pcap").write_bytes(b"")
    (tmp_path / "cards").mkdir()
    prefix = str(tmp_path / "ca")
    both = [str(tmp_path / "capture.pcap"), str(tmp_path / "cards")]
    assert sorted(complete("umlswitch", "--pcap", prefix)) == both
    assert sorted(complete("umlswitch", "-unix", "/x.ctl", prefix)) == both  # -unix CTL DATA
    assert complete("umlswitch", "--vde", prefix) == [str(tmp_path / "cards")]
    assert sorted(complete("umlswitch", "ctl", "pcap/start", prefix)) == both
    assert complete("umlswitch", "ctl", "pcap/start", "x.pcap", prefix) == []  # PORT: a number
    assert sorted(complete("umlswitch", "capture", "-w", prefix)) == both
    assert complete("umlswitch", "-tap", "l") == ["lo"]
    assert "root" in complete("umlswitch", "--group", "roo")


# --- the wheel ------------------------------------------------------------------------------


def _setuptools_version() -> tuple[int, ...] | None:
    try:
        from importlib.metadata import version

        return tuple(int(part) for part in version("setuptools").split(".")[:2])
    except Exception:
        return None


@pytest.mark.skipif(
    (_setuptools_version() or (0,)) < (77,),
    reason="building the wheel offline needs setuptools>=77 here (pip install -e '.[test]')",
)
def test_the_wheel_installs_the_man_page_units_completion_and_licence(tmp_path):
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info behind
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".*")
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("umlswitch", "man", "completion", "systemd"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("umlswitch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        data = f"umlswitch-{__version__}.data/data/"
        assert {
            data + "share/man/man1/umlswitch.1",
            data + "share/bash-completion/completions/umlswitch",
            data + "lib/systemd/system/umlswitch.service",
            data + "lib/systemd/system/umlswitch.socket",
            f"umlswitch-{__version__}.dist-info/licenses/LICENSE",
        } <= names
        assert zf.read(data + "share/man/man1/umlswitch.1") == MANPAGE.read_bytes()
        metadata = zf.read(f"umlswitch-{__version__}.dist-info/METADATA").decode()
    headers = dict(
        line.split(": ", 1) for line in metadata.split("\n\n")[0].splitlines() if ": " in line
    )
    assert headers["License-Expression"] == "GPL-2.0-or-later"
    assert headers["Author-email"].startswith("The umlswitch maintainers <")
    assert "Project-URL" in headers and "Keywords" in headers and "Classifier" in headers
    assert "Provides-Extra: dev" in metadata
    assert 'Requires-Dist: mypy>=1.10; extra == "dev"' in metadata
    assert 'extra == "test"' in metadata and not re.search(
        r"(mypy|ruff).*extra == \"test\"", metadata
    )


def _readme_test_command() -> str:
    match = re.search(r"Run the tests.*?```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert match, "README.md: no 'Run the tests' command block"
    return match[1].strip()


@needs_man
@pytest.mark.skipif(
    (_setuptools_version() or (0,)) < (77,),
    reason="installing offline needs setuptools>=77 here (pip install '.[test]')",
)
def test_the_readme_test_command_leaves_man_completion_and_units_installed(tmp_path):
    """The README's install step, in a virtualenv, installs what `pip install .` does.

    An editable install (`pip install -e`) would install none of the data files: afterwards
    `man umlswitch` says "No manual entry". The virtualenv sees this machine's packages, so the
    install runs offline, and the machine's own installation is left alone.
    """
    install, _, tests = _readme_test_command().partition(" && ")
    assert install.startswith("pip install ") and "-e" not in install.split(), install
    assert tests == "python3 -m pytest -rs"
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info behind
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".*")
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("umlswitch", "man", "completion", "systemd"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    pip = venv / "bin" / "pip"  # this machine's pip, run by the virtualenv's python
    pip.write_text(f'#!/bin/sh\nexec "{venv}/bin/python" -m pip "$@"\n')
    pip.chmod(0o755)
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}", "PIP_NO_INDEX": "1",
           "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["sh", "-c", install], cwd=source, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # man finds pages beside the bin/ directories on PATH (man-db's manpath), as a user runs it
    found = subprocess.run(["man", "-w", "umlswitch"], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == f"{venv}/share/man/man1/umlswitch.1", found.stderr
    page = subprocess.run(
        ["man", "umlswitch"], env={**env, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert page.returncode == 0 and "umlswitch" in page.stdout and "OPTIONS" in page.stdout
    assert (venv / "share/bash-completion/completions/umlswitch").read_bytes() == (
        COMPLETION.read_bytes()
    )
    for unit in ("umlswitch.service", "umlswitch.socket"):
        assert (venv / "lib/systemd/system" / unit).is_file()

"""The management protocol of vde_switch (``vde_switch -M``), as text: pure, no sockets.

What ``vdeterm`` (Debian's vde2, ``libvdehist``) and ``unixcmd`` expect, observed on a real
``vde_switch`` 2.3.2:

* On connect, the server writes a banner and the prompt in one write. ``vdeterm`` reads until a
  read ends with ``"$ "`` and makes its own prompt from the last line (``vde`` -> ``vde[PATH]: ``).
* The client sends one command per line. Empty lines and ``#`` comments get just the prompt.
  ``vdeterm`` sends a command without the newline, in one write; a partial line followed by a
  pause is therefore a command too.
* A reply is an optional data block, a status line, then the prompt ``"\\nvde$ "``::

      0000 DATA END WITH '.'
      ...data lines...
      .
      1000 Success

      vde$ ␠

  The status is ``1000 Success`` or ``1000+errno strerror`` (``1022 Invalid argument``,
  ``1038 Function not implemented`` for an unknown command); we may add ``: detail`` to it.
  ``9999 END OF SESSION`` ends the session (``logout``, ``shutdown``).
* ``vdeterm`` sends ``help`` first and takes the first word of each line after the
  ``------------`` line as a completion keyword.

umlswitch reads every complete line (vde_switch executes only the first command of one read).
A data line never holds a raw control character and is never a lone ``.``: untrusted text (a vde
client's description) cannot end the block early or forge a status line.

**JSON.** ``json COMMAND [ARGS]`` runs any command and answers one data block holding exactly one
line: a JSON document (also on failure: ``{"error": {"code": 1022, "message": "..."}}``), then
the status line as usual. This is what ``umlswitch ctl --json`` and ``umlswitch top`` use.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

BANNER_TAIL = "(a uml_switch-compatible virtual switch; type 'help')\n"
PROMPT = "\nvde$ "
PROMPT_TAIL = "vde$ "  # the prompt's incomplete last line, which ends every answer
DATA_START = "0000 DATA END WITH '.'"
DATA_END = "."
JSON_PREFIX = "json"

SUCCESS = 1000
END_OF_SESSION = 9999
MAX_LINE = 4096  # bytes in one command line

_STATUS = re.compile(r"^(\d{4})(?: (.*))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def banner(version: str) -> str:
    """The greeting, including the first prompt (one write, as vdeterm wants it)."""
    return f"umlswitch V.{version}\n{BANNER_TAIL}{PROMPT}"


def status_line(code: int, message: str) -> str:
    return f"{code:04d} {message}"


@dataclass(frozen=True)
class Reply:
    """One answer: an optional data block and a status (``code`` 1000 = success)."""

    code: int = SUCCESS
    message: str = "Success"
    lines: tuple[str, ...] | None = None  # None: no data block at all

    @property
    def ok(self) -> bool:
        return self.code in (SUCCESS, END_OF_SESSION)

    @property
    def errno(self) -> int:
        """The errno of a failure (0 for success and end of session)."""
        return 0 if self.ok else self.code - SUCCESS

    @classmethod
    def success(cls, lines: list[str] | tuple[str, ...] | None = None) -> Reply:
        return cls(SUCCESS, "Success", None if lines is None else tuple(lines))

    @classmethod
    def error(
        cls, errno: int, detail: str = "", lines: list[str] | tuple[str, ...] | None = None
    ) -> Reply:
        message = os.strerror(errno) + (f": {detail}" if detail else "")
        return cls(SUCCESS + errno, message, None if lines is None else tuple(lines))

    @classmethod
    def end_of_session(cls, lines: list[str] | tuple[str, ...] | None = None) -> Reply:
        return cls(END_OF_SESSION, "END OF SESSION", None if lines is None else tuple(lines))


def clean_line(text: str) -> str:
    """``text`` made safe as one data line: control characters escaped, never a lone dot."""
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return ".." if text == DATA_END else text


def format_reply(reply: Reply, *, prompt: bool = True) -> str:
    """The reply as sent: data block, status line and (unless the session ends) the prompt."""
    out: list[str] = []
    if reply.lines is not None:
        out.append(DATA_START)
        out.extend(clean_line(line) for line in reply.lines)
        out.append(DATA_END)
    out.append(status_line(reply.code, clean_line(reply.message)))
    text = "\n".join(out) + "\n"
    if prompt and reply.code != END_OF_SESSION:
        text += PROMPT
    return text


# --- the server side: lines in, invocations out ---------------------------------------------


class LineTooLong(Exception):
    """A command line longer than MAX_LINE bytes."""


class LineReader:
    """Splits the byte stream of a session into command lines (``\\n`` or ``\\r\\n``).

    vdeterm sends each command in one write *without* a newline (vde_switch takes every read as
    one command), so the server takes a pending partial line as complete (``flush``) when the
    client pauses after it.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        """The complete lines in ``data`` (plus what was buffered); raise LineTooLong."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self.max_line or any(len(raw) > self.max_line for raw in lines):
            raise LineTooLong(f"command line longer than {self.max_line} bytes")
        return [_decode(raw) for raw in lines]

    @property
    def pending(self) -> bool:
        """Whether a partial line is buffered."""
        return bool(self._buffer)

    def flush(self) -> str:
        """The buffered partial line, as a complete one."""
        raw, self._buffer = self._buffer, b""
        return _decode(raw)


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", "replace")


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: ``[json] NAME ARGS...``."""

    name: str
    args: tuple[str, ...] = ()
    json: bool = False

    def __str__(self) -> str:
        return " ".join([JSON_PREFIX] * self.json + [self.name, *self.args])


def parse_line(line: str) -> Invocation | None:
    """The command on ``line``; None for an empty line or a ``#`` comment."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None
    as_json = words[0] == JSON_PREFIX
    if as_json:
        words = words[1:]
        if not words:
            return Invocation("", (), True)
    return Invocation(words[0], tuple(words[1:]), as_json)


# --- the client side: text in, replies out ---------------------------------------------------


class ProtocolError(Exception):
    """The server said something that is not the management protocol."""


class ReplyReader:
    """Collects a server's output until one answer (or the banner) is complete.

    ``feed`` returns True once the text so far ends with the prompt after a status line (or, for
    the banner, with the prompt at all), or with ``9999 END OF SESSION``; ``reply()`` parses it.
    """

    def __init__(self, *, want_status: bool = True) -> None:
        self.want_status = want_status
        self.text = ""

    def feed(self, chunk: str) -> bool:
        self.text += chunk
        head, _, tail = self.text.rpartition("\n")
        if tail == PROMPT_TAIL:
            return not self.want_status or _status_of(head.split("\n")) is not None
        status = _status_of(self.text.split("\n"))
        return status is not None and status[0] == END_OF_SESSION

    def reply(self) -> Reply:
        """The answer received: its data block and status (ProtocolError if there is none)."""
        return parse_reply(self.text)


def _status_of(lines: list[str]) -> tuple[int, str] | None:
    """The status line in ``lines`` outside any data block, if there is one."""
    in_data = False
    for line in lines:
        if in_data:
            in_data = line != DATA_END
            continue
        if line == DATA_START:
            in_data = True
            continue
        match = _STATUS.match(line)
        if match and match.group(1)[0] in "19":
            return int(match.group(1)), match.group(2) or ""
    return None


def parse_reply(text: str) -> Reply:
    """Parse one answer (data block, status line, prompt) as a client receives it."""
    lines: list[str] | None = None
    in_data = False
    for line in text.split("\n"):
        if in_data:
            if line == DATA_END:
                in_data = False
            else:
                assert lines is not None
                lines.append(line)
            continue
        if line == DATA_START:
            in_data, lines = True, []
            continue
        match = _STATUS.match(line)
        if match is None:
            continue  # the prompt, empty lines
        code = int(match.group(1))
        if match.group(1)[0] == "3":
            continue  # an asynchronous debug message of vde_switch
        if match.group(1)[0] not in "19":
            raise ProtocolError(f"unexpected status line {line!r}")
        return Reply(code, match.group(2) or "", None if lines is None else tuple(lines))
    raise ProtocolError(f"no status line in the answer {text[-200:]!r}")

"""The management protocol's wire format: vde_switch's replies, lines in, replies parsed back."""

from __future__ import annotations

import itertools

import pytest

from umlswitch.mgmt.protocol import (
    DATA_START,
    END_OF_SESSION,
    PROMPT,
    Invocation,
    LineReader,
    LineTooLong,
    ProtocolError,
    Reply,
    ReplyReader,
    banner,
    clean_line,
    format_reply,
    parse_line,
    parse_reply,
)

# Observed on vde_switch 2.3.2 (``vde_switch -M``): the exact bytes of three answers.
VDE_SUCCESS_WITH_DATA = "0000 DATA END WITH '.'\nNumports=32\nHUB=false\n.\n1000 Success\n\nvde$ "
VDE_UNKNOWN_COMMAND = "1038 Function not implemented\n\nvde$ "
VDE_DATA_THEN_ERROR = "0000 DATA END WITH '.'\n.\n1019 No such device\n\nvde$ "


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply.success(["Numports=32", "HUB=false"]), VDE_SUCCESS_WITH_DATA),
        (Reply.success(), "1000 Success\n\nvde$ "),
        (Reply.error(38), VDE_UNKNOWN_COMMAND),
        (Reply.error(22, "no such port"), "1022 Invalid argument: no such port\n\nvde$ "),
        (Reply.end_of_session(), "9999 END OF SESSION\n"),
    ],
    ids=["data", "success", "enosys", "einval-detail", "end-of-session"],
)
def test_replies_are_formatted_as_vde_switch_does(reply, text):
    assert format_reply(reply) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VDE_SUCCESS_WITH_DATA, Reply(1000, "Success", ("Numports=32", "HUB=false"))),
        (VDE_UNKNOWN_COMMAND, Reply(1038, "Function not implemented", None)),
        (VDE_DATA_THEN_ERROR, Reply(1019, "No such device", ())),
        ("9999 END OF SESSION", Reply(END_OF_SESSION, "END OF SESSION", None)),
        ("3001 debug chatter\n1000 Success\n\nvde$ ", Reply(1000, "Success", None)),
    ],
    ids=["data", "enosys", "data-then-error", "end", "debug-message-skipped"],
)
def test_replies_parse_back(text, expected):
    reply = parse_reply(text)
    assert reply == expected
    assert reply.ok == (expected.code in (1000, END_OF_SESSION))


def test_a_reply_round_trips_with_its_errno():
    reply = parse_reply(format_reply(Reply.error(6, "no port 7", ["{}"])))
    assert (reply.code, reply.errno, reply.lines) == (1006, 6, ("{}",))
    assert reply.message == "No such device or address: no port 7"


def test_no_status_line_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        parse_reply("hello\nvde$ ")


@pytest.mark.parametrize(
    ("untrusted", "safe"),
    [
        (".", ".."),
        ("evil\n.\n1000 Success", "evil\\x0a.\\x0a1000 Success"),
        ("tab\there", "tab\\x09here"),
        ("plain text", "plain text"),
    ],
)
def test_data_lines_cannot_end_the_block_or_forge_a_status(untrusted, safe):
    assert clean_line(untrusted) == safe
    reply = parse_reply(format_reply(Reply.success([untrusted, "last"])))
    assert reply.lines == (safe, "last")


def test_the_banner_ends_with_the_prompt_vdeterm_looks_for():
    text = banner("1.2.3")
    assert text.startswith("umlswitch V.1.2.3\n")
    assert text.endswith(PROMPT) and text.endswith("$ ")
    # vdeterm builds its prompt from the text between the last newline and "$ ".
    assert text[: -len("$ ")].rsplit("\n", 1)[1] == "vde"


@pytest.mark.parametrize(
    ("line", "invocation"),
    [
        ("port/print", Invocation("port/print")),
        ("  port/print   3  ", Invocation("port/print", ("3",))),
        ("json hash/find 02:00:00:00:00:01", Invocation("hash/find", ("02:00:00:00:00:01",), True)),
        ("json", Invocation("", (), True)),
        ("", None),
        ("   ", None),
        ("# a comment", None),
    ],
)
def test_command_lines_parse(line, invocation):
    assert parse_line(line) == invocation


def test_an_invocation_prints_as_its_command_line():
    assert str(Invocation("pcap/start", ("/tmp/x", "2"), True)) == "json pcap/start /tmp/x 2"


def test_line_reader_splits_lines_and_keeps_a_partial_one():
    reader = LineReader()
    assert reader.feed(b"help\r\nport/pr") == ["help"]
    assert reader.pending
    assert reader.feed(b"int 1\nhash") == ["port/print 1"]
    assert reader.flush() == "hash"  # vdeterm: a command without a newline
    assert not reader.pending
    assert reader.feed(b"caf\xc3\xa9 \xff\n") == ["café \ufffd"]


def test_line_reader_refuses_endless_lines():
    reader = LineReader(max_line=16)
    reader.feed(b"x" * 16)
    with pytest.raises(LineTooLong):
        reader.feed(b"y")
    with pytest.raises(LineTooLong):
        LineReader(max_line=4).feed(b"longer\nok\n")


def test_reply_reader_waits_for_the_prompt_after_a_status():
    text = format_reply(Reply.success(["a", "vde$ ", "b"]))
    reader = ReplyReader()
    cuts = [0, 20, len(DATA_START) + 3, len(text) - 2, len(text)]
    done = [reader.feed(text[a:b]) for a, b in itertools.pairwise(cuts)]
    assert done == [False, False, False, True]
    assert reader.reply().lines == ("a", "vde$ ", "b")


def test_reply_reader_ends_at_end_of_session_without_a_prompt():
    reader = ReplyReader()
    assert reader.feed("9999 END OF SESSION")
    assert reader.reply().code == END_OF_SESSION


def test_reply_reader_for_the_banner_needs_no_status():
    reader = ReplyReader(want_status=False)
    assert not reader.feed("umlswitch V.1\n")
    assert reader.feed("\nvde$ ")

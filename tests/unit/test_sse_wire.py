"""Server-Sent Events framing (CONTRACT §5, WHATWG HTML §9.2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.wire.sse import (
    PING,
    ParsedEvent,
    SseDecoder,
    decode_stream,
    encode_event,
    encode_retry,
)


def encode_comment(text: str) -> bytes:
    """A comment frame (the server sends only ``PING``); the decoder must skip any."""
    return "".join(f": {line}\n" for line in re.split(r"\r\n|\r|\n", text)).encode() + b"\n"


def test_single_line_event_with_id_and_name() -> None:
    frame = encode_event('{"a":1}', id="abc-1", event="/created")
    assert frame == b'id: abc-1\nevent: /created\ndata: {"a":1}\n\n'


def test_event_without_id_or_name_has_only_data() -> None:
    assert encode_event("hello") == b"data: hello\n\n"


def test_id_line_without_event_line() -> None:
    assert encode_event("x", id="e-7") == b"id: e-7\ndata: x\n\n"


@pytest.mark.parametrize(
    ("payload", "lines"),
    [
        ("a\nb", ["a", "b"]),
        ("a\rb", ["a", "b"]),
        ("a\r\nb", ["a", "b"]),
        ("a\n\nb", ["a", "", "b"]),
        ("a\r\rb", ["a", "", "b"]),
        ("a\r\n\r\nb", ["a", "", "b"]),
        ("a\n\rb", ["a", "", "b"]),  # LF then CR: two breaks, not one CRLF
        ("one\ntwo\rthree\r\nfour", ["one", "two", "three", "four"]),
        ("end\n", ["end", ""]),
        ("", [""]),
    ],
)
def test_every_line_break_starts_its_own_data_line(payload: str, lines: list[str]) -> None:
    frame = encode_event(payload, id="i-1")
    expected = "id: i-1\n" + "".join(f"data: {line}\n" for line in lines) + "\n"
    assert frame == expected.encode()
    # No raw CR may survive: it would end a line for the client's parser.
    assert b"\r" not in frame


def test_frame_is_utf8() -> None:
    assert encode_event("grüße €") == "data: grüße €\n\n".encode()


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "\n", "a\0b"])
def test_rejects_ids_with_line_breaks_or_nul(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        encode_event("x", id=bad)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\n"])
def test_rejects_event_names_with_line_breaks(bad: str) -> None:
    with pytest.raises(ValueError, match="event"):
        encode_event("x", event=bad)


def test_retry_and_comment_frames() -> None:
    assert encode_retry(3000) == b"retry: 3000\n\n"
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"
    assert PING == b": ping\n\n"


def test_decode_ignores_comments_pings_and_retry_only_blocks() -> None:
    stream = (
        PING
        + encode_retry(5000)
        + encode_event("first", id="e-1")
        + PING
        + encode_comment("several\nlines\rof comment")
        + encode_event("second", id="e-2", event="update")
        + PING
    )
    assert decode_stream(stream.decode()) == [
        ParsedEvent("first", "e-1", None),
        ParsedEvent("second", "e-2", "update"),
    ]


def test_decode_without_id_line_gives_no_id() -> None:
    assert decode_stream("data: x\n\n") == [ParsedEvent("x")]


def test_decode_reads_retry_with_data_and_ignores_bad_retry() -> None:
    assert decode_stream("retry: 100\ndata: a\n\nretry: x\ndata: b\n\n") == [
        ParsedEvent("a", retry=100),
        ParsedEvent("b"),
    ]


def test_decode_field_without_colon_and_without_space() -> None:
    # WHATWG: "data" alone is a data line with an empty value; one leading space is removed.
    assert decode_stream("data\ndata:x\ndata:  y\n\n") == [ParsedEvent("\nx\n y")]


def test_decode_drops_an_unterminated_last_event() -> None:
    assert decode_stream("data: complete\n\ndata: cut off") == [ParsedEvent("complete")]


_BREAKS = re.compile(r"\r\n|\r|\n")
# Text that UTF-8 can carry (no lone surrogates). CR and LF (so CRLF too) are drawn
# often, not left to chance among all characters.
payloads = st.text(
    alphabet=st.one_of(st.sampled_from(["\r", "\n", " ", ":", "\0"]), st.characters(codec="utf-8")),
    max_size=60,
)
ids = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=20)
names = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=20)


@given(payloads, st.none() | ids, st.none() | names)
def test_decode_encode_roundtrip(data: str, event_id: str | None, name: str | None) -> None:
    frame = encode_event(data, id=event_id, event=name)
    (parsed,) = decode_stream(frame.decode("utf-8"))
    assert parsed == ParsedEvent(_BREAKS.sub("\n", data), event_id, name)


@given(st.lists(st.tuples(payloads, ids), max_size=5), st.text(st.characters(codec="utf-8")))
def test_roundtrip_of_a_stream_interleaved_with_comments(
    events: list[tuple[str, str]], comment: str
) -> None:
    stream = PING + encode_retry(1000)
    for data, event_id in events:
        stream += encode_event(data, id=event_id) + encode_comment(comment) + PING
    assert decode_stream(stream.decode("utf-8")) == [
        ParsedEvent(_BREAKS.sub("\n", data), event_id) for data, event_id in events
    ]


@given(st.lists(st.text(max_size=40), max_size=8), st.data())
def test_decoder_fed_in_any_chunks_reads_what_a_whole_stream_reads(
    payloads: list[str], data: st.DataObject
) -> None:
    """An upstream's bytes arrive in arbitrary pieces (CONTRACT §13): a CRLF, a field or
    an event split across chunks reads the same as the whole stream."""
    stream = "retry: 250\r\n" + "".join(
        encode_event(p, id=f"u{i}").decode().replace("\n", "\r\n") for i, p in enumerate(payloads)
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = SseDecoder()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += decoder.feed(stream[start:end])
    assert events == decode_stream(stream)
    lines = [p.replace("\r\n", "\n").replace("\r", "\n") for p in payloads]
    assert [e.data for e in events] == lines
    assert decoder.retry == 250

"""The framing of a held WebSocket (gateway/websocket_frames.py) against websockets' own
serializer: what a real client sends is parsed as websockets would, breakage as RFC 6455 says."""

from __future__ import annotations

import pytest
from websockets.frames import Close, Frame, Opcode

from gateway.websocket_frames import (
    BINARY,
    CLOSE,
    MESSAGE_TOO_BIG,
    PING,
    PROTOCOL_ERROR,
    TEXT,
    ClientFrames,
    FrameError,
    close_code,
)


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def test_frames_split_anywhere_are_parsed_whole_and_in_order() -> None:
    stream = (
        masked(Opcode.TEXT, "héllo".encode())
        + masked(Opcode.PING, b"p")
        + masked(Opcode.BINARY, bytes(range(256)) * 300)  # a 64-bit length
        + masked(Opcode.TEXT, b"x" * 200)  # a 16-bit length
    )
    for cut in (1, 2, 3, 7, 100, len(stream) - 1):
        frames = ClientFrames(1 << 20)
        out = frames.feed(stream[:cut]) + frames.feed(stream[cut:])
        assert out == [
            (TEXT, "héllo".encode()),
            (PING, b"p"),
            (BINARY, bytes(range(256)) * 300),
            (TEXT, b"x" * 200),
        ]
        assert frames.idle


def test_fragments_join_into_one_message_with_control_frames_between() -> None:
    frames = ClientFrames(1024)
    out = frames.feed(
        masked(Opcode.TEXT, b"a", fin=False)
        + masked(Opcode.PING, b"")
        + masked(Opcode.CONT, b"b", fin=False)
        + masked(Opcode.CONT, b"c")
    )
    assert out == [(PING, b""), (TEXT, b"abc")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (Frame(Opcode.TEXT, b"x").serialize(mask=False), PROTOCOL_ERROR),  # unmasked
        (masked(Opcode.CONT, b"x"), PROTOCOL_ERROR),  # nothing to continue
        (bytes([0x89, 0xFE, 0, 126]) + bytes(130), PROTOCOL_ERROR),  # a ping over 125 bytes
        (masked(Opcode.TEXT, b"x" * 1025), MESSAGE_TOO_BIG),
        (masked(Opcode.TEXT, b"x" * 600, fin=False) + masked(Opcode.CONT, b"x" * 600), 1009),
        (bytes([0xC1, 0x80]) + b"\0" * 4, PROTOCOL_ERROR),  # a reserved bit
    ],
    # Named, not shown: masks are random, and pytest-xdist's workers must collect the
    # same test ids.
    ids=["unmasked", "no-continuation", "long-ping", "too-big", "too-big-fragments", "rsv"],
)
def test_broken_framing_names_its_close_code(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as info:
        ClientFrames(1024).feed(data)
    assert info.value.code == code


def test_a_too_big_frame_is_refused_from_its_header() -> None:
    header = masked(Opcode.BINARY, b"x" * 5000)[:8]  # no payload yet
    with pytest.raises(FrameError):
        ClientFrames(1024).feed(header)


def test_close_codes() -> None:
    assert close_code(b"") == (1005, "")
    assert close_code(Close(1000, "bye").serialize()) == (1000, "bye")
    with pytest.raises(FrameError):
        close_code(b"\x00")  # too short
    with pytest.raises(FrameError):
        close_code(b"\x03\xed")  # 1005 is never sent
    with pytest.raises(FrameError) as info:
        close_code(b"\x03\xe8\xff")
    assert info.value.code == 1007
    assert Opcode.CLOSE.value == CLOSE

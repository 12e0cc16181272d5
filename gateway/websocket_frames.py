"""RFC 6455 framing for a held WebSocket (gateway/websocket_holder.py): the client's
frames parsed from the socket's bytes, and the few server frames built here.

websockets' ``ServerProtocol`` parses with a generator per connection that keeps its
reader, buffer and the handshake's request for the connection's life (about 4 KiB per idle
connection, BENCHMARKS.md); a held connection keeps only the bytes of an unfinished frame.
Unmasking is websockets' (its C speedup when built).
"""

from __future__ import annotations

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C speedups
    from websockets.utils import apply_mask

PING_FRAME = Frame(Opcode.PING, b"").serialize(mask=False)  # a heartbeat (RFC 6455 §5.5.2)
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG, INTERNAL_ERROR = 1002, 1007, 1009, 1011


class FrameError(Exception):
    """The client broke the framing: the connection closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def text_frame(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def close_frame(code: int, reason: str = "") -> bytes:
    return Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False)


def pong_frame(payload: bytes) -> bytes:
    return Frame(Opcode.PONG, payload).serialize(mask=False)


def close_code(payload: bytes) -> tuple[int, str]:
    """The code and reason of a client's close frame (1005 when it gives none)."""
    if not payload:
        return 1005, ""
    try:
        close = Close.parse(payload)
    except ProtocolError as exc:  # too short, or a code no endpoint may send
        raise FrameError(PROTOCOL_ERROR, str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise FrameError(INVALID_DATA, "invalid UTF-8 in the close reason") from exc
    return close.code, close.reason


class ClientFrames:
    """A client's frames as they arrive: whole messages (TEXT or BINARY with the joined
    payload) and control frames, in order."""

    __slots__ = ("_buffer", "_kind", "_parts", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""  # an unfinished frame
        self._parts: list[bytes] | None = None  # a fragmented message's frames so far
        self._kind = TEXT

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages and control frames ``data`` completes; raises FrameError."""
        buffer = self._buffer + data if self._buffer else data
        size, pos = len(buffer), 0
        out: list[tuple[int, bytes]] = []
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            opcode, fin = first & 0x0F, first & 0x80
            if first & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits must be 0")
            if not second & 0x80:
                raise FrameError(PROTOCOL_ERROR, "incorrect masking")
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[head : head + 2]), head + 2
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[head : head + 8]), head + 8
            if opcode >= CLOSE:
                if length > 125 or not fin:
                    raise FrameError(PROTOCOL_ERROR, "invalid control frame")
            elif length + sum(map(len, self._parts or ())) > self.max_size:
                raise FrameError(MESSAGE_TOO_BIG, f"over size limit ({self.max_size} bytes)")
            end = head + 4 + length
            if size < end:
                break
            payload = apply_mask(buffer[head + 4 : end], buffer[head : head + 4])
            pos = end
            self._take(opcode, bool(fin), payload, out)
        self._buffer = buffer[pos:] if pos < size else b""
        return out

    def _take(self, opcode: int, fin: bool, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        if opcode >= CLOSE:
            if opcode not in (CLOSE, PING, PONG):
                raise FrameError(PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")
            out.append((opcode, payload))
        elif opcode == CONTINUATION:
            parts = self._parts
            if parts is None:
                raise FrameError(PROTOCOL_ERROR, "unexpected continuation frame")
            parts.append(payload)
            if fin:
                self._parts = None
                out.append((self._kind, b"".join(parts)))
        elif opcode in (TEXT, BINARY):
            if self._parts is not None:
                raise FrameError(PROTOCOL_ERROR, "expected a continuation frame")
            if fin:
                out.append((opcode, payload))
            else:
                self._kind, self._parts = opcode, [payload]
        else:
            raise FrameError(PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")

    @property
    def idle(self) -> bool:
        """No frame or message is half-received."""
        return not self._buffer and self._parts is None

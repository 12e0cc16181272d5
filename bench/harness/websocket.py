"""Raw WebSocket subscribers (RFC 6455) for the fan-out bench: a hand-written upgrade
request and frame parser on an asyncio Protocol, no library on the measured path.

Server frames are unmasked; text and binary frames are payloads (``seq`` and ``t`` as on
SSE), a ping is answered with a pong, a close frame ends the client.
"""

from __future__ import annotations

import time

from .sse import Receiver

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: the server's answer is not checked


def ws_request(port: int, path: str, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"{auth}\r\n"
    ).encode()


class WSClient(Receiver):
    """Open it with ``ready_on_headers=True``: the stream begins at the 101 answer."""

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.raw += data
        if not self.headers_done and self.head("101") is None:
            return
        raw = self.raw
        payloads: list[bytes] = []
        pos, size = 0, len(raw)
        while size - pos >= 2:
            opcode, length = raw[pos] & 0x0F, raw[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                length, start = int.from_bytes(raw[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                length, start = int.from_bytes(raw[pos + 2 : pos + 10], "big"), pos + 10
            if start > size or start + length > size:
                break
            payload = bytes(raw[start : start + length])
            pos = start + length
            if opcode in (1, 2):
                payloads.append(payload)
            elif opcode == 9 and self.transport is not None:  # ping: a masked pong (zero mask)
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.ended = True
        del raw[:pos]
        self.tally.writes += len(payloads)
        if payloads:
            self.record(payloads, now)

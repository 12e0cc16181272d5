"""New live SSE streams admitted in the server protocol's callback (issue 14: reconnect
storms): no ASGI task, no middleware, no request scope.

When a node dies its clients reconnect at once; most of them open a plain live stream
with a token this node verifies at once. For such a GET, :class:`SseExpress` runs, in the
HTTP protocol's ``on_headers_complete`` (gateway/edge.py), what the ASGI path would: the
admission of ``gateway/access.py`` (``bridge/policy.py`` decides), the connection count,
the hub attach, and the held stream's head (gateway/sse_holder.py; the same bytes the ASGI
path writes, CORS headers included). Anything else (a refusal, a resume, a
catch-up, ``from``, a lease in Redis, a token to fetch keys for, a body,
HEAD, pipelining) returns False before any side effect, and the ASGI path serves the
request as it always did, answers included.
"""

from __future__ import annotations

import contextvars
from urllib.parse import parse_qsl

from bridge.config import RESERVED_PREFIXES
from bridge.errors import AccessDenied
from gateway.access import admit_now
from gateway.cors import Cors
from gateway.logs import bind, connection_id
from gateway.outlet import Outlet
from gateway.runtime import Runtime
from gateway.sse import FIRST, HEADERS, PING_CHUNK
from gateway.sse_holder import HeldStream
from gateway.stream import StreamSession

# Request headers that take the ASGI path: a resume, a body.
_FULL_PATH = frozenset((b"last-event-id", b"content-length", b"transfer-encoding"))
_FULL_PATH_QUERY = ("last_event_id", "from")


class SseExpress:
    """Admits and holds a new live SSE stream from a protocol callback, when it can."""

    __slots__ = ("admitted", "cors", "runtime")

    def __init__(self, runtime: Runtime, cors: Cors) -> None:
        self.runtime = runtime
        self.cors = cors
        self.admitted = runtime.metrics.streams_express.labels()

    def __call__(
        self, outlet: Outlet, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """Whether the stream of this GET (``path`` unquoted, ``headers`` with lower-case
        names) is held; False: nothing was done, the ASGI path serves it."""
        if self.runtime.stopping or path.startswith(RESERVED_PREFIXES):
            return False
        resolved = self.runtime.catalog.resolve(path)
        if resolved is None or resolved[0].api.protocol != "sse":
            return False
        named: dict[str, str] = {}
        for name, value in headers:
            if name in _FULL_PATH:
                return False
            named[name.decode("latin-1")] = value.decode("latin-1")
        # The log fields bound here go with the held stream (it copies this context).
        return contextvars.copy_context().run(self._hold, outlet, path, query, named)

    def _hold(self, outlet: Outlet, path: str, raw_query: bytes, headers: dict[str, str]) -> bool:
        query = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
        if any(name in _FULL_PATH_QUERY for name, _ in query):
            return False
        bind(connection=connection_id())  # as Gateway._dispatch
        admitted = admit_now(self.runtime, path=path, headers=headers, query=query)
        if admitted is None:
            return False
        session = StreamSession(self.runtime, admitted, "sse")
        if not session.immediate:
            return False
        try:
            session.enter_now()
        except AccessDenied:  # TooManyConnections: the ASGI path counts and answers it
            return False
        origin = headers.get("origin")
        head = HEADERS if origin is None else self.cors.simple_headers(path, origin, HEADERS)
        HeldStream.hold(session, outlet, (head, FIRST), PING_CHUNK)
        self.admitted.inc()
        return True

"""Logging set-up: plain text, or one JSON object per line (STREAMBRIDGE_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from contextvars import ContextVar

_SECRET_QUERY = re.compile(r"((?:access_token|client_secret|hub\.secret)=)[^&\s\"']+", re.I)


class RedactSecrets(logging.Filter):
    """Servers log request lines with their query string; tokens in it never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = _SECRET_QUERY.sub(r"\1[redacted]", record.msg)
        return True


class DropDenialFalseAlarm(logging.Filter):
    """uvicorn's websockets-sansio protocol logs "returned without completing handshake" at
    ERROR after every handshake refused with an HTTP answer (the ASGI
    ``websocket.http.response`` extension it advertises), because only ``accept`` marks the
    handshake complete. Our refusals are deliberate (CONTRACT §4), so that line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


# Set by a transport that ends a response on purpose without finishing it: a slow client
# whose blocked write was abandoned (CONTRACT §5). The server logs that at ERROR in the
# same task, right after the application returns.
CUT_ON_PURPOSE: ContextVar[bool] = ContextVar("streambridge_cut_on_purpose", default=False)


class DropCutFalseAlarm(logging.Filter):
    """uvicorn logs "returned without completing response" at ERROR for every slow SSE
    client the gateway disconnects (the final chunk cannot be written to a client that
    stopped reading). Those cuts are counted in streambridge_slow_client_disconnects_total;
    the line is dropped only for them, never for a response that really broke."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            CUT_ON_PURPOSE.get()
            and record.getMessage() == "ASGI callable returned without completing response."
        )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str | None = None) -> None:
    handler = logging.StreamHandler()
    if os.environ.get("STREAMBRIDGE_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    handler.addFilter(DropDenialFalseAlarm())
    handler.addFilter(DropCutFalseAlarm())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("STREAMBRIDGE_LOG_LEVEL", "INFO").upper())
    # The access log would print ?access_token= query strings; it stays off.
    logging.getLogger("uvicorn.access").disabled = True

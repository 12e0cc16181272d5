"""Logs as data (CONTRACT §9): plain text by default, one JSON object per line when
``STREAMBRIDGE_LOG_FORMAT=json``.

Context is a field, never text inside the message. A request binds its fields once, when
it is admitted (:func:`bind`: ``api``, ``version``, ``topic``, ``client_id``,
``connection``, ``broker``...); every line logged while serving it, by any module and by
the tasks it starts, carries them (a :class:`contextvars.ContextVar` read by
:class:`ContextFields`). A call site adds its own with ``extra={"event_id": ...}``. So a
user selects one client's whole story with ``jq 'select(.client_id == "dashboard")'``.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ParamSpec, TextIO, TypeVar
from urllib.parse import unquote_plus

# The names every module uses for the same thing, so one key selects across them.
FIELDS = (
    "api",
    "version",
    "topic",
    "client_id",
    "subscription",
    "connection",
    "broker",
    "event_id",
    "task",
)

_ORDER = {name: position for position, name in enumerate(FIELDS)}
# Query parameters whose value is a secret, by their decoded name: ``access%5Ftoken`` is
# ``access_token`` to the gateway, so it is to the redaction too (CONTRACT §4c).
SECRET_PARAMETERS = frozenset({"access_token", "client_secret", "hub.secret"})
_PAIR = re.compile(r"(?P<name>[^\s?&=\"';]+)=(?P<value>[^&\s\"']+)")
# A JWT wherever it appears (a header echoed, a parameter of another name).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_QUOTED = re.compile(r"[\s\"'=]")  # a plain field value with one of these is quoted
_NOTHING: Mapping[str, object] = MappingProxyType({})
_BOUND: ContextVar[Mapping[str, object]] = ContextVar("streambridge_log_fields", default=_NOTHING)
# What a LogRecord holds of its own: everything else on it came as a field (except
# uvicorn's ``color_message``, the message again with terminal colours).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}

_P = ParamSpec("_P")
_R = TypeVar("_R")


_CONNECTION_PREFIX = secrets.token_hex(3)  # this process's, as several workers log alike
_CONNECTIONS = itertools.count()


def _new_connection_prefix() -> None:
    """A forked process (a zygote's child) numbers its connections under a prefix of its own."""
    global _CONNECTION_PREFIX, _CONNECTIONS
    _CONNECTION_PREFIX, _CONNECTIONS = secrets.token_hex(3), itertools.count()


os.register_at_fork(after_in_child=_new_connection_prefix)


def connection_id() -> str:
    """A new connection's id for its log lines: unique within the process and, by its
    random prefix, across processes; no system call per connection (token_hex made one)."""
    return f"{_CONNECTION_PREFIX}{next(_CONNECTIONS):06x}"


def bind(**fields: object) -> None:
    """Add fields to every line logged from now on by this task and the tasks it starts
    (until the enclosing :func:`fields_scope` ends). None values are left out."""
    merged = dict(_BOUND.get())
    for name, value in fields.items():
        if value is not None:
            merged[name] = value
    _BOUND.set(merged)


@contextlib.contextmanager
def fields_scope(**fields: object) -> Iterator[None]:
    """Bind ``fields`` for the block; every :func:`bind` inside it ends with it too."""
    token = _BOUND.set(_BOUND.get())
    bind(**fields)
    try:
        yield
    finally:
        _BOUND.reset(token)


def unbound(function: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Call ``function`` with no fields bound: for what it starts that outlives the request
    and serves many clients (a hub's task), so its lines do not name this client."""
    context = contextvars.copy_context()

    def call() -> _R:
        _BOUND.set(_NOTHING)
        return function(*args, **kwargs)

    return context.run(call)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of a record, bound or passed with ``extra`` (None means absent); the
    common ones first, in the order of :data:`FIELDS`."""
    attributes = record.__dict__
    names = attributes.keys() - _RECORD_ATTRIBUTES  # a set operation: every stream's end logs
    ordered = [name for name in FIELDS if name in names]
    if len(ordered) < len(names):
        ordered += [name for name in attributes if name in names and name not in _ORDER]
    return {name: value for name in ordered if (value := attributes[name]) is not None}


class ContextFields(logging.Filter):
    """Puts the bound fields on each record; a field passed with ``extra`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        attributes = record.__dict__
        for key, value in _BOUND.get().items():
            attributes.setdefault(key, value)
        return True


class RedactSecrets(logging.Filter):
    """Servers log request lines with their query string; tokens in it never reach a log,
    neither through the message nor through a field."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        for key, value in fields_of(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def redact(text: str) -> str:
    """``text`` with the values of secret query parameters (however their names are
    percent-encoded) and every JWT replaced by ``[redacted]``."""
    if "=" in text:
        text = _PAIR.sub(_redact_pair, text)
    if "eyJ" in text:
        text = _JWT.sub("[redacted]", text)
    return text


def _redact_pair(match: re.Match[str]) -> str:
    name = match["name"]
    if "%" in name or "+" in name:
        name = unquote_plus(name)
    if name.lower() in SECRET_PARAMETERS:
        return f"{match['name']}=[redacted]"
    return match[0]


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
    """One JSON object per line: ts, level, logger, message, then each field as a key."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """``<time> <level> <logger>: <message> key=value ...``, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        pairs = [f"{key}={_plain(value)}" for key, value in fields_of(record).items()]
        return " ".join([line, *pairs])


def _plain(value: object) -> str:
    text = str(value)
    if not text or _QUOTED.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def handler(log_format: str | None = None, stream: TextIO | None = None) -> logging.Handler:
    """The one handler: JSON lines when ``log_format`` is ``json`` (the default is plain
    text), with the bound fields, secrets redacted and the servers' false alarms dropped."""
    installed = logging.StreamHandler(stream)
    json_lines = (log_format or "").lower() == "json"
    installed.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    installed.addFilter(ContextFields())
    installed.addFilter(RedactSecrets())
    installed.addFilter(DropDenialFalseAlarm())
    installed.addFilter(DropCutFalseAlarm())
    return installed


def configure(level: str | None = None) -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler(os.environ.get("STREAMBRIDGE_LOG_FORMAT"))]
    root.setLevel(level or os.environ.get("STREAMBRIDGE_LOG_LEVEL", "INFO").upper())
    # The access log (STREAMBRIDGE_ACCESS_LOG=1) goes through the same redaction.
    logging.getLogger("uvicorn.access").disabled = not access_log_enabled()


def access_log_enabled() -> bool:
    """Whether uvicorn's access log is on: ``STREAMBRIDGE_ACCESS_LOG`` 1/true/yes."""
    return os.environ.get("STREAMBRIDGE_ACCESS_LOG", "").lower() in ("1", "true", "yes")

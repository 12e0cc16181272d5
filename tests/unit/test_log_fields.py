"""Logs as data (CONTRACT §9): bound fields become JSON keys, never text in the message."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.logs import bind, connection_id, fields_scope, handler, unbound


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, dict[str, io.StringIO]]]:
    """A logger writing to one JSON and one plain handler, as configure() would set up."""
    streams = {"json": io.StringIO(), "plain": io.StringIO()}
    logger = logging.getLogger("streambridge.test-logs")
    logger.propagate = False
    logger.handlers[:] = [handler(kind, stream) for kind, stream in streams.items()]
    logger.setLevel(logging.INFO)
    yield logger, streams
    logger.handlers.clear()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bound_fields_and_extra_are_keys(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = logged
    with fields_scope(connection="c0ffee"):
        bind(client_id="dashboard", api="Orders", version="1.0.0", topic="/created")
        logger.info("stream opened", extra={"event_id": "7-42", "detail": None})
    logger.info("after the request")
    first, after = json_lines(streams["json"])
    assert first["message"] == "stream opened"
    assert {k: first[k] for k in ("client_id", "api", "version", "topic", "connection")} == {
        "client_id": "dashboard",
        "api": "Orders",
        "version": "1.0.0",
        "topic": "/created",
        "connection": "c0ffee",
    }
    assert first["event_id"] == "7-42"
    assert "detail" not in first  # None is absent, not null
    assert {"ts", "level", "logger"} <= set(first)
    assert "client_id" not in after  # the fields end with the request
    plain = streams["plain"].getvalue().splitlines()
    assert plain[0].endswith(
        "stream opened api=Orders version=1.0.0 topic=/created client_id=dashboard"
        " connection=c0ffee event_id=7-42"
    )


def test_a_call_site_field_wins_over_a_bound_one(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = logged
    with fields_scope(topic="/a"):
        logger.warning("catch-up failed", extra={"topic": "/b"})
    assert json_lines(streams["json"])[0]["topic"] == "/b"


def test_shared_things_started_for_a_request_name_no_client(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = logged
    with fields_scope(client_id="dashboard"):
        unbound(logger.info, "hub started", extra={"broker": "kafka-main"})
    [line] = json_lines(streams["json"])
    assert line["broker"] == "kafka-main"
    assert "client_id" not in line


def test_secrets_never_reach_a_line(
    logged: tuple[logging.Logger, dict[str, io.StringIO]],
) -> None:
    logger, streams = logged
    logger.info('%s - "WebSocket %s"', "127.0.0.1", "/feed/1.0.0/watch/x?access_token=eyJ.abc.def")
    logger.info("callback", extra={"url": "https://cb.example/?hub.secret=s3cret&x=1"})
    text = streams["json"].getvalue() + streams["plain"].getvalue()
    assert "eyJ.abc.def" not in text
    assert "s3cret" not in text
    first, second = json_lines(streams["json"])
    assert first["message"].endswith('?access_token=[redacted]"')
    assert second["url"] == "https://cb.example/?hub.secret=[redacted]&x=1"


def test_connection_ids_are_unique_and_a_forked_process_has_its_own() -> None:
    ids = {connection_id() for _ in range(1000)}
    assert len(ids) == 1000
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a zygote's child, as the e2e tests fork gateways
        os.write(write, connection_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 64).decode()
    assert theirs[:6] != next(iter(ids))[:6]

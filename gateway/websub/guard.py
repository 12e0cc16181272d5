"""The SSRF guard (CONTRACT §7, issue 5 part 4): from a callback URL to the one address the
client may connect to.

http(s) only; the host is resolved with ``loop.getaddrinfo`` (or an injected resolver)
and every address it resolves to must pass :func:`bridge.netguard.refusal` — one bad
address refuses the whole name, so a DNS answer mixing public and private addresses
cannot be used either. The client then connects to the checked address itself (see
:mod:`gateway.websub.client`), so no second lookup can rebind the name.
``websub.allow_private_callbacks: true`` lifts the address check (development, tests).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.errors import CallbackRefused
from bridge.netguard import parse_address, refusal
from bridge.wire.websub import request_target
from gateway.websub.client import Origin

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Target:
    origin: Origin
    target: str  # path and query for the request line


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused(f"the callback host {host} does not resolve") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CallbackGuard:
    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    async def target(self, url: str) -> Target:
        """The checked origin and request target of ``url``; raises CallbackRefused."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CallbackRefused("the callback is not a valid URL") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused("the callback must be an http or https URL with a host")
        host = parts.hostname
        port = port or (443 if parts.scheme == "https" else 80)
        literal = parse_address(host)
        addresses = [str(literal)] if literal is not None else await self.resolver(host, port)
        if not addresses:
            raise CallbackRefused(f"the callback host {host} does not resolve")
        if not self.allow_private:
            for text in addresses:
                address = parse_address(text)
                reason = "not an IP address" if address is None else refusal(address)
                if reason is not None:
                    raise CallbackRefused(
                        f"the callback host {host} resolves to a {reason} address; "
                        "only public addresses may receive webhooks"
                    )
        origin = Origin(addresses[0], port, parts.scheme == "https", host)
        return Target(origin, request_target(url))

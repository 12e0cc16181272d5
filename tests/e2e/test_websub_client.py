"""The SSRF guard's resolution step with an injected resolver, and the callback client
on real loopback sockets: the checked address is what it connects to, the Host header and
TLS server name stay the callback's, keep-alive reuse, no redirects, timeouts."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.errors import CallbackError, CallbackRefused
from gateway.websub.client import CallbackClient, Origin
from gateway.websub.guard import CallbackGuard


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_a_public_name_connects_to_the_address_that_was_checked() -> None:
    guard = CallbackGuard(
        allow_private=False, resolver=resolver({"hooks.example": ["93.184.216.34"]})
    )
    target = await guard.target("https://hooks.example/cb?x=1")
    assert target.origin.address == "93.184.216.34"
    assert target.origin.host == "hooks.example" and target.origin.tls and target.origin.port == 443
    assert target.target == "/cb?x=1"


async def test_one_private_answer_refuses_the_whole_name() -> None:
    guard = CallbackGuard(
        allow_private=False, resolver=resolver({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    )
    with pytest.raises(CallbackRefused, match="loopback"):
        await guard.target("http://rebind.example/")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.1.1/",
        "http://[fd00::1]/",
        "http://0.0.0.0:80/",
    ],
)
async def test_literal_private_addresses_are_refused_without_a_lookup(url: str) -> None:
    lookups = resolver({})
    guard = CallbackGuard(allow_private=False, resolver=lookups)
    with pytest.raises(CallbackRefused):
        await guard.target(url)
    assert lookups.calls == []  # type: ignore[attr-defined]


async def test_schemes_other_than_http_are_refused() -> None:
    guard = CallbackGuard(allow_private=True, resolver=resolver({}))
    for url in ("ftp://a.example/", "file:///etc/passwd", "gopher://a.example/"):
        with pytest.raises(CallbackRefused):
            await guard.target(url)


async def test_allow_private_callbacks_lifts_the_address_check() -> None:
    guard = CallbackGuard(allow_private=True, resolver=resolver({"localhost": ["127.0.0.1"]}))
    target = await guard.target("http://localhost:9000/cb")
    assert (target.origin.address, target.origin.port, target.origin.tls) == (
        "127.0.0.1",
        9000,
        False,
    )


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    guard = CallbackGuard(allow_private=False)
    with pytest.raises(CallbackRefused, match="does not resolve"):
        await guard.target("http://no-such-host.invalid/")


# --- the client on real sockets -------------------------------------------------------------


class Recorder:
    def __init__(self, answer: bytes, *, close_after: bool = False, silent: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.silent = silent
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if self.silent:
                    await asyncio.sleep(5)
                writer.write(self.answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(recorder: Recorder, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


async def test_connects_to_the_given_address_with_the_callbacks_host_header() -> None:
    recorder = Recorder(NO_CONTENT)
    async with serving(recorder) as port, CallbackClient() as client:
        origin = Origin("127.0.0.1", port, False, "hooks.example")
        for _ in range(3):
            answer = await client.request("POST", origin, "/cb?x=1", [("X-A", "b")], b"{}")
            assert answer.status == 204
    assert recorder.connections == 1  # kept alive and reused
    head = recorder.heads[0].decode()
    assert head.startswith("POST /cb?x=1 HTTP/1.1\r\n")
    assert f"Host: hooks.example:{port}\r\n" in head and "X-A: b\r\n" in head


async def test_redirects_are_not_followed() -> None:
    elsewhere = Recorder(NO_CONTENT)
    async with serving(elsewhere) as other:
        redirect = Recorder(
            f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{other}/\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        async with serving(redirect) as port, CallbackClient() as client:
            answer = await client.request("POST", Origin("127.0.0.1", port, False, "a"), "/", [])
    assert answer.status == 302
    assert elsewhere.heads == []


async def test_a_connection_the_server_closed_is_replaced() -> None:
    recorder = Recorder(NO_CONTENT, close_after=True)
    async with serving(recorder) as port, CallbackClient() as client:
        origin = Origin("127.0.0.1", port, False, "a")
        for _ in range(3):
            assert (await client.request("POST", origin, "/", [], b"x")).status == 204
            await asyncio.sleep(0.01)  # the server's close arrives (or not) meanwhile
    assert recorder.connections == 3


async def test_timeouts_and_oversized_answers() -> None:
    silent = Recorder(NO_CONTENT, silent=True)
    async with serving(silent) as port, CallbackClient() as client:
        with pytest.raises(TimeoutError):
            await client.request(
                "POST", Origin("127.0.0.1", port, False, "a"), "/", [], timeout=0.2
            )
    huge = Recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000)
    async with serving(huge) as port, CallbackClient() as client:
        with pytest.raises(CallbackError, match="too large"):
            await client.request("GET", Origin("127.0.0.1", port, False, "a"), "/", [])
    garbage = Recorder(b"SSH-2.0-OpenSSH\r\n\r\n")
    async with serving(garbage) as port, CallbackClient() as client:
        with pytest.raises(CallbackError):
            await client.request("GET", Origin("127.0.0.1", port, False, "a"), "/", [])
    async with CallbackClient() as client:
        with pytest.raises(CallbackError, match="cannot connect"):
            await client.request("GET", Origin("127.0.0.1", 1, False, "a"), "/", [])


def certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_uses_the_callback_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path, "hooks.example")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    client_tls = ssl.create_default_context(cafile=str(cert))
    recorder = Recorder(NO_CONTENT)
    async with serving(recorder, server_tls) as port, CallbackClient(tls=client_tls) as client:
        ok = await client.request("POST", Origin("127.0.0.1", port, True, "hooks.example"), "/", [])
        assert ok.status == 204
        with pytest.raises(CallbackError):  # the certificate is not for this name
            await client.request("POST", Origin("127.0.0.1", port, True, "other.example"), "/", [])
    assert names[0] == "hooks.example"

"""The WHIP endpoint on its own (no engine, no NATS): admission under concurrent slow clients,
nothing created for a bad offer, ICE and media deadlines, malformed requests, timeouts and a
connection cap against raw sockets, HTTPS. Real servers on 127.0.0.1, random ports."""

from __future__ import annotations

import asyncio
import datetime
import hmac
import ipaddress
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from stream.config import HttpConfig, WhipConfig
from stream.service.http_server import ConnectionMetrics, HttpServer
from stream.service.listener import client_of
from stream.sources.whip import WhipSource
from stream.sources.whip_server import PublishCheck, WhipServer

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}


class Streams:
    """The runner's side of the server: hands out sources and remembers every id it saw."""

    def __init__(self, closed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.closed = closed
        self.asked: list[str] = []
        self.sources: dict[str, WhipSource] = {}

    def may_publish(self, stream_id: str) -> bool:
        self.asked.append(stream_id)
        return stream_id not in self.closed

    def source(self, stream_id: str) -> WhipSource | None:
        if not self.may_publish(stream_id):
            return None
        return self.sources.setdefault(stream_id, WhipSource(stream_id))


_HTTP_KEYS = (
    "request_timeout_s",
    "max_connections",
    "max_connections_per_client",
    "tls_cert",
    "tls_key",
)


@dataclass
class Served:
    """The WHIP routes on their HTTP server, as the tests look at them."""

    whip: WhipServer
    http: HttpServer

    @property
    def url(self) -> str:
        return f"{self.http.url}/whip"

    @property
    def sessions(self) -> int:
        return self.whip.sessions

    @property
    def connections(self) -> int:
        return self.http.connections

    def token_matches(self, authorization: str) -> bool:
        return self.whip.token_matches(authorization)


@asynccontextmanager
async def serving(
    streams: Streams | None = None, may_publish: PublishCheck | None = None, **settings: Any
) -> AsyncIterator[Served]:
    http = {key: settings.pop(key) for key in _HTTP_KEYS if key in settings}
    whip = {"enabled": True, "token": TOKEN, "ice_addresses": ["127.0.0.1"], **settings}
    http_config = HttpConfig.model_validate({"listen": "127.0.0.1:0", **http})
    streams = streams or Streams()
    server = WhipServer(
        WhipConfig.model_validate(whip),
        streams.source,
        may_publish,
        body_timeout_s=http_config.request_timeout_s,
    )
    served = Served(server, HttpServer(http_config))
    server.mount(served.http.app)
    await served.http.start()
    try:
        yield served
    finally:
        await server.close()
        await served.http.close()


def port_of(server: Served) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


async def video_offer() -> str:
    """A real aiortc offer; its peer is closed at once, so ICE never completes."""
    peer = RTCPeerConnection()
    peer.addTransceiver("video", direction="sendonly")
    await peer.setLocalDescription(await peer.createOffer())
    sdp = peer.localDescription.sdp
    await peer.close()
    return sdp


async def raw_request(
    port: int,
    head: bytes,
    body: bytes = b"",
    *,
    pause_s: float = 0.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str]]:
    """Send ``head`` and half the body, wait ``pause_s`` (a slow client), send the rest;
    returns the status and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context)
    try:
        half = len(body) // 2
        writer.write(head + body[:half])
        await writer.drain()
        await asyncio.sleep(pause_s)
        try:
            writer.write(body[half:])
            await writer.drain()
        except ConnectionError:
            pass  # answered before the body was read; the answer is still readable
        async with asyncio.timeout(30):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers
    finally:
        writer.close()
        await _closed(writer)


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


def post_head(path: str, body: bytes, headers: dict[str, str] = AUTH, extra: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode() + extra + b"\r\n"


# ---- stream ids (issue 13) ----


async def test_a_newline_in_the_stream_id_is_refused_and_never_reaches_the_runner() -> None:
    streams = Streams()
    offer = (await video_offer()).encode()
    async with serving(streams) as server:
        for path in ("/whip/cam%0A", "/whip/cam%0a", "/whip/%0Acam", "/whip/cam%0D%0A"):
            status, _ = await raw_request(port_of(server), post_head(path, offer), offer)
            assert status in (400, 404), path
    assert streams.asked == [] and streams.sources == {}


# ---- admission ----


async def test_slow_offers_to_one_stream_admit_exactly_one_publisher() -> None:
    offer = (await video_offer()).encode()
    async with serving(max_sessions=16) as server:
        head = post_head("/whip/cam", offer)
        answers = await asyncio.gather(
            *(raw_request(port_of(server), head, offer, pause_s=0.5) for _ in range(10))
        )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] + [409] * 9


async def test_slow_offers_to_many_streams_admit_exactly_max_sessions() -> None:
    offer = (await video_offer()).encode()
    async with serving(max_sessions=8) as server:
        answers = await asyncio.gather(
            *(
                raw_request(port_of(server), post_head(f"/whip/cam{i}", offer), offer, pause_s=0.5)
                for i in range(30)
            )
        )
    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 8 and statuses.count(503) == 22
    assert all(h["retry-after"].isdigit() for s, h in answers if s == 503)


async def test_bad_offers_create_no_source_and_leave_no_thread_behind() -> None:
    streams = Streams()
    bad_bodies = [b"v=0\r\n", b"not sdp", b"", b"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 3]
    async with serving(streams) as server, aiohttp.ClientSession() as http:
        threads = threading.active_count()
        semaphore = asyncio.Semaphore(16)

        async def post(i: int) -> int:
            async with semaphore:
                body = bad_bodies[i % len(bad_bodies)]
                async with http.post(f"{server.url}/cam{i}", data=body, headers=AUTH) as r:
                    return r.status

        statuses = await asyncio.gather(*(post(i) for i in range(500)))
        assert set(statuses) == {400}
        assert threading.active_count() <= threads
    assert streams.sources == {}


async def test_a_stream_closed_to_whip_is_403_and_gets_no_source() -> None:
    streams = Streams(closed={"lobby"})
    offer = (await video_offer()).encode()
    async with serving(streams) as server, aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/lobby", data=offer, headers=AUTH) as response:
            assert response.status == 403
            assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert streams.sources == {}


async def test_with_a_publish_check_a_closed_stream_is_403_before_the_body_is_read() -> None:
    streams = Streams(closed={"lobby"})
    async with serving(streams, may_publish=streams.may_publish) as server:
        head = post_head("/whip/lobby", b"x" * 1000)  # the body never comes
        async with asyncio.timeout(2):
            status, headers = await raw_request(port_of(server), head)
        assert status == 403 and headers["access-control-allow-origin"] == "*"
        assert streams.asked == ["lobby"] and streams.sources == {}


# ---- deadlines ----


async def test_an_offer_body_that_never_arrives_is_408_and_frees_the_slot() -> None:
    offer = (await video_offer()).encode()
    async with serving(request_timeout_s=1) as server:
        head = post_head("/whip/cam", offer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(head + offer[:100])  # and then nothing
        async with asyncio.timeout(5):
            assert (await reader.readline()).split()[1] == b"408"
        writer.close()
        await _closed(writer)
        assert server.sessions == 0
        assert (await raw_request(port_of(server), head, offer))[0] == 201


async def test_an_offer_whose_ice_never_connects_releases_its_slot() -> None:
    streams = Streams()
    offer = (await video_offer()).encode()
    async with serving(streams, ice_timeout_s=1) as server:
        head = post_head("/whip/cam", offer)
        assert (await raw_request(port_of(server), head, offer))[0] == 201
        assert (await raw_request(port_of(server), head, offer))[0] == 409
        await asyncio.sleep(2.5)
        assert (await raw_request(port_of(server), head, offer))[0] == 201
    changes = list(streams.sources["cam"]._changes)
    assert [(c.started, c.failed) for c in changes][:2] == [(True, False), (False, True)]
    assert "ICE" in changes[1].detail


class SilentTrack(MediaStreamTrack):
    """A video track that connects and then never sends a frame."""

    kind = "video"

    async def recv(self) -> av.VideoFrame:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_connected_session_that_sends_no_media_is_reaped() -> None:
    streams = Streams()
    async with serving(streams, stall_timeout_s=0.5, idle_timeout_s=1.5) as server:
        peer = RTCPeerConnection()
        try:
            peer.addTransceiver(SilentTrack(), direction="sendonly")
            await peer.setLocalDescription(await peer.createOffer())
            async with aiohttp.ClientSession() as http:
                url = f"{server.url}/quiet"
                async with http.post(url, data=peer.localDescription.sdp, headers=AUTH) as r:
                    assert r.status == 201
                    answer = await r.text()
                await peer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                async with asyncio.timeout(20):
                    # The source is a thread's (a Condition): the loop has no event to await.
                    while len(streams.sources["quiet"]._changes) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                ended = streams.sources["quiet"]._changes[1]
                assert not ended.started and ended.failed and "no video" in ended.detail
                async with http.post(url, data=peer.localDescription.sdp, headers=AUTH) as r:
                    assert r.status == 201  # the slot was released
        finally:
            await peer.close()


# ---- malformed requests ----


@pytest.mark.parametrize(
    ("extra_header", "body"),
    [
        (b"Authorization: Bearer \xff\xfe\xfd-not-utf8\r\n", b"v=0\r\n"),
        (b"Authorization: Bearer \xc3\x28" + TOKEN.encode() + b"\r\n", b"v=0\r\n"),
        (b"Authorization: \x80\r\n", b""),
    ],
)
async def test_a_non_utf8_authorization_header_is_400(
    extra_header: bytes, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as server:
        head = post_head("/whip/cam", body, {"Content-Type": "application/sdp"}, extra_header)
        status, _ = await raw_request(port_of(server), head, body)
    assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize(
    "body", [b"v=0\r\n\xff\xfe\r\n", b"\x80" * 100, "v=0\r\no=é\r\n".encode("latin-1")]
)
async def test_a_non_utf8_body_is_400(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async with serving() as server:
        status, _ = await raw_request(port_of(server), post_head("/whip/cam", body), body)
    assert status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever its length, the given token is compared as a fixed-size digest, so neither
    the content nor the length of the real token leaks through timing."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    config = WhipConfig(enabled=True, token=TOKEN)  # type: ignore[arg-type]
    server = WhipServer(config, Streams().source)
    for given in ["", "Bearer x", f"Bearer {TOKEN}", "Bearer " + "y" * 5000]:
        assert server.token_matches(given) == (given == f"Bearer {TOKEN}")
    assert len(seen) == 4 and {len(a) for a, _ in seen} | {len(b) for _, b in seen} == {32}


@pytest.mark.parametrize("length", [1, 15])
def test_a_short_token_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="16"):
        WhipConfig(enabled=True, token="x" * length)  # type: ignore[arg-type]
    WhipConfig(enabled=True, token="x" * 16)  # type: ignore[arg-type]


async def test_cors_preflight_and_errors_carry_cors_headers() -> None:
    async with serving() as server, aiohttp.ClientSession() as http:
        async with http.options(f"{server.url}/cam") as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            assert r.headers["Accept-Post"] == "application/sdp"
        async with http.post(f"{server.url}/cam", data=b"v=0") as r:
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
            assert r.headers["WWW-Authenticate"] == "Bearer"


# ---- connections ----


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_half_open_connections_are_closed_after_the_request_timeout() -> None:
    async with serving(request_timeout_s=1) as server:
        port = port_of(server)
        partial = [b"POST /whip/cam HTT", b"POST /whip/cam HTTP/1.1\r\nHost: x\r\n", b""]
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3 * 10)]
        for i, (_, writer) in enumerate(conns):
            writer.write(partial[i % 3])
        drip_reader, drip = await asyncio.open_connection("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def drip_feed() -> None:  # one header byte every 0.2 s never completes
            for byte in b"POST /whip/cam HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
                drip.write(bytes([byte]))
                await asyncio.sleep(0.2)

        feeder = asyncio.create_task(drip_feed())
        try:
            results = await asyncio.gather(
                *(_closed_by_server(reader, 6) for reader, _ in conns),
                _closed_by_server(drip_reader, 6),
            )
            assert all(results)
            assert loop.time() - started < 6
        finally:
            feeder.cancel()
            for _, writer in [*conns, (drip_reader, drip)]:
                writer.close()
                await _closed(writer)


@asynccontextmanager
async def holding(server: Served, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections from 127.0.0.1, each half-way through a request, then one
    more, which must be closed at once; they are closed at the end, and then there is room
    again."""
    port = port_of(server)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    try:
        for _, writer in held:
            writer.write(b"POST /whip/cam HTTP/1.1\r\n")
        await asyncio.sleep(0.2)
        extra_reader, extra = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_by_server(extra_reader, 3)
        extra.close()
        await _closed(extra)
        yield [reader for reader, _ in held]
    finally:
        for _, writer in held:
            writer.close()
            await _closed(writer)
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/cam") as r:
        assert r.status == 401  # room again once they left


async def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    async with (
        serving(max_connections=5, request_timeout_s=30) as server,
        holding(server, 5) as held,
    ):
        for reader in held:  # the first five are still open
            assert not await _closed_by_server(reader, 0.1)


async def test_one_client_cannot_take_every_connection() -> None:
    # Found by a trial: 256 idle connections from one client filled max_connections and
    # locked everyone out, the health checks too. Another loopback address is another client.
    async with (
        serving(max_connections=10, max_connections_per_client=3, request_timeout_s=30) as server,
        holding(server, 3),
    ):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port_of(server), local_addr=("127.0.0.2", 0)
        )
        writer.write(b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 401")
        counts = {m.name: m.samples[0].value for m in ConnectionMetrics(server.http).collect()}
        assert counts == {
            "vidcap_http_connections": 4,
            "vidcap_http_connections_refused": 1,
            "vidcap_http_connections_expired": 0,
        }
        writer.close()
        await _closed(writer)


def test_a_client_is_its_ipv4_address_or_its_ipv6_64() -> None:
    class Peer(asyncio.BaseTransport):
        def __init__(self, peername: object) -> None:
            super().__init__()
            self.peername = peername

        def get_extra_info(self, name: str, default: object = None) -> object:
            return self.peername if name == "peername" else default

    assert client_of(Peer(("203.0.113.7", 5000))) == "203.0.113.7"
    assert client_of(Peer(("::ffff:203.0.113.7", 5000, 0, 0))) == "203.0.113.7"
    one = client_of(Peer(("2001:db8:1:2::1", 5000, 0, 0)))
    assert one == client_of(Peer(("2001:db8:1:2:ffff::9", 6000, 0, 0))) == "2001:db8:1:2::/64"
    assert one != client_of(Peer(("2001:db8:1:3::1", 5000, 0, 0)))
    assert client_of(Peer(("fe80::1%eth0", 5000, 0, 2))) == "fe80::/64"


# ---- HTTPS ----


def self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    offer = (await video_offer()).encode()
    async with serving(tls_cert=str(cert), tls_key=str(key), request_timeout_s=2) as server:
        assert server.url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/cam", data=offer, headers=AUTH, ssl=trust) as r:
                assert r.status == 201
                assert r.headers["Location"].startswith("/whip/cam/")
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                await http.post(server.url.replace("https", "http") + "/cam", data=offer)
        # a client that opens TLS and then stalls is closed too
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(b"\x16\x03\x01")  # the start of a ClientHello, never finished
        assert await _closed_by_server(reader, 6)
        writer.close()
        await _closed(writer)


def test_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_key"):
        HttpConfig(listen="127.0.0.1:0", tls_cert=str(tmp_path / "c"))  # type: ignore[arg-type]

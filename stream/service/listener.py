"""A TCP listener for an aiohttp server with the limits aiohttp lacks here: a connection cap,
a cap per client, and a deadline for the first request (slow or half-open clients are
closed), TLS per connection after the cap checks."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import weakref
from collections import Counter

from aiohttp import web

logger = logging.getLogger(__name__)


class Listener:
    """Accepts connections for an aiohttp server, which has no limits of its own here: at
    most ``max_connections`` at once and ``max_per_client`` from one client (one more is
    closed as soon as it is accepted: one client cannot take every connection and lock out
    the health checks), and a connection whose first request has not reached the
    application ``request_timeout_s`` after it was accepted (TLS handshake included) is
    closed. Later requests on a kept-alive
    connection are bounded by aiohttp's ``keepalive_timeout``, POST bodies by the handler.
    TLS is started per connection after the count, so a refused client costs no handshake.
    """

    def __init__(
        self,
        handlers: web.Server,
        *,
        max_connections: int,
        max_per_client: int,
        request_timeout_s: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        self._handlers = handlers
        self._max = max_connections
        self._max_per_client = max_per_client
        self._per_client: Counter[str] = Counter()
        self._timeout_s = request_timeout_s
        self._tls = tls
        self._open: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self.refused = 0
        """Connections closed at once because ``max_connections`` were open, or their
        client's ``max_per_client``."""
        self.expired = 0
        """Connections closed because no request arrived in time."""

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._open):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @staticmethod
    def request_arrived(request: web.BaseRequest) -> None:
        """Called for each request the application sees: its connection met the deadline."""
        protocol = request.transport.get_protocol() if request.transport else None
        if isinstance(protocol, _Connection):
            protocol.answered()

    def _accept(self) -> asyncio.Protocol:
        if len(self._open) >= self._max:
            self.refused += 1
            return _Refused()
        connection = _Connection(self, self._handlers(), self._tls)
        self._open.add(connection)
        loop = asyncio.get_running_loop()
        connection.deadline = loop.call_later(
            self._timeout_s, self._expire, weakref.ref(connection)
        )
        return connection

    def _expire(self, ref: weakref.ref[_Connection]) -> None:
        connection = ref()
        if connection is not None and connection in self._open:
            self.expired += 1
            connection.abort()

    def _admit(self, client: str) -> bool:
        if self._per_client[client] >= self._max_per_client:
            self.refused += 1
            return False
        self._per_client[client] += 1
        return True

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection.client is not None:
            self._per_client[connection.client] -= 1
            if not self._per_client[connection.client]:
                del self._per_client[connection.client]


def client_of(transport: asyncio.BaseTransport) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 /64 (one host can
    have a whole /64 to itself)."""
    peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class _Connection(asyncio.Protocol):
    """Wraps aiohttp's per-connection handler, to count it and to start TLS on it."""

    def __init__(
        self, listener: Listener, handler: asyncio.Protocol, tls: ssl.SSLContext | None
    ) -> None:
        self._listener = listener
        self._handler = handler
        self._tls = tls
        self._raw: asyncio.Transport | None = None
        self._handed_over = False  # the handler has its transport
        self._handshake: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.client: str | None = None
        """Set once admitted: the client this connection counts against."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        client = client_of(transport)
        if not self._listener._admit(client):
            transport.abort()
            return
        self.client = client
        if self._tls is None:
            self._hand_over(transport)
        else:
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(self._tls))

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self._raw is not None
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                self._raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._listener._timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            logger.debug("TLS handshake failed: %r", exc)
            self._raw.abort()
            return
        if secure is None:  # closed during the handshake
            return
        self._hand_over(secure)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        self._handed_over = True
        self._handler.connection_made(transport)

    def answered(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def abort(self) -> None:
        if self._handshake is not None:
            self._handshake.cancel()
        if self._raw is not None:
            self._raw.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.answered()
        self._listener._forget(self)
        if self._handed_over:
            self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

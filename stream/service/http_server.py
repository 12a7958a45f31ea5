"""The one HTTP server: every route vidcap serves (health, metrics, the stream API, WHIP)
on one listen address, behind one connection-limited listener."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.errors import VidcapError
from stream.config import HttpConfig
from stream.service.json_errors import api_errors_in_json
from stream.service.listener import Listener

logger = logging.getLogger(__name__)
_http_logger = logging.getLogger(f"{__name__}.aiohttp")  # aiohttp's per-connection messages

MAX_BODY_BYTES = 64 * 1024
"""The largest request body: a WHIP offer, a stream's settings."""


class HttpServer:
    def __init__(self, config: HttpConfig) -> None:
        assert config.listen is not None
        self._config = config
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[_arrived, _hardened, api_errors_in_json]
        )
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self.url = ""
        """Base URL once listening, e.g. ``http://127.0.0.1:8480``."""

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        return self._listener.open_connections if self._listener is not None else 0

    @property
    def refused(self) -> int:
        """Connections closed at once: the cap, or the client's cap, was reached."""
        return self._listener.refused if self._listener is not None else 0

    @property
    def expired(self) -> int:
        """Connections closed because no request came in time."""
        return self._listener.expired if self._listener is not None else 0

    async def start(self) -> str:
        """Listen (routes must be added before); returns the base URL."""
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            # Idle keep-alive connections, and (aiohttp >= 3.14) a first request, get this
            # long; the listener enforces the first request's deadline on any version.
            keepalive_timeout=self._config.request_timeout_s,
            logger=_http_logger,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = Listener(
            self._runner.server,
            max_connections=self._config.max_connections,
            max_per_client=self._config.max_connections_per_client,
            request_timeout_s=self._config.request_timeout_s,
            tls=self._tls_context(),
        )
        host, port = self._config.host_port
        try:
            bound = await self._listener.start(host, port)
        except OSError as exc:
            await self.close()
            raise HttpListenError(
                f"http.listen {self._config.listen}: {exc.strerror or exc} (another vidcap? "
                "set http.listen, or VIDCAP_HTTP_LISTEN, to a free port, or null for none)"
            ) from None
        scheme = "https" if self._config.tls else "http"
        self.url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}"
        return self.url

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._config.tls_cert is None or self._config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._config.tls_cert, self._config.tls_key)
        return context


class ConnectionMetrics(Collector):
    """The listener's counts, read when scraped."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "vidcap_http_connections", "HTTP connections open now", self._server.connections
        )
        yield CounterMetricFamily(
            "vidcap_http_connections_refused",
            "HTTP connections closed at once: http.max_connections, or one client's "
            "http.max_connections_per_client, were open",
            self._server.refused,
        )
        yield CounterMetricFamily(
            "vidcap_http_connections_expired",
            "HTTP connections closed because no request came within http.request_timeout_s",
            self._server.expired,
        )


class HttpListenError(VidcapError):
    """The configured address cannot be listened on; the message says which and why."""


@web.middleware
async def _arrived(request: web.Request, handler: Handler) -> web.StreamResponse:
    Listener.request_arrived(request)
    return await handler(request)


@web.middleware
async def _hardened(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Nothing vidcap answers is to be sniffed as another type, framed, or cached."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc)
        raise
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")


class _ClientErrorsAreNotOurs(logging.Filter):
    """aiohttp logs a request it could not parse (and answered 400) at ERROR with a
    traceback, and so a client that hangs up while a handler reads its body. That is the
    client's doing: one INFO line, no traceback, and not the message either (it quotes the
    bad line, which may be an Authorization header). Exceptions in our handlers (500) stay
    ERROR with their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg}: HTTP {exc.code or 400} ({type(exc).__name__})"
            record.exc_info = record.exc_text = None
        elif isinstance(exc, ConnectionResetError):  # the client hung up mid-request
            record.levelno, record.levelname = logging.INFO, "INFO"
            said = str(exc).replace("%", "%%")  # the record's args are still to be applied
            record.msg = f"the client hung up mid-request ({said}); aiohttp: {record.msg}"
            record.exc_info = record.exc_text = None
        return True


_http_logger.addFilter(_ClientErrorsAreNotOurs())

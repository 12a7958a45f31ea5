"""WHIP (RFC 9725) ingest: an HTTP(S) endpoint where WebRTC publishers push video.

    POST   /whip/<stream>            SDP offer  -> 201 Created, Location, SDP answer
    DELETE /whip/<stream>/<session>  ends that publisher's session -> 200

Every request needs ``Authorization: Bearer <token>``. Candidates are gathered before the
answer is sent (no trickle ICE: PATCH gets 405). Only video is received; offered audio is
answered ``inactive`` so nothing piles up unread.

Admission is decided before the first ``await`` of a POST (one publisher per stream,
``max_sessions``), so concurrent slow clients cannot all pass the check; the slot is held
while the body is read and the answer made, and freed on any error. The stream's source (and
so its pipeline) is asked for only once the offer has been answered: a bad offer creates
nothing. After the 201 a watchdog ends the session if ICE does not connect within
``ice_timeout_s`` or no frame arrives for ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import av
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from stream.config import WhipConfig
from stream.http_listener import Listener
from stream.ids import validate_stream_id
from stream.sources.whip import WhipSource

logger = logging.getLogger(__name__)
_http_logger = logging.getLogger(f"{__name__}.http")  # aiohttp's per-connection messages

MAX_OFFER_BYTES = 64 * 1024
RETRY_AFTER_S = 5
_DETAIL_CHARS = 200  # of a publisher's User-Agent in the `connecting` status event

SourceLookup = Callable[[str], WhipSource | None]
"""The WhipSource of a stream id, starting its pipeline the first time; None when the id may
not be published to. Asked only once an offer has been answered, just before the 201."""

PublishCheck = Callable[[str], bool]
"""Whether a stream id may be published to; creates nothing. Asked before the body is read,
so a stream closed to WHIP costs no SDP work (without it the lookup's None gives the 403)."""


@dataclass(eq=False)
class _Session:
    stream_id: str
    session_id: str
    peer: RTCPeerConnection | None = None
    source: WhipSource | None = None
    """Set once answered; until then the session is only a reserved slot."""
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    frame_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class WhipServer:
    def __init__(
        self, config: WhipConfig, sources: SourceLookup, may_publish: PublishCheck | None = None
    ) -> None:
        assert config.token is not None
        self._config = config
        self._sources = sources
        self._may_publish = may_publish
        self._expected = _digest(f"Bearer {config.token.get_secret_value()}")
        self._sessions: dict[str, _Session] = {}  # by session id, reserved slots included
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self.url = ""

    @property
    def sessions(self) -> int:
        """Slots taken: publishers, and offers being answered."""
        return len(self._sessions)

    @property
    def connections(self) -> int:
        """HTTP connections open now."""
        return self._listener.open_connections if self._listener is not None else 0

    # ---- lifecycle ----

    async def start(self) -> str:
        if self._config.ice_addresses:
            restrict_host_candidates(self._config.ice_addresses)
        self._runner = web.AppRunner(
            self._app(),
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
            request_timeout_s=self._config.request_timeout_s,
            tls=self._tls_context(),
        )
        host, port = self._config.host_port
        bound = await self._listener.start(host, port)
        scheme = "https" if self._config.tls else "http"
        self.url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}/whip"
        logger.info("WHIP ingest listening at %s/<stream>", self.url)
        return self.url

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await self._end(session, "vidcap is shutting down", failed=False)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[_cors])
        app.add_routes(
            [
                web.post("/whip/{stream}", self._publish),
                web.delete("/whip/{stream}/{session}", self._unpublish),
                web.patch("/whip/{stream}/{session}", self._no_trickle),
                web.options("/whip/{stream}", self._options),
                web.options("/whip/{stream}/{session}", self._options),
            ]
        )
        return app

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._config.tls_cert is None or self._config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._config.tls_cert, self._config.tls_key)
        return context

    # ---- handlers ----

    async def _publish(self, request: web.Request) -> web.Response:
        # Everything up to the reservation is synchronous: no await may come between the
        # admission checks and taking the slot.
        self._authorise(request)
        stream_id = self._stream_id(request)
        _check_offer_headers(request)
        if self._may_publish is not None and not self._may_publish(stream_id):
            raise _closed_to_whip(stream_id)
        session = self._reserve(stream_id)
        try:
            offer = await self._read_offer(request)
            answer = await self._answer(session, offer)
            source = self._sources(stream_id)
            if source is None:
                raise _closed_to_whip(stream_id)
        except BaseException:
            await self._end(session, "offer refused", failed=True)
            raise
        self._begin(session, source, request)
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={
                "Location": f"/whip/{stream_id}/{session.session_id}",
                "ETag": f'"{session.session_id}"',
            },
        )

    async def _unpublish(self, request: web.Request) -> web.Response:
        self._authorise(request)
        session = self._sessions.get(request.match_info["session"])
        if (
            session is None
            or session.source is None
            or session.stream_id != request.match_info["stream"]
        ):
            raise web.HTTPNotFound(text="no such WHIP session")
        await self._end(session, "the publisher ended the session", failed=False)
        return web.Response(status=200)

    async def _no_trickle(self, request: web.Request) -> web.Response:
        self._authorise(request)
        raise web.HTTPMethodNotAllowed("PATCH", ["POST", "DELETE"])

    async def _options(self, request: web.Request) -> web.Response:
        """CORS preflight (browser publishers on other origins) and WHIP's Accept-Post."""
        return web.Response(
            status=204,
            headers={
                "Accept-Post": "application/sdp",
                "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            },
        )

    # ---- admission ----

    def token_matches(self, authorization: str) -> bool:
        """Compared as SHA-256 digests: constant time in the content and the length."""
        return hmac.compare_digest(_digest(authorization), self._expected)

    def _authorise(self, request: web.Request) -> None:
        given = request.headers.get("Authorization", "")
        # aiohttp decodes header bytes as UTF-8 with surrogate escapes: a non-ASCII token
        # cannot be ours, and would not even encode.
        if not (given.isascii() and given.isprintable()):
            raise web.HTTPBadRequest(text="the Authorization header must be printable ASCII")
        if not self.token_matches(given):
            raise web.HTTPUnauthorized(
                text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @staticmethod
    def _stream_id(request: web.Request) -> str:
        try:
            return validate_stream_id(request.match_info["stream"])
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc

    def _reserve(self, stream_id: str) -> _Session:
        if any(s.stream_id == stream_id for s in self._sessions.values()):
            raise web.HTTPConflict(text=f"stream {stream_id!r} already has a publisher")
        if len(self._sessions) >= self._config.max_sessions:
            raise web.HTTPServiceUnavailable(
                text=f"{self._config.max_sessions} publishers already",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        session = _Session(stream_id, uuid.uuid4().hex)
        self._sessions[session.session_id] = session
        return session

    async def _read_offer(self, request: web.Request) -> str:
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                body = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(text="the offer did not arrive in time") from None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise web.HTTPBadRequest(text="the offer is not UTF-8 text") from None

    # ---- sessions ----

    async def _answer(self, session: _Session, offer: str) -> str:
        peer = session.peer = self._new_peer()

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                session.tracks.append(track)
                if session.source is not None:
                    self._spawn(session, self._pump(session, track))

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState == "connected":
                session.connected.set()
            elif peer.connectionState in ("failed", "closed") and not session.closed:
                await self._end(session, f"connection {peer.connectionState}", failed=True)

        try:
            await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            if "video" not in [t.kind for t in peer.getTransceivers()]:
                raise ValueError("the offer has no video")
            for transceiver in peer.getTransceivers():
                transceiver.direction = "recvonly" if transceiver.kind == "video" else "inactive"
            await peer.setLocalDescription(await peer.createAnswer())
        except Exception as exc:  # aiortc raises many kinds for many kinds of bad SDP
            raise web.HTTPBadRequest(text=f"cannot use this SDP offer: {exc}"[:500]) from None
        return peer.localDescription.sdp

    def _new_peer(self) -> RTCPeerConnection:
        servers = [
            RTCIceServer(
                urls=server.urls,
                username=server.username,
                credential=server.credential.get_secret_value() if server.credential else None,
            )
            for server in self._config.ice_servers
        ]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))

    def _begin(self, session: _Session, source: WhipSource, request: web.Request) -> None:
        """The offer was answered: the session becomes the stream's publisher."""
        session.source = source
        peer_name = request.remote or "unknown"
        agent = _printable(request.headers.get("User-Agent", "unknown client"))
        source.session_started(f"WHIP publisher {peer_name} ({agent})")
        for track in session.tracks:
            self._spawn(session, self._pump(session, track))
        self._spawn(session, self._watch(session))
        logger.info(
            "stream %s: WHIP session %s from %s", session.stream_id, session.session_id, peer_name
        )

    def _spawn(self, session: _Session, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _pump(self, session: _Session, track: MediaStreamTrack) -> None:
        """Take every decoded frame at once (aiortc's queue is unbounded) into the slot."""
        assert session.source is not None
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):  # always, on a video track
                    session.source.put_frame(frame)
                    session.frame_arrived.set()
        except MediaStreamError:
            await self._end(session, "the publisher's video track ended", failed=False)

    async def _watch(self, session: _Session) -> None:
        """End a session whose ICE never connects, or that stops sending video."""
        ice_s, idle_s = self._config.ice_timeout_s, self._config.idle_timeout_s
        try:
            async with asyncio.timeout(ice_s):
                await session.connected.wait()
        except TimeoutError:
            await self._end(session, f"ICE did not connect within {ice_s:g} s", failed=True)
            return
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    await session.frame_arrived.wait()
            except TimeoutError:
                await self._end(session, f"no video for {idle_s:g} s", failed=True)
                return
            session.frame_arrived.clear()

    async def _end(self, session: _Session, reason: str, *, failed: bool) -> None:
        """Idempotent. A session not yet answered only frees its slot: nothing was
        reported for it, so nothing is reported now."""
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.session_id, None)
        if session.source is not None:
            session.source.session_ended(reason, failed=failed)
            level = logging.WARNING if failed else logging.INFO
            logger.log(level, "stream %s: WHIP session ended: %s", session.stream_id, reason)
        current = asyncio.current_task()
        others = [task for task in session.tasks if task is not current]
        for task in others:
            task.cancel()
        if session.peer is not None:
            await session.peer.close()
        await asyncio.gather(*others, return_exceptions=True)


def _check_offer_headers(request: web.Request) -> None:
    if request.content_type != "application/sdp":
        raise web.HTTPUnsupportedMediaType(text="the offer must be application/sdp")
    length = request.content_length
    if length is not None and length > MAX_OFFER_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_OFFER_BYTES, length)


def _closed_to_whip(stream_id: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"stream {stream_id!r} is not open to WHIP publishers")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _printable(text: str) -> str:
    """Client-chosen text for a status event: printable ASCII, bounded."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:_DETAIL_CHARS])


class _ClientErrorsAreNotOurs(logging.Filter):
    """aiohttp logs a request it could not parse (and answered 400) at ERROR with a
    traceback. That is the client's error: one INFO line, no traceback, and not the message
    either (it quotes the bad line, which may be an Authorization header). Exceptions in our
    handlers (500) stay ERROR with their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg}: HTTP {exc.code or 400} ({type(exc).__name__})"
            record.exc_info = record.exc_text = None
        return True


_http_logger.addFilter(_ClientErrorsAreNotOurs())


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let browser pages on any origin publish: the bearer token, not the origin, is what
    authorises, and no cookies are involved."""
    Listener.request_arrived(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "Location, ETag"
    if isinstance(response, web.HTTPException):
        raise response
    return response


def restrict_host_candidates(addresses: list[str]) -> None:
    """Offer only these local addresses as ICE host candidates.

    aioice has no option for it: it asks ``aioice.ice.get_host_addresses`` for every
    interface address (leaving out 127.0.0.1). This process has one WHIP server, so
    replacing that function process-wide is the narrowest place to choose.
    """
    allowed = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
        a for a in allowed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)
    ]

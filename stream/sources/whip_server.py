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
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import av
from aiohttp import web
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
from stream.ids import validate_stream_id
from stream.service.bearer import BearerToken
from stream.service.http_server import MAX_BODY_BYTES
from stream.sources.whip import WhipSource

logger = logging.getLogger(__name__)

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
    """The WHIP routes and their sessions; mounted at ``/whip`` on the HTTP server."""

    def __init__(
        self,
        config: WhipConfig,
        sources: SourceLookup,
        may_publish: PublishCheck | None = None,
        *,
        body_timeout_s: float = 10.0,
    ) -> None:
        assert config.token is not None
        self._config = config
        self._sources = sources
        self._may_publish = may_publish
        self._body_timeout_s = body_timeout_s
        self._token = BearerToken(config.token.get_secret_value())
        self._sessions: dict[str, _Session] = {}  # by session id, reserved slots included
        if config.ice_addresses:
            restrict_host_candidates(config.ice_addresses)

    @property
    def sessions(self) -> int:
        """Slots taken: publishers, and offers being answered."""
        return len(self._sessions)

    def mount(self, app: web.Application) -> None:
        """Serve under ``/whip`` of ``app``, with CORS for browser publishers there only."""
        whip = web.Application(middlewares=[_cors])
        whip.add_routes(
            [
                web.post("/{stream}", self._publish),
                web.delete("/{stream}/{session}", self._unpublish),
                web.patch("/{stream}/{session}", self._no_trickle),
                web.options("/{stream}", self._options),
                web.options("/{stream}/{session}", self._options),
            ]
        )
        app.add_subapp("/whip/", whip)

    async def close(self) -> None:
        """End every session (their streams report it); the HTTP server closes on its own."""
        for session in list(self._sessions.values()):
            await self._end(session, "vidcap is shutting down", failed=False)

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
        return self._token.matches(authorization)

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
            async with asyncio.timeout(self._body_timeout_s):
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
    if length is not None and length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, length)


def _closed_to_whip(stream_id: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=f"stream {stream_id!r} is not open to WHIP publishers")


def _printable(text: str) -> str:
    """Client-chosen text for a status event: printable ASCII, bounded."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text[:_DETAIL_CHARS])


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let browser pages on any origin publish: the bearer token, not the origin, is what
    authorises, and no cookies are involved."""
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

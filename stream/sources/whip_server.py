"""WHIP (RFC 9725) ingest: an HTTP endpoint where WebRTC publishers push video.

    POST   /whip/<stream>            SDP offer  -> 201 Created, Location, SDP answer
    DELETE /whip/<stream>/<session>  ends that publisher's session -> 200

Every request needs ``Authorization: Bearer <token>``. Candidates are gathered before the
answer is sent (no trickle ICE: PATCH gets 405). Only video is received; offered audio is
answered ``inactive`` so nothing piles up unread.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aioice.ice
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
from stream.sources.whip import WhipSource

logger = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
RETRY_AFTER_S = 5

# Asks for the WhipSource of a stream id, creating its pipeline the first time; None when
# the id may not be published to.
SourceLookup = Callable[[str], WhipSource | None]


@dataclass
class _Session:
    stream_id: str
    session_id: str
    peer: RTCPeerConnection
    source: WhipSource
    pumps: set[asyncio.Task[None]] = field(default_factory=set)
    closed: bool = False


class WhipServer:
    def __init__(self, config: WhipConfig, sources: SourceLookup) -> None:
        self._config = config
        self._sources = sources
        self._sessions: dict[str, _Session] = {}  # by session id
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle ----

    async def start(self) -> str:
        if self._config.ice_addresses:
            restrict_host_candidates(self._config.ice_addresses)
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
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self._config.host_port
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}/whip"
        logger.info("WHIP ingest listening at %s/<stream>", self.url)
        return self.url

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await self._end(session, "vidcap is shutting down", failed=False)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ---- handlers ----

    async def _publish(self, request: web.Request) -> web.Response:
        self._authorise(request)
        stream_id = self._stream_id(request)
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="the offer must be application/sdp")
        if any(s.stream_id == stream_id for s in self._sessions.values()):
            raise web.HTTPConflict(text=f"stream {stream_id!r} already has a publisher")
        if len(self._sessions) >= self._config.max_sessions:
            raise web.HTTPServiceUnavailable(
                text=f"{self._config.max_sessions} publishers already",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        source = self._sources(stream_id)
        if source is None:
            raise web.HTTPForbidden(text=f"stream {stream_id!r} is not open to WHIP publishers")
        offer = await request.text()
        session = _Session(stream_id, uuid.uuid4().hex, self._new_peer(), source)
        self._sessions[session.session_id] = session
        try:
            answer = await self._answer(session, offer)
        except Exception as exc:
            await self._end(session, f"bad offer: {exc}", failed=True, started=False)
            raise web.HTTPBadRequest(text=f"cannot use this SDP offer: {exc}") from exc
        peer_name = request.remote or "unknown"
        agent = request.headers.get("User-Agent", "unknown client")
        source.session_started(f"WHIP publisher {peer_name} ({agent[:200]})")
        location = f"/whip/{stream_id}/{session.session_id}"
        logger.info("stream %s: WHIP session %s from %s", stream_id, session.session_id, peer_name)
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": location, "ETag": f'"{session.session_id}"'},
        )

    async def _unpublish(self, request: web.Request) -> web.Response:
        self._authorise(request)
        session = self._sessions.get(request.match_info["session"])
        if session is None or session.stream_id != request.match_info["stream"]:
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

    # ---- helpers ----

    def _authorise(self, request: web.Request) -> None:
        assert self._config.token is not None
        expected = f"Bearer {self._config.token.get_secret_value()}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(
                text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @staticmethod
    def _stream_id(request: web.Request) -> str:
        try:
            return validate_stream_id(request.match_info["stream"])
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc

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

    async def _answer(self, session: _Session, offer: str) -> str:
        peer = session.peer

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                task = asyncio.create_task(self._pump(session, track))
                session.pumps.add(task)

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("failed", "closed") and not session.closed:
                await self._end(session, f"connection {peer.connectionState}", failed=True)

        await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        kinds = [t.kind for t in peer.getTransceivers()]
        if "video" not in kinds:
            raise ValueError("the offer has no video")
        for transceiver in peer.getTransceivers():
            transceiver.direction = "recvonly" if transceiver.kind == "video" else "inactive"
        await peer.setLocalDescription(await peer.createAnswer())
        return peer.localDescription.sdp

    async def _pump(self, session: _Session, track: MediaStreamTrack) -> None:
        """Take every decoded frame at once (aiortc's queue is unbounded) into the slot."""
        try:
            while True:
                session.source.put_frame(await track.recv())
        except MediaStreamError:
            if not session.closed:
                await self._end(session, "the publisher's video track ended", failed=False)

    async def _end(
        self, session: _Session, reason: str, *, failed: bool, started: bool = True
    ) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.session_id, None)
        if started:
            session.source.session_ended(reason, failed=failed)
        level = logging.WARNING if failed else logging.INFO
        logger.log(level, "stream %s: WHIP session ended: %s", session.stream_id, reason)
        current = asyncio.current_task()
        for pump in session.pumps:
            if pump is not current:
                pump.cancel()
        await session.peer.close()


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

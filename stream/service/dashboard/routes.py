"""The dashboard's routes: the page and its assets, the pushed feed, stored history, snapshots.

All are reads, open like ``GET /api/streams`` (the server listens on 127.0.0.1 by default);
the page's pause, resume, add and remove buttons call the stream API with the token the user
types. Model text is untrusted: the page sets it as text only, and its Content-Security-Policy
runs no script but its own file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, Final

import nats.errors
import orjson
from aiohttp import web
from nats.aio.client import Client
from nats.js import JetStreamContext

from stream.config import NatsConfig
from stream.delivery.snapshots import snapshot_bucket
from stream.ids import validate_stream_id
from stream.service.dashboard.feed import KINDS, EventFeed, FeedClient
from stream.service.dashboard.history import MAX_LIMIT, page_back
from stream.service.dashboard.nodes import watch_nodes
from stream.service.dashboard.pictures import (
    NAME_ROUTE,
    PictureMissing,
    Pictures,
    PictureUnavailable,
)
from stream.service.json_errors import json_error

MAX_FEED_CLIENTS: Final = 32
HEARTBEAT_S: Final = 15.0
"""An SSE comment this often keeps proxies from closing a quiet feed."""
WRITE_TIMEOUT_S: Final = 10.0
"""A browser that takes longer to accept one write is dropped."""
HISTORY_TIMEOUT_S: Final = 10.0
DEFAULT_LIMIT: Final = 50
CONNECT_POLL_S: Final = 0.2

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_ASSETS: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_FEED_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    # Set here: the hardening middleware runs after the handler, when these are sent.
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_SNAPSHOT_CACHE: Final = "private, max-age=86400, immutable"
"""A snapshot never changes under its name: the browser may keep it."""

NatsClient = Callable[[], Client | None]
"""vidcap's NATS connection once it is made (None before)."""


class Dashboard:
    def __init__(
        self, config: NatsConfig, nats: NatsClient, max_clients: int = MAX_FEED_CLIENTS
    ) -> None:
        self._config = config
        self._nats = nats
        self.feed = EventFeed(config.subject_prefix, max_clients)
        self._pictures = Pictures(snapshot_bucket(config.stream_name))
        self._assets = {name: _asset(name) for name in _ASSETS}

    def mount(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/static/{name}", self._static),
                web.get("/api/feed", self._feed),
                web.get("/api/streams/{id}/events", self._history),
                web.get(f"/api/snapshots/{NAME_ROUTE}", self._snapshot),
            ]
        )
        app.cleanup_ctx.append(self._following)
        app.on_shutdown.append(self._closing)

    async def _following(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._follow(), name="vidcap-dashboard-feed")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _follow(self) -> None:
        """Subscribe once vidcap's connection is made (the server starts before it; the
        runner sets its client without an event to wait on, so this looks a few times a s)."""
        while (client := self._nats()) is None:  # noqa: ASYNC110
            await asyncio.sleep(CONNECT_POLL_S)
        try:
            await self.feed.follow(client)
            if self._config.jetstream:  # presence lives in JetStream
                await watch_nodes(client.jetstream(), self._config.stream_name, self.feed.push_node)
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            return  # vidcap is stopping: its connection went before the dashboard followed it

    async def _closing(self, app: web.Application) -> None:
        self.feed.close()

    async def _page(self, request: web.Request) -> web.Response:
        response = self._asset_response("index.html")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _ASSETS or name == "index.html":
            raise json_error(web.HTTPNotFound, "no such file")
        return self._asset_response(name)

    def _asset_response(self, name: str) -> web.Response:
        return web.Response(body=self._assets[name], content_type=_ASSETS[name], charset="utf-8")

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        client = self.feed.join()
        if client is None:
            raise json_error(
                web.HTTPServiceUnavailable,
                "too many dashboards are open already",
                {"Retry-After": "30"},
            )
        try:
            response = web.StreamResponse(headers=_FEED_HEADERS)
            await response.prepare(request)
            await _pump(client, response)
            return response
        finally:
            self.feed.leave(client)

    async def _history(self, request: web.Request) -> web.Response:
        stream = _stream_id(request.match_info["id"])
        kind, before, limit = _history_params(request.rel_url.query)
        js = self._jetstream()
        subject = f"{self._config.subject_prefix}.{stream}.{kind or '*'}"
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_S):
                page = await page_back(js, self._config.stream_name, subject, before, limit)
        except (nats.errors.Error, TimeoutError) as exc:
            raise json_error(
                web.HTTPServiceUnavailable, f"JetStream did not answer: {exc!r}"
            ) from None
        events = [{"js_seq": stored.js_seq, "event": stored.event} for stored in page.events]
        return _json({"stream": stream, "events": events, "before": page.before})

    async def _snapshot(self, request: web.Request) -> web.Response:
        info = request.match_info
        name = f"{info['stream']}/{info['session']}/{info['number']}"
        try:
            jpeg = await self._pictures.read(self._jetstream(), name)
        except PictureMissing:
            raise json_error(web.HTTPNotFound, "no such snapshot") from None
        except PictureUnavailable as exc:
            raise json_error(web.HTTPServiceUnavailable, str(exc)) from None
        return web.Response(
            body=jpeg, content_type="image/jpeg", headers={"Cache-Control": _SNAPSHOT_CACHE}
        )

    def _jetstream(self) -> JetStreamContext:
        if not self._config.jetstream:
            raise json_error(web.HTTPNotFound, "nothing is stored: nats.jetstream is false")
        client = self._nats()
        if client is None or not client.is_connected:
            raise json_error(
                web.HTTPServiceUnavailable, "NATS is not connected", {"Retry-After": "5"}
            )
        return client.jetstream()


async def _pump(client: FeedClient, response: web.StreamResponse) -> None:
    """Write the browser's events as they come, a comment when none came for a while, until
    its feed ends or it stops reading."""
    await response.write(b"retry: 3000\n\n")
    while client.ended is None:
        chunk = await client.take(HEARTBEAT_S) or b": heartbeat\n\n"
        if client.ended is not None:
            break
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write(chunk)
        except (TimeoutError, ConnectionError):
            client.end("slow")


def _history_params(query: Any) -> tuple[str | None, int | None, int]:
    unknown = sorted(set(query) - {"kind", "before", "limit"})
    if unknown:
        raise json_error(web.HTTPBadRequest, f"unknown parameter {unknown[0][:40]!r}")
    repeated = sorted(name for name in query if len(query.getall(name)) > 1)
    if repeated:
        raise json_error(web.HTTPBadRequest, f"{repeated[0]} given more than once")
    kind = query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise json_error(web.HTTPBadRequest, f"kind is one of {', '.join(sorted(KINDS))}")
    before = _integer(query, "before", None, 1, 2**63)
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert limit is not None
    return kind, before, limit


def _integer(query: Any, name: str, default: int | None, least: int, most: int) -> int | None:
    text = query.get(name)
    if text is None:
        return default
    # ASCII digits only: str.isdigit() also takes "²" (int() refuses it) and "٥" (int() reads 5).
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not least <= int(text) <= most:
        raise json_error(web.HTTPBadRequest, f"{name} must be an integer from {least} to {most}")
    return int(text)


def _stream_id(text: str) -> str:
    try:
        return validate_stream_id(text)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from None


def _asset(name: str) -> bytes:
    return (resources.files("stream.service.dashboard") / "static" / name).read_bytes()


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")

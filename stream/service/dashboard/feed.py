"""`GET /api/feed`'s source: every event vidcap's NATS connection sees, pushed to browsers.

One core subscription on ``<prefix>.>`` (so it works with JetStream or core NATS, and shows
the streams of every vidcap publishing under the prefix) is fanned out to the connected
browsers. Each event is checked and encoded once, as a server-sent event; each browser has a
bounded buffer of them. A browser that falls ``CLIENT_BUFFER_BYTES`` behind is dropped (it
reconnects and gets the board again): a slow browser never holds up the others, nor the
subscription, nor vidcap's connection."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Final

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from stream.ids import validate_stream_id
from stream.service.dashboard.board import Board

logger = logging.getLogger(__name__)

KINDS: Final = frozenset({"caption", "status", "logo"})
MAX_EVENT_BYTES: Final = 256 * 1024
"""Larger messages are not vidcap events (captions are a few kB); they are not pushed."""
CLIENT_BUFFER_BYTES: Final = 1024 * 1024
"""Encoded events waiting for one browser; more and it is dropped as too slow."""
SUBSCRIPTION_PENDING: Final = 10_000
"""Messages nats-py buffers for the subscription; beyond, it drops them and says so."""


class FeedClient:
    """One browser's buffer of encoded events, filled by the feed, emptied by its response."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._pending: deque[bytes] = deque(chunks)
        self._bytes = sum(map(len, chunks))
        self._wake = asyncio.Event()
        self._wake.set()
        self.ended: str | None = None
        """Why the feed ended for this browser (None while it runs)."""

    def offer(self, chunk: bytes) -> None:
        if self.ended is not None:
            return
        if self._bytes + len(chunk) > CLIENT_BUFFER_BYTES:
            self.end("slow")
            return
        self._pending.append(chunk)
        self._bytes += len(chunk)
        self._wake.set()

    def end(self, why: str) -> None:
        self.ended = why
        self._pending.clear()
        self._bytes = 0
        self._wake.set()

    async def take(self, wait_s: float) -> bytes:
        """What is waiting, after at most ``wait_s`` (empty: nothing came)."""
        try:
            async with asyncio.timeout(wait_s):
                await self._wake.wait()
        except TimeoutError:
            return b""
        self._wake.clear()
        taken = b"".join(self._pending)
        self._pending.clear()
        self._bytes = 0
        return taken


class EventFeed:
    def __init__(self, prefix: str, max_clients: int) -> None:
        self._prefix = f"{prefix}."
        self._max_clients = max_clients
        self._clients: set[FeedClient] = set()
        self._board = Board()
        self._subscription: Subscription | None = None
        self.events = 0
        """Events pushed since the start."""
        self.dropped_clients = 0
        """Browsers dropped for falling behind."""

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def following(self) -> bool:
        """Subscribed: events are pushed from now on."""
        return self._subscription is not None

    async def follow(self, client: Client) -> None:
        self._subscription = await client.subscribe(
            f"{self._prefix}>",
            cb=self._received,
            pending_msgs_limit=SUBSCRIPTION_PENDING,
            pending_bytes_limit=SUBSCRIPTION_PENDING * 4096,
        )

    def join(self) -> FeedClient | None:
        """A new browser's buffer, starting with the board; None when ``max_clients`` are on."""
        if len(self._clients) >= self._max_clients:
            return None
        client = FeedClient(self._board.replay())
        self._clients.add(client)
        return client

    def leave(self, client: FeedClient) -> None:
        self._clients.discard(client)
        if client.ended == "slow":
            self.dropped_clients += 1
            logger.info("dashboard feed: a browser fell behind and was dropped")

    def close(self) -> None:
        """End every browser's feed (vidcap is stopping)."""
        for client in self._clients:
            client.end("closing")

    async def _received(self, message: Msg) -> None:
        self.push(message.subject, message.data)

    def push(self, subject: str, data: bytes) -> None:
        """Encode one message from NATS and offer it to every browser (never waits)."""
        where = _stream_and_kind(subject, self._prefix)
        event = _event(data)
        if where is None or event is None:
            return
        stream, kind = where
        chunk = encode(stream, kind, event)
        self._board.note(stream, kind, event, chunk)
        self._offer(chunk)

    def push_node(self, key: str, node: dict[str, Any] | None) -> None:
        """A vidcap's presence entry (None: it went away) to every browser."""
        wrapped = {"key": key, "node": node, "received_at": round(time.time(), 3)}
        chunk = b"event: node\ndata: " + orjson.dumps(wrapped) + b"\n\n"
        self._board.note_node(key, None if node is None else chunk)
        self._offer(chunk)

    def _offer(self, chunk: bytes) -> None:
        self.events += 1
        for client in list(self._clients):
            client.offer(chunk)


def encode(stream: str, kind: str, event: dict[str, Any]) -> bytes:
    """One server-sent event. The JSON is written again, never passed through: it is then one
    line (a newline would end the SSE field) and valid whatever was published."""
    wrapped = {"stream": stream, "kind": kind, "received_at": round(time.time(), 3), "event": event}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(wrapped) + b"\n\n"


def _stream_and_kind(subject: str, prefix: str) -> tuple[str, str] | None:
    if not subject.startswith(prefix):
        return None
    stream, _, kind = subject[len(prefix) :].partition(".")
    if kind not in KINDS:
        return None
    try:
        return validate_stream_id(stream), kind
    except ValueError:
        return None


def _event(data: bytes) -> dict[str, Any] | None:
    if len(data) > MAX_EVENT_BYTES:
        return None
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None

"""Batches from a JetStream pull consumer, collected by a subscription callback.

nats-py's ``fetch`` waits for every message with a ``wait_for`` of its own (two tasks per
message): at a thousand messages a batch that cost the indexer as much as writing them. Here
one inbox subscription collects what a pull request (``CONSUMER.MSG.NEXT``) delivers, as
nats-py hands it over, and the next request goes out as soon as one is complete, so a batch is
on its way while the previous one is written. At most two complete batches wait (with one more
requested): the consumer's ``max_ack_pending`` must leave room for three.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

ANSWER_S: Final = 5.0
"""How long past a request's expiry its end (a full batch or a 408) may take before the
consumer counts as unreachable (NATS restarted, the request was lost)."""
READY_BATCHES: Final = 2


class PullInterrupted(Exception):
    """JetStream ended a pull request early (409: the consumer was deleted, a leader changed);
    the message is its status and description."""


class PullBatches:
    """``batch``-sized lists of messages from the durable pull consumer of ``subject``
    (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``); a shorter list (empty when nothing
    was new) when a request expired after ``wait_s``."""

    def __init__(self, client: Client, subject: str, batch: int, wait_s: float) -> None:
        self._client = client
        self._subject = subject
        self._batch = batch
        self._wait_s = wait_s
        self._ready: asyncio.Queue[list[Msg] | PullInterrupted] = asyncio.Queue()
        self._collected: list[Msg] = []
        self._in_flight = False
        self._inbox = client.new_inbox()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._client.subscribe(self._inbox, cb=self._on_message)
        await self._request()

    async def next(self) -> list[Msg]:
        """The next batch; nats.errors.TimeoutError when no answer came in time."""
        try:
            item = await asyncio.wait_for(self._ready.get(), self._wait_s + ANSWER_S)
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        if not self._in_flight:
            await self._request()
        if isinstance(item, PullInterrupted):
            raise item
        return item

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()

    async def _request(self) -> None:
        self._collected = []
        self._in_flight = True
        request = {"batch": self._batch, "expires": int(self._wait_s * 1e9)}
        await self._client.publish(self._subject, orjson.dumps(request), reply=self._inbox)

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._collected.append(msg)
            if len(self._collected) < self._batch:
                return
            self._end(self._collected)
        elif status in ("404", "408"):  # no messages, or the request expired
            self._end(self._collected)
        elif status == "409":
            description = msg.headers.get("Description", "") if msg.headers else ""
            self._end(PullInterrupted(f"409 {description}".strip()))
        else:
            return  # 100: an idle heartbeat (not asked for)
        if self._ready.qsize() < READY_BATCHES:
            await self._request()

    def _end(self, item: list[Msg] | PullInterrupted) -> None:
        self._in_flight = False
        self._ready.put_nowait(item)

"""This vidcap's part in a fleet: its presence, the leases of the streams it writes, and its
fair share of them.

Every vidcap started with the same streams stands by for each and takes a free one only while
it holds fewer than its share: ``ceil(streams / live vidcaps)``. So a vidcap that joins takes
streams as the others hand over their excess (each checks every third of the TTL and yields
the streams it took last), one that stops cleanly leaves first and then releases its streams
(the others' shares grow at once), and a dead one's streams are taken once its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any, Final

from nats.js import JetStreamContext

from stream.fleet.buckets import KV_ERRORS
from stream.fleet.leases import Lease, Leases
from stream.fleet.presence import HEARTBEATS_PER_TTL, Presence

logger = logging.getLogger(__name__)

JOIN_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)  # then every 2 s, for as long as it takes


class Fleet:
    def __init__(
        self,
        js: JetStreamContext,
        stream_name: str,
        ttl_s: float,
        node: str,
        session: str,
        replicas: int = 1,
        reconnects: Callable[[], int] = lambda: 0,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._connected = connected
        """Whether NATS is there now: while it is away, a release or a leave would only wait
        for a reply that cannot come (the keys expire with their TTL instead)."""
        self.held: dict[str, Lease] = {}
        """Streams this vidcap writes now, in the order it took them."""
        self.wanted: set[str] = set()
        """Streams this vidcap writes or stands by for."""
        self.presence = Presence(js, stream_name, ttl_s, node, session, self.describe, replicas)
        self.leases = Leases(
            js,
            stream_name,
            ttl_s,
            node,
            session,
            may_take=self.may_take,
            replicas=replicas,
            reconnects=reconnects,
        )

    async def join(self) -> None:
        """Bind the buckets and announce this vidcap. Waits, saying so, while NATS does not
        answer: on a cluster a bucket just made by another vidcap starting at the same time
        has no leader for a moment (seen: "no response from stream" at the first write)."""
        for attempt in itertools.count():
            try:
                await self.leases.open()
                await self.presence.open()
                return
            except KV_ERRORS as exc:
                delay = JOIN_BACKOFF_S[min(attempt, len(JOIN_BACKOFF_S) - 1)]
                logger.warning(
                    "the fleet's buckets do not answer (%r); next try in %g s", exc, delay
                )
                await asyncio.sleep(delay)

    def describe(self) -> dict[str, Any]:
        """What presence says of this vidcap's streams."""
        return {"owned": sorted(self.held), "standby": sorted(self.wanted - set(self.held))}

    async def fair_share(self) -> int:
        return math.ceil(len(self.wanted) / await self.presence.live_count())

    async def may_take(self) -> bool:
        return len(self.held) < await self.fair_share()

    async def acquire(self, stream_id: str, stopping: asyncio.Event) -> Lease | None:
        """The stream's lease once free and within this vidcap's share; None if stopping."""
        self.wanted.add(stream_id)
        lease = await self.leases.acquire(stream_id, stopping)
        if lease is not None:
            self.held[stream_id] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        self.held.pop(lease.stream_id, None)
        if self._connected():
            await self.leases.release(lease)

    def may_send(self, stream_id: str) -> bool:
        """Whether the stream's events may go out: not while its lease is in question."""
        lease = self.held.get(stream_id)
        return lease is None or self.leases.may_write(lease)

    def forget(self, stream_id: str) -> None:
        """This vidcap no longer writes or waits for the stream."""
        self.wanted.discard(stream_id)
        self.held.pop(stream_id, None)

    async def run(self, stopping: asyncio.Event) -> None:
        """Heartbeat and balance until ``stopping``; then say this vidcap is leaving (before its
        streams are released, so the others count it gone when they take them)."""
        try:
            await self._beat_and_balance(stopping)
        finally:  # stopping, or cancelled once the streams ended
            if self._connected():
                async with asyncio.timeout(self.leases.ttl_s):
                    await self.presence.leave()

    async def _beat_and_balance(self, stopping: asyncio.Event) -> None:
        period = self.leases.ttl_s / HEARTBEATS_PER_TTL
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await stopping.wait()
            if stopping.is_set():
                break
            try:
                await self.presence.beat()
            except KV_ERRORS as exc:
                logger.warning("presence heartbeat failed (%r)", exc)
            await self._yield_excess()

    async def _yield_excess(self) -> None:
        excess = len(self.held) - await self.fair_share()
        if excess <= 0:
            return
        for lease in list(self.held.values())[-excess:]:
            if not lease.yielding.is_set():
                logger.info(
                    "stream %s: handed over (this vidcap has more than its share)", lease.stream_id
                )
                lease.yielding.set()

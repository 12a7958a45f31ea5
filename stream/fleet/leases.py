"""One writer per stream: a lease in a JetStream key-value bucket.

Each stream has a key in the bucket ``<nats.stream_name>_LEASES``, whose entries expire
``leases.ttl_s`` after their last write (the bucket's max age). The owner writes it with
revision-checked updates every third of the TTL; another vidcap with the same stream finds the
key taken and waits as a standby, trying again until the key expires (its owner died or lost
NATS) or is deleted (its owner stopped and handed over). An owner that cannot renew for most of
the TTL stops sending the stream's events (they wait in its outbox) before a standby can take
it. When NATS answers again, the owner takes the key again if it is free and nobody wrote the
stream meanwhile (a NATS outage is not a handover: nothing is lost), else it gives the stream up.

A vidcap restarted on the same machine and slot (the spool's, held by a file lock, so its
predecessor is dead) takes its predecessor's leases at once instead of waiting for them to
expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from stream.fleet.buckets import KV_ERRORS, expiring_bucket

logger = logging.getLogger(__name__)

RENEWALS_PER_TTL: Final = 3
GIVE_UP_SHARE: Final = 0.8
"""An owner that could not renew for this share of the TTL stops sending: a standby can take
the key only after the whole TTL."""
EXPIRED: Final = "taken: it expired"
NO_ANSWER: Final = "NATS did not answer"
BACK_FROM_AWAY: Final = "its owner before NATS was away, for a TTL after that"
RECONNECT_ALLOWANCE_S: Final = 3.0
# A key that is not there: expired, or deleted (a KeyDeletedError is no KeyNotFoundError).
_GONE: Final = (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError)
"""How much later than this process another may reconnect after an outage (nats-py tries
every 2 s), on top of the TTL a standby leaves the keys to their owners before it."""


def lease_bucket(stream_name: str) -> str:
    return f"{stream_name}_LEASES"


@dataclass(slots=True)
class Lease:
    """This process owns a stream while ``lost`` is not set."""

    stream_id: str
    revision: int
    renewed_at: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    why_lost: str = ""
    waited: bool = False
    """Another process held it when this one first asked (this one stood by)."""
    yielding: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to hand the stream over to another vidcap (this one has more than its share)."""
    unverified: bool = False
    """Taken again after it ran out; the stream's story is not yet known to be this one's."""


class Leases:
    """The bucket of one destination, as seen by one vidcap process (``node``)."""

    def __init__(
        self,
        js: JetStreamContext,
        stream_name: str,
        ttl_s: float,
        node: str,
        session: str,
        may_take: Callable[[], Awaitable[bool]] | None = None,
        replicas: int = 1,
        reconnects: Callable[[], int] = lambda: 0,
    ) -> None:
        self._js = js
        self._may_take = may_take
        self._replicas = replicas
        self._bucket_name = lease_bucket(stream_name)
        self._ttl_s = ttl_s
        self._node = node
        self._value = orjson.dumps(
            {"node": node, "session": session, "host": socket.gethostname(), "pid": os.getpid()}
        )
        self._kv: KeyValue | None = None
        self._reconnects = reconnects
        """The connection's reconnect count: NATS was away when it moved (a call may have
        waited the outage out instead of failing)."""
        self._seen_reconnects = reconnects()
        self._away_at = -math.inf
        """When NATS last did not answer this process: for a while after it, a key found free is
        left to the owner that held it before the outage (it takes it back first)."""

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def open(self) -> None:
        """Bind the bucket, creating it if missing (its TTL is fixed at creation)."""
        self._kv, self._ttl_s = await expiring_bucket(
            self._js, self._bucket_name, self._ttl_s, self._replicas
        )

    async def acquire(self, stream_id: str, stopping: asyncio.Event) -> Lease | None:
        """The stream's lease, once it is free; None if ``stopping`` is set first."""
        said_standby = False
        while not stopping.is_set():
            try:
                lease = await self._try_acquire(stream_id)
            except KV_ERRORS as exc:
                logger.warning("stream %s: the lease bucket does not answer (%r)", stream_id, exc)
                self._away_at = time.monotonic()
                lease = None
            if isinstance(lease, Lease):
                if said_standby:
                    logger.warning("stream %s: lease taken over; this vidcap owns it", stream_id)
                lease.waited = said_standby
                return lease
            if lease is not None and not said_standby:
                logger.warning("stream %s: standby (owned by %s)", stream_id, lease)
                said_standby = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await stopping.wait()
        return None

    def _was_away(self) -> bool:
        """Whether NATS was away from this process lately (a TTL and a bit ago or less)."""
        if (count := self._reconnects()) != self._seen_reconnects:
            self._seen_reconnects = count
            self._away_at = time.monotonic()
        return time.monotonic() - self._away_at < self._ttl_s + RECONNECT_ALLOWANCE_S

    @property
    def _poll_s(self) -> float:
        return min(1.0, self._ttl_s / 4)

    async def _try_acquire(self, stream_id: str) -> Lease | str:
        """The lease, or who holds it."""
        kv = self._bucket()
        started = time.monotonic()
        if self._was_away():
            # Everyone's keys ran out while NATS was away; their owners, alive, take them back.
            return BACK_FROM_AWAY
        if self._may_take is None or await self._may_take():
            try:
                revision = await kv.create(stream_id, self._value)
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            else:
                if not self._was_away():
                    return Lease(stream_id, revision, started)
                with contextlib.suppress(*KV_ERRORS):  # taken across an outage: give it back
                    await kv.delete(stream_id, last=revision)
                return BACK_FROM_AWAY
        try:
            entry = await kv.get(stream_id)
        except _GONE:
            return "nobody; this vidcap has its share of the streams"
        holder = orjson.loads(entry.value or b"{}")
        if holder.get("node") != self._node or entry.revision is None:
            return f"{holder.get('host')} pid {holder.get('pid')} session {holder.get('session')}"
        # Our own slot's earlier process: it is dead (we hold the slot's lock).
        revision = await kv.update(stream_id, self._value, last=entry.revision)
        return Lease(stream_id, revision, started)

    def may_write(self, lease: Lease) -> bool:
        """Whether this process surely still owns the stream: renewed within the safe share
        of the TTL (a standby can take the key only after all of it) and not in question."""
        silent = time.monotonic() - lease.renewed_at
        return not (lease.lost.is_set() or lease.unverified) and silent < self._give_up_s

    @property
    def _give_up_s(self) -> float:
        return GIVE_UP_SHARE * self._ttl_s

    async def keep(self, lease: Lease, story_is_ours: Callable[[], Awaitable[bool]]) -> None:
        """Renew until cancelled; on losing the lease set ``lease.lost`` and return. A key that
        ran out (NATS did not answer in time) is taken again if it is free and
        ``story_is_ours()`` (nobody wrote the stream meanwhile)."""
        pause = self._ttl_s / RENEWALS_PER_TTL
        said_waiting = False
        while True:
            await asyncio.sleep(pause)
            why = await self._renew(lease)
            if why == EXPIRED:
                why = await self._take_again(lease)
            if why is None and lease.unverified:
                why = await self._verify(lease, story_is_ours)
            if why is None:
                if said_waiting:
                    logger.warning(
                        "stream %s: lease renewed; its waiting events go out", lease.stream_id
                    )
                said_waiting = False
                pause = self._ttl_s / RENEWALS_PER_TTL
                continue
            silent = time.monotonic() - lease.renewed_at
            if why.startswith(NO_ANSWER):
                self._away_at = time.monotonic()
            if why.startswith("taken") and self._was_away():
                # Just after this vidcap's own outage the key may be another's create that
                # crossed it, which that vidcap gives back (_try_acquire): the events wait,
                # and the key is looked at again until the hold-off is over.
                lease.unverified = True
            elif why.startswith("taken"):
                lease.why_lost = f"{why}; not renewed for {silent:.1f} s"
                lease.lost.set()
                logger.error(
                    "stream %s: lease lost (%s); this vidcap stops writing it",
                    lease.stream_id,
                    lease.why_lost,
                )
                return
            if silent >= self._give_up_s and not said_waiting:
                said_waiting = True
                logger.warning(
                    "stream %s: lease not renewed for %.1f s (%s); its events wait until this "
                    "vidcap knows it still owns the stream",
                    lease.stream_id,
                    silent,
                    why,
                )
            elif not said_waiting:
                logger.warning("stream %s: lease renewal failed (%s)", lease.stream_id, why)
            pause = self._ttl_s / 10  # try again soon: the lease runs out

    async def _take_again(self, lease: Lease) -> str | None:
        """The key ran out: take it if it is still free (to be verified against the story)."""
        attempt = time.monotonic()
        try:
            lease.revision = await self._bucket().create(lease.stream_id, self._value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return "taken by another vidcap after it expired"
        except KV_ERRORS as exc:
            return f"{NO_ANSWER}: {exc!r}"
        lease.unverified = True
        lease.renewed_at = attempt
        return None

    async def _verify(
        self, lease: Lease, story_is_ours: Callable[[], Awaitable[bool]]
    ) -> str | None:
        try:
            ours = await story_is_ours()
        except (TimeoutError, nats.errors.Error) as exc:
            return f"{NO_ANSWER}: {exc!r}"
        if not ours:
            return "taken: another vidcap wrote the stream while it was expired"
        lease.unverified = False
        return None

    async def _renew(self, lease: Lease) -> str | None:
        """Renew once; None when renewed, else why not (``taken ...`` when it is gone)."""
        attempt = time.monotonic()
        kv = self._bucket()
        try:
            async with asyncio.timeout(self._ttl_s / RENEWALS_PER_TTL):
                try:
                    lease.revision = await kv.update(
                        lease.stream_id, self._value, last=lease.revision
                    )
                except nats.js.errors.KeyWrongLastSequenceError:
                    # Our last renewal may have landed after we stopped waiting for it.
                    entry = await kv.get(lease.stream_id)
                    if entry.value != self._value or entry.revision is None:
                        return "taken by another vidcap"
                    lease.revision = await kv.update(
                        lease.stream_id, self._value, last=entry.revision
                    )
        except _GONE:  # ran out, or given back by a create that crossed an outage
            return EXPIRED
        except KV_ERRORS as exc:
            return f"{NO_ANSWER}: {exc!r}"
        lease.renewed_at = attempt
        return None

    async def release(self, lease: Lease) -> None:
        """Hand the stream over now (a standby takes it within its poll interval)."""
        if lease.lost.is_set():
            return
        with contextlib.suppress(*KV_ERRORS):
            await self._bucket().delete(lease.stream_id, last=lease.revision)

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Leases.open() first")
        return self._kv

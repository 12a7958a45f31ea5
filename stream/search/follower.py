"""The follower: a durable JetStream pull consumer on the events stream, feeding the index.

The index, not the consumer, knows where to go on from: each batch is committed with the
stream sequence it reaches. So at start, and whenever delivery may have skipped something (a
gap in the consumer's delivery sequence, a NATS restart, the consumer deleted), the consumer
is created afresh right after the index's position. Events therefore arrive in stream order
with none missed, which the derived rows (segments, airtime) rely on; anything delivered
twice is recognised by its identity (stream, session, seq) and changes nothing. The batch's
last message is acknowledged after the commit (``AckPolicy.ALL``), so ``nats consumer info``
shows how far behind the index is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from stream.config import NatsConfig
from stream.delivery.publisher import connect
from stream.search.pulls import PullBatches, PullInterrupted
from stream.search.store import BatchResult, IndexStore, StoredMessage

logger = logging.getLogger(__name__)

DEFAULT_DURABLE: Final = "vidcap-index"
FETCH_BATCH: Final = 1000
"""Messages asked for at once; each batch is one SQLite transaction."""
FETCH_WAIT_S: Final = 1.0
"""How long a fetch waits for new events when the index has caught up."""
RETRY_S: Final = 2.0
"""Wait before trying again after NATS or the stream was unavailable."""


@dataclass(slots=True)
class IndexProgress:
    position: int = 0
    """The last JetStream stream sequence indexed."""
    indexed: int = 0
    duplicates: int = 0
    skipped: int = 0
    repositioned: int = 0
    """Times the consumer was created afresh after the index's position (start included)."""
    restarted: int = 0
    """Times the index started over: the stream was created again."""
    caught_up: bool = False
    """The last fetch found nothing new."""

    def add(self, result: BatchResult, position: int) -> None:
        self.indexed += result.indexed
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        self.position = position


class _Reposition(Exception):
    """Delivery may have skipped events: go on from the index's position with a new consumer."""


class Indexer:
    """Follow ``nats.stream_name`` into the index at ``db_path`` until ``stop`` is set.

    ``client``: an existing connection to use (vidcap run's); otherwise one is made to
    ``url`` with ``nats``'s credentials and closed at the end. ``writer_thread``: write each
    batch on a thread, so the event loop is never held up (inside ``vidcap run``); False
    writes on the loop's thread, about 30 % faster where nothing else waits on the loop
    (``vidcap index``), because the two threads no longer contend for the GIL."""

    def __init__(
        self,
        nats_config: NatsConfig,
        db_path: Path,
        *,
        url: str | None = None,
        client: Client | None = None,
        durable: str = DEFAULT_DURABLE,
        rebuild: bool = False,
        writer_thread: bool = True,
    ) -> None:
        self._nats = nats_config
        self._url = url or nats_config.url
        self._client = client
        self._durable = durable
        self._rebuild = rebuild
        self._writer_thread = writer_thread
        self.db_path = db_path
        self.progress = IndexProgress()

    async def run(self, stop: asyncio.Event) -> None:
        store = IndexStore(self.db_path, self._nats.stream_name)
        try:
            if self._rebuild:
                store.reset(self._nats.stream_name)
            self.progress.position = store.position
            await _until(stop, self._connected(store))  # stop acts while connecting too
        finally:
            store.close()

    async def _connected(self, store: IndexStore) -> None:
        if self._client is not None:
            await self._follow(self._client, store)
            return
        if not self._url:
            raise ValueError("the indexer needs a NATS URL")
        client = await connect(self._nats, self._url)
        try:
            await self._follow(client, store)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await client.close()

    async def _follow(self, client: Client, store: IndexStore) -> None:
        said: str | None = None  # each distinct trouble is logged once, not every retry
        js = client.jetstream()
        while True:
            try:
                pulls = await self._subscribe(client, js, store)
                said = None
                await self._consume(pulls, store)
            except _Reposition as why:
                logger.info(
                    "search index: going on after stream sequence %d (%s)", store.position, why
                )
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                trouble = self._trouble(exc)
                if trouble != said:
                    logger.warning("search index: %s; trying again every %g s", trouble, RETRY_S)
                    said = trouble
                await asyncio.sleep(RETRY_S)

    async def _check_stream(self, js: JetStreamContext, store: IndexStore) -> None:
        """The index holds this stream, not one of the same name deleted since (an
        embedded nats-server's each run, an operator's `nats stream rm`): else it starts
        over from this one. Says so if the stream lost events before they were indexed."""
        info = await js.stream_info(self._nats.stream_name)
        state, position = info.state, store.position
        created = info.created.isoformat() if info.created is not None else None
        known = store.stream_created
        if state.last_seq < position or (created and known and created != known):
            logger.warning(
                "search index: JetStream stream %r was created again (created %s, ends at "
                "sequence %d; the index holds one created %s, up to %d): the index starts "
                "over from it",
                self._nats.stream_name,
                created or "at an unknown time",
                state.last_seq,
                known or "at an unknown time",
                position,
            )
            await asyncio.to_thread(store.reset, self._nats.stream_name)
            self.progress.position = position = 0
            self.progress.restarted += 1
        if created and created != known:
            store.note_stream_created(created)
        if state.first_seq > position + 1 and state.messages:
            logger.warning(
                "search index: stream sequences %d-%d left JetStream (retention) before they "
                "were indexed",
                position + 1,
                state.first_seq - 1,
            )

    def _trouble(self, exc: Exception) -> str:
        if isinstance(exc, nats.js.errors.NotFoundError):
            return (
                f"JetStream has no stream {self._nats.stream_name!r} yet (vidcap run creates "
                "it; or give --stream-name)"
            )
        return f"{type(exc).__name__} ({exc or 'no detail'})"

    async def _subscribe(
        self, client: Client, js: JetStreamContext, store: IndexStore
    ) -> PullBatches:
        stream = self._nats.stream_name
        await self._check_stream(js, store)
        position = store.position
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, self._durable)
        start = (
            {"deliver_policy": DeliverPolicy.ALL}
            if position == 0
            else {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": position + 1}
        )
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=self._durable,
                description="vidcap search index",
                ack_policy=AckPolicy.ALL,
                max_ack_pending=FETCH_BATCH * 4,
                **start,
            ),
        )
        self.progress.repositioned += 1
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self._durable}"
        pulls = PullBatches(client, subject, FETCH_BATCH, FETCH_WAIT_S)
        await pulls.start()
        return pulls

    async def _consume(self, pulls: PullBatches, store: IndexStore) -> None:
        expected = 1  # the consumer's delivery sequence: any gap means a lost delivery
        try:
            while True:
                messages = await pulls.next()  # the next one is fetched while this is written
                self.progress.caught_up = not messages
                batch, expected, gap = _in_order(messages, expected)
                if batch:
                    if self._writer_thread:
                        await _apply(store, batch, self.progress)
                    else:
                        self.progress.add(store.apply(batch), store.position)
                    await messages[len(batch) - 1].ack()
                if gap is not None:
                    raise _Reposition(gap)
        except PullInterrupted as why:
            raise _Reposition(str(why)) from None
        finally:
            await pulls.close()


def _in_order(messages: list[Msg], expected: int) -> tuple[list[StoredMessage], int, str | None]:
    """The messages up to the first gap in delivery, the next expected delivery sequence,
    and what the gap was (None: no gap)."""
    batch: list[StoredMessage] = []
    for message in messages:
        sequence = message.metadata.sequence
        if sequence.consumer != expected:
            return batch, expected, f"delivery {sequence.consumer} where {expected} was due"
        batch.append(StoredMessage(sequence.stream, message.data))
        expected += 1
    return batch, expected, None


async def _apply(store: IndexStore, batch: list[StoredMessage], progress: IndexProgress) -> None:
    """``store.apply`` on a thread (the loop keeps serving); a cancellation waits for the
    transaction to end (and counts it), so the store is never closed under it."""
    work = asyncio.ensure_future(asyncio.to_thread(store.apply, batch))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await work
        raise
    finally:
        if work.done() and not work.cancelled() and work.exception() is None:
            progress.add(work.result(), store.position)


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends (its exception is raised) or ``stop`` is set."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

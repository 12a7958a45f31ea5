"""Publishing events to NATS, per stream in order; JetStream de-duplicates by Nats-Msg-Id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StreamConfig as JsStreamConfig
from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.errors import VidcapError
from stream.config import ConfigError, NatsConfig, SnapshotsConfig
from stream.delivery.events import Envelope, Event, EventKind, StatusEvent, wire_json
from stream.delivery.snapshots import SnapshotMetrics, SnapshotStore
from stream.delivery.spool import Recovery, Spool, SpooledEvent, SpoolError
from stream.delivery.story import StoryEnd, read_last_stored, read_story_end
from stream.redact import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

LATE_ACK_ROUNDS: Final = 20
AUTHORIZATION_VIOLATION: Final = "Authorization Violation"
RETRY_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0, 2.0)  # then every 2 s, for as long as it takes


def event_subject(prefix: str, stream: str, kind: EventKind) -> str:
    return f"{prefix}.{stream}.{kind}"


class DeliveryMetrics:
    """What the outbox counts, in the registry vidcap serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.outbox_depth = Gauge(
            "vidcap_outbox_events", "Events waiting for NATS (sent or not, unacked)", registry=r
        )
        self.events_published = Counter(
            "vidcap_events_published", "Events acknowledged by NATS", registry=r
        )
        self.events_dropped = Counter(
            "vidcap_events_dropped", "Events dropped from a full outbox (drop_oldest)", registry=r
        )
        self.publish_retries = Counter(
            "vidcap_publish_retries",
            "Times delivery restarted from the first unacked event",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "vidcap_spool_bytes", "Bytes of the local spool of events on disk", registry=r
        )
        self.spool_fill = Gauge(
            "vidcap_spool_fill", "How full the spool is (0 to 1 of spool.max_bytes)", registry=r
        )
        self.spool_events = Gauge(
            "vidcap_spool_events", "Events in the spool not yet stored by JetStream", registry=r
        )
        self.spool_corrupt = Counter(
            "vidcap_spool_corrupt_records",
            "Damaged places found in the spool at start-up (cut off, not delivered)",
            registry=r,
        )
        self.spool_errors = Counter(
            "vidcap_spool_errors", "Spool writes that failed (the spool is then off)", registry=r
        )
        self.snapshots = SnapshotMetrics(r)


class NatsRefusedError(VidcapError):
    """The NATS server refused vidcap's credentials: retrying cannot help."""


ABANDON_RECHECK_S = 0.05
HELD_RECHECK_S: Final = 0.1


async def connect(config: NatsConfig, url: str, say: Callable[[str], None] | None = None) -> Client:
    """Connected, or waiting (and retrying) while the server is unreachable; refused
    credentials fail at once. Later disconnects reconnect for as long as it takes. With
    ``say`` (a command's user), trouble is told through it once, not logged at each attempt."""
    client = Client()
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    told = False  # said once, until reconnected
    connected = False

    def tell(why: str) -> None:
        nonlocal told
        if say is not None and not told:
            told = True
            where = redact(url)
            say(
                f"lost NATS at {where} ({why}); reconnecting"
                if connected
                else f"waiting for NATS at {where} ({why})"
            )

    async def on_error(exc: Exception) -> None:
        if AUTHORIZATION_VIOLATION in str(exc) and not client.is_connected and not refused.done():
            refused.set_result(str(exc))
        if say is None:
            await _log_error(exc)
        tell(redact(str(exc)) or type(exc).__name__)

    async def disconnected() -> None:
        # nats-py also calls this when we close the connection ourselves.
        if client.is_closed or client.is_draining:
            return
        if say is None:
            logger.warning("NATS disconnected from %s; reconnecting", redact(url))
        tell("disconnected")

    async def reconnected() -> None:
        nonlocal told
        if say is None:
            await _log_reconnected()
        else:
            told = False
            say(f"reconnected to NATS at {redact(url)}")

    options: dict[str, Any] = {
        "servers": [server.strip() for server in url.split(",")],
        "name": "vidcap",
        "connect_timeout": config.connect_timeout_s,
        "max_reconnect_attempts": -1,  # a NATS restart must not end captioning
        "error_cb": on_error,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
    }
    if config.user:
        options["user"] = config.user
    if config.password:
        options["password"] = config.password.get_secret_value()
    if config.token:
        options["token"] = config.token.get_secret_value()
    if config.creds_file:
        options["user_credentials"] = str(config.creds_file)
    if config.nkeys_seed_file:
        options["nkeys_seed"] = str(config.nkeys_seed_file)
    if config.tls_ca_file or config.tls_cert_file:
        options["tls"] = tls_context(config)
    connecting: asyncio.Future[None] = asyncio.ensure_future(client.connect(**options))
    first: set[asyncio.Future[Any]] = {connecting, refused}
    try:
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # A caller's deadline (a one-shot command): nats-py's retries must stop with us.
        await _abandon(client, connecting)
        raise
    if not connecting.done():
        await _abandon(client, connecting)
        raise NatsRefusedError(
            f"NATS at {redact(url)} refused the credentials ({refused.result()})"
        )
    connecting.result()
    told, connected = False, True  # what goes wrong from now on is news again
    return client


async def _abandon(client: Client, connecting: asyncio.Future[None]) -> None:
    # A cancel that lands as an attempt fails is swallowed by Python 3.11's wait_for inside
    # nats-py, which then retries for ever (a signal at start-up hung vidcap): cancel again.
    while not connecting.done():
        connecting.cancel()
        await asyncio.wait({connecting}, timeout=ABANDON_RECHECK_S)
    if not connecting.cancelled():
        connecting.exception()  # retrieved: an attempt's error is not news here
    await client.close()


def tls_context(config: NatsConfig) -> ssl.SSLContext:
    """Verifies the server (against ``tls_ca_file``, else the system's CAs) and presents the
    client certificate when one is configured."""
    context = ssl.create_default_context(
        cafile=str(config.tls_ca_file) if config.tls_ca_file else None
    )
    if config.tls_cert_file and config.tls_key_file:
        context.load_cert_chain(str(config.tls_cert_file), str(config.tls_key_file))
    return context


@dataclass(slots=True)
class _Entry:
    envelope: Envelope
    kind: EventKind
    """The kind of the event that was queued (the payload may since be a notice in its place)."""
    subject: str
    payload: bytes
    dropped_through: int | None = None
    """Set on an ``events_dropped`` stand-in: the last seq it stands for."""
    record: int | None = None
    """Its record in the spool, if one is kept."""
    recovered: bool = False
    """Left in the spool by an earlier run."""


class EventPublisher:
    """Delivers events through a bounded, ordered outbox.

    Callers add events in each stream's order; one sender task publishes them in that order
    with up to ``max_pending_acks`` JetStream publishes ahead of their acks. An event leaves
    the outbox only when acknowledged. When NATS is away (or an ack times out) the sender
    starts again from the first unacknowledged event, with the same ``Nats-Msg-Id``s: what
    was in fact stored is de-duplicated by JetStream, so nothing is lost or stored twice.
    """

    def __init__(
        self,
        client: Client,
        config: NatsConfig,
        metrics: DeliveryMetrics | None = None,
        spool: Spool | None = None,
        snapshots: SnapshotsConfig | None = None,
    ) -> None:
        self._client = client
        self._spool = spool
        self._snapshot_settings = snapshots
        self.snapshots = SnapshotStore.disabled()
        """Where keyframe pictures go (opened by ensure_stream when ``snapshots`` is given)."""
        self.spool_failure: str | None = None
        """Why the spool was turned off (a write failed), if it was."""
        self._config = config
        self._metrics = metrics or DeliveryMetrics()
        self._js = (
            client.jetstream(timeout=config.ack_timeout_s, publish_async_max_pending=100_000)
            if config.jetstream
            else None
        )
        self._entries: deque[_Entry] = deque()
        self._in_flight = 0  # entries at the front sent and waiting for their ack
        self._real = 0  # entries that are events (not events_dropped stand-ins)
        self._bytes = 0  # payload bytes of all entries
        # Separate events, so that an ack wakes only whoever waits for what it changed.
        self._not_empty = asyncio.Event()  # the sender waits on it
        self._empty = asyncio.Event()  # flush() waits on it
        self._empty.set()
        self._room = asyncio.Event()  # a publish() waiting for a full outbox waits on it
        self._sender: asyncio.Task[None] | None = None
        self.duplicates = 0
        """Acks saying "already stored": a retried event whose first try had arrived."""
        self.found_stored = 0
        """Events found already stored when delivery started again (not sent twice)."""
        self._check_stored = False  # delivery failed: look up what arrived before resending
        self.dropped = 0
        self.superseded = 0
        """Events not sent because another vidcap writes their stream's story now: spooled
        by an earlier run and found behind it, or waiting when this one lost the lease."""
        self._fenced: set[str] = set()  # streams whose lease this process lost
        self.may_send: Callable[[str], bool] = lambda stream_id: True
        """Whether a stream's events may go out now; when not (its lease is in question), they
        and all queued after them wait, in order."""

    async def ensure_stream(self) -> None:
        """Create the JetStream stream over '<prefix>.>' unless it exists. Waits, saying so,
        while JetStream does not answer (a server starting, or one without JetStream)."""
        for attempt in itertools.count():
            try:
                await self._ensure_stream()
                await self._open_snapshots()
                return
            except (
                TimeoutError,
                nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError,
            ) as exc:
                delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                logger.warning(
                    "JetStream does not answer (%s); waiting for it (is JetStream enabled "
                    "on the server?), next try in %g s",
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _open_snapshots(self) -> None:
        if self._js is None or self._snapshot_settings is None:
            return
        self.snapshots = await SnapshotStore.open(
            self._js, self._snapshot_settings, self._config, self._metrics.snapshots
        )

    async def _ensure_stream(self) -> None:
        if self._js is None:
            return
        subjects = [f"{self._config.subject_prefix}.>"]
        try:
            info = await self._js.stream_info(self._config.stream_name)
            logger.info("JetStream stream %s exists (%s)", info.config.name, info.config.subjects)
        except nats.js.errors.NotFoundError:
            settings = JsStreamConfig(
                name=self._config.stream_name,
                subjects=subjects,
                duplicate_window=self._config.duplicate_window_s,
                max_age=self._config.max_age_s or None,
                max_bytes=self._config.max_bytes,
                num_replicas=self._config.replicas,
            )
            try:
                await self._js.add_stream(settings)
            except nats.js.errors.BadRequestError as exc:  # a setting the server refuses
                raise ConfigError(
                    f"nats.stream_name {self._config.stream_name!r}: JetStream refused to "
                    f"create it for {subjects[0]} ({exc.description}); another stream may "
                    "store those subjects: name it in nats.stream_name, or set another "
                    "nats.subject_prefix"
                ) from None
            logger.info("created JetStream stream %s for %s", self._config.stream_name, subjects)

    async def last_stored(self, stream_id: str) -> tuple[str, int] | None:
        """The session and seq of ``stream_id``'s last stored event (None without JetStream
        or when none is stored; raises when NATS does not answer)."""
        if self._js is None:
            return None
        return await read_last_stored(
            self._js, self._config.stream_name, self._config.subject_prefix, stream_id
        )

    async def story_end(self, stream_id: str) -> StoryEnd | None:
        """How ``stream_id``'s story ends in JetStream so far; None without JetStream, when
        nothing is stored, or when it cannot be read (logged: the stream starts a new story)."""
        if self._js is None:
            return None
        try:
            return await read_story_end(
                self._js, self._config.stream_name, self._config.subject_prefix, stream_id
            )
        except (TimeoutError, nats.errors.Error, ValueError, KeyError) as exc:
            logger.warning(
                "stream %s: cannot read its story so far from JetStream (%r); it starts at seq 0",
                stream_id,
                exc,
            )
            return None

    @property
    def fill(self) -> float:
        """How full the outbox is: the largest of its share of events, of bytes, and of the
        spool's disk (0 to 1)."""
        return max(
            len(self._entries) / self._config.outbox_size,
            self._bytes / self._config.outbox_max_bytes,
            self._spool.fill if self._spool is not None else 0.0,
        )

    async def stream_missing(self, timeout_s: float) -> str | None:
        """Why events cannot be stored now (the JetStream stream gone, JetStream not
        answering), or None when they can. Without JetStream, always None."""
        if self._js is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                await self._js.stream_info(self._config.stream_name)
        except nats.js.errors.NotFoundError:
            return f"JetStream stream {self._config.stream_name} does not exist"
        except (TimeoutError, nats.errors.Error) as exc:
            return f"JetStream does not answer ({type(exc).__name__})"
        return None

    @property
    def waiting(self) -> int:
        """Events in the outbox (not yet acknowledged)."""
        return len(self._entries)

    async def publish(self, envelope: Envelope, event: Event) -> bytes:
        """Add an event to the outbox; returns its wire JSON once it is queued, not when it
        is delivered."""
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever(), name="vidcap-publisher")
        if envelope.stream in self._fenced:
            self.superseded += 1
            return wire_json(envelope, event)
        entry = self._entry(envelope, event)
        while self._is_full(len(entry.payload)):
            if self._config.outbox_full == "drop_oldest" and self._drop_oldest():
                continue
            self._room.clear()
            await self._room.wait()
        self._spool_write(entry, restate=False)
        self._entries.append(entry)
        self._real += 1
        self._bytes += len(entry.payload)
        self._metrics.outbox_depth.set(len(self._entries))
        self._empty.clear()
        self._not_empty.set()
        if self._spool is not None:
            await self._spool.durable()
        return entry.payload

    def _entry(self, envelope: Envelope, event: Event) -> _Entry:
        """The outbox entry of an event; one the server would refuse (larger than its
        max_payload) is replaced by a status event saying so, in the event's slot."""
        payload = wire_json(envelope, event)
        if len(payload) <= self._client.max_payload:
            subject = event_subject(self._config.subject_prefix, envelope.stream, event.kind)
            return _Entry(envelope, event.kind, subject, payload)
        notice = self._too_large(envelope, event.kind, len(payload))
        subject = event_subject(self._config.subject_prefix, envelope.stream, notice.kind)
        return _Entry(envelope, event.kind, subject, wire_json(envelope, notice))

    def _is_full(self, incoming_bytes: int) -> bool:
        if self._real >= self._config.outbox_size:
            return True
        if self._spool is not None and not self._spool.has_room(incoming_bytes):
            return True
        # An empty outbox takes any event: each is below the server's max_payload.
        return bool(self._entries) and (
            self._bytes + incoming_bytes > self._config.outbox_max_bytes
        )

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued event is acknowledged; False if ``timeout_s`` ran out."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, flush_timeout_s: float | None = None) -> int:
        """Deliver what is waiting (at most ``flush_timeout_s``, by default the configured
        one), then close the connection. Returns how many events could not be delivered
        (logged as an error too)."""
        if flush_timeout_s is None:
            flush_timeout_s = self._config.flush_timeout_s
        await self.flush(flush_timeout_s)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        undelivered = len(self._entries)
        if undelivered:
            first = self._entries[0].envelope.msg_id
            logger.error(
                "%d event(s) could not be delivered to NATS within %g s (first: %s)%s",
                undelivered,
                self._config.flush_timeout_s,
                first,
                f"; kept in the spool ({self._spool.directory}) for the next run"
                if self._spool is not None
                else "",
            )
        if self._spool is not None:
            await self._spool.close()
        await close_client(self._client)
        return undelivered

    # ---- the sender ----

    async def _send_forever(self) -> None:
        retry = 0
        while True:
            if not self._entries:
                self._not_empty.clear()
                await self._not_empty.wait()
                continue
            try:
                await self._deliver()
                retry = 0
                if self._entries:  # held back (may_send)
                    await asyncio.sleep(HELD_RECHECK_S)
            except (TimeoutError, nats.errors.Error) as exc:
                self._check_stored = self._js is not None
                delay = RETRY_BACKOFF_S[min(retry, len(RETRY_BACKOFF_S) - 1)]
                retry += 1
                self._metrics.publish_retries.inc()
                logger.warning(
                    "NATS publish of %s failed (%r); %d event(s) waiting; retrying in %g s",
                    self._entries[0].envelope.msg_id if self._entries else "?",
                    exc,
                    len(self._entries),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _deliver(self) -> None:
        """Publish from the front of the outbox, acks pipelined, until it is empty."""
        if self._js is None:
            while self._entries:
                entry = self._entries[0]
                await self._send(entry, self._client.publish)
                self._acknowledged()
            return
        if self._check_stored:
            await self._forget_stored()
            self._check_stored = False
        pending: deque[asyncio.Future[Any]] = deque()
        try:
            while self._entries:
                while (
                    self._in_flight < len(self._entries)
                    and len(pending) < self._config.max_pending_acks
                ):
                    entry = self._entries[self._in_flight]
                    if not self.may_send(entry.envelope.stream):
                        break
                    self._in_flight += 1  # before the await: publish() must not drop it now
                    pending.append(await self._send(entry, self._js.publish_async))
                if not pending:
                    return  # the front waits: the sender looks again shortly
                oldest = pending[0]
                if not oldest.done():  # acks mostly arrive in bursts: skip the timer then
                    await self._ack_of(oldest)
                ack = oldest.result()
                pending.popleft()
                self._in_flight -= 1
                if ack.duplicate:
                    self.duplicates += 1
                self._acknowledged()
        finally:
            self._in_flight = 0  # whatever was not acknowledged is sent again
            for future in pending:
                future.cancel()

    async def _forget_stored(self) -> None:
        """Drop from the outbox what JetStream already holds: after an outage of any length
        nothing is stored twice (the duplicate window alone would forget after its time).
        Each stream's events travel in order on one connection, so when its seq N is stored,
        everything of it before N is too."""
        stored: dict[str, tuple[str, int] | None] = {}
        for stream_id in {entry.envelope.stream for entry in self._entries}:
            stored[stream_id] = await self.last_stored(stream_id)
        kept: deque[_Entry] = deque()
        for entry in self._entries:
            last = stored[entry.envelope.stream]
            envelope = entry.envelope
            if envelope.stream in self._fenced:
                self._discard(entry)
            elif last is None or envelope.seq > last[1]:
                kept.append(entry)
            elif last[0] == envelope.session:
                self.found_stored += 1
                self._forget(entry)
            elif entry.recovered:
                # Another run went on with this stream's story meanwhile (a second vidcap on
                # this machine): sending these now would repeat seqs already taken.
                logger.error("spool: %s is behind its stream's story; not sent", envelope.msg_id)
                self._discard(entry)
            else:
                kept.append(entry)
        self._entries = kept
        self._after_removal()

    async def _send(self, entry: _Entry, publish: Callable[..., Awaitable[T]]) -> T:
        """Publish one entry. If the server refuses its size (its max_payload can shrink
        across a reconnect), the entry becomes a notice saying so: never retried forever."""
        headers = {"Nats-Msg-Id": entry.envelope.msg_id}
        try:
            return await publish(entry.subject, entry.payload, headers=headers)
        except nats.errors.MaxPayloadError:
            notice = self._too_large(entry.envelope, entry.kind, len(entry.payload))
            self._replace(entry, notice)
            return await publish(entry.subject, entry.payload, headers=headers)

    async def _ack_of(self, future: asyncio.Future[Any]) -> None:
        """Wait ``ack_timeout_s`` for an ack. If the event loop itself was blocked meanwhile
        (a synchronous engine call, say), the ack may be read but not yet handed over when
        the timer fires: let the loop run a few more rounds before calling it lost, or a
        needless resend would show core subscribers the event twice (seen in the demo)."""
        try:
            await asyncio.wait_for(asyncio.shield(future), self._config.ack_timeout_s)
        except TimeoutError:
            for _ in range(LATE_ACK_ROUNDS):
                await asyncio.sleep(0)
                if future.done():
                    return
            raise

    def _acknowledged(self) -> None:
        self._forget(self._entries.popleft())
        self._after_removal()

    def _forget(self, entry: _Entry) -> None:
        """``entry`` (out of the outbox) is stored in NATS."""
        self._bytes -= len(entry.payload)
        if entry.dropped_through is None:
            self._real -= 1
        self._metrics.events_published.inc()
        self._spool_done(entry)

    def _after_removal(self) -> None:
        self._metrics.outbox_depth.set(len(self._entries))
        self._spool_metrics()
        if not self._entries:
            self._empty.set()
        if not self._is_full(0):
            self._room.set()

    # ---- a full outbox under drop_oldest ----

    def _drop_oldest(self) -> bool:
        """Replace the oldest unsent event with an ``events_dropped`` status event in its
        stream's place (merged into the stand-in just before it), so subscribers still see
        every seq accounted for. False when every event is in flight (nothing to drop)."""
        unsent = range(self._in_flight, len(self._entries))
        index = next((i for i in unsent if self._entries[i].dropped_through is None), None)
        if index is None:
            return False
        victim = self._entries[index]
        self.dropped += 1
        self._real -= 1
        self._metrics.events_dropped.inc()
        earlier = next(
            (
                self._entries[i]
                for i in range(self._in_flight, index)
                if self._entries[i].envelope.stream == victim.envelope.stream
                and self._entries[i].dropped_through == victim.envelope.seq - 1
            ),
            None,
        )
        if earlier is not None:
            del self._entries[index]
            self._bytes -= len(victim.payload)
            self._spool_done(victim)
            self._restate(earlier, victim.envelope.seq)
            return True
        logger.error(
            "outbox full (%d events): dropping events of stream %s from seq %d",
            self._config.outbox_size,
            victim.envelope.stream,
            victim.envelope.seq,
        )
        self._restate(victim, victim.envelope.seq)
        return True

    def _restate(self, stand_in: _Entry, through: int) -> None:
        stand_in.dropped_through = through
        first = stand_in.envelope.seq
        detail = f"outbox full while NATS was unavailable: events {first}-{through} dropped"
        fields = {"dropped": through - first + 1, "last_seq": through}
        event = StatusEvent("events_dropped", detail, time.time(), fields)
        self._replace(stand_in, event)

    def _too_large(self, envelope: Envelope, kind: EventKind, size: int) -> StatusEvent:
        limit = self._client.max_payload
        detail = (
            f"{kind} event of {size} bytes is larger than the NATS server's max_payload "
            f"({limit}); replaced by this notice"
        )
        logger.warning("stream %s seq %d: %s", envelope.stream, envelope.seq, detail)
        fields = {"bytes": size, "max_payload": limit, "kind": kind}
        return StatusEvent("event_too_large", detail, time.time(), fields)

    def _replace(self, entry: _Entry, event: StatusEvent) -> None:
        """Give an entry another event's payload (same envelope: same slot, same msg id)."""
        self._bytes -= len(entry.payload)
        entry.subject = event_subject(self._config.subject_prefix, entry.envelope.stream, "status")
        entry.payload = wire_json(entry.envelope, event)
        self._bytes += len(entry.payload)
        self._spool_write(entry, restate=True)

    # ---- one writer per stream ----

    def fence(self, stream_id: str) -> None:
        """This process lost ``stream_id``'s lease: its events not yet sent are not sent (the
        new owner goes on from what JetStream holds), nor any it still makes, until
        :meth:`unfence`. Those in flight are dropped too if their delivery fails."""
        self._fenced.add(stream_id)
        kept: deque[_Entry] = deque()
        for index, entry in enumerate(self._entries):
            if index >= self._in_flight and entry.envelope.stream == stream_id:
                self._discard(entry)
            else:
                kept.append(entry)
        self._entries = kept
        self._after_removal()

    def unfence(self, stream_id: str) -> None:
        """This process owns ``stream_id`` (again)."""
        self._fenced.discard(stream_id)

    def _discard(self, entry: _Entry) -> None:
        """``entry`` (out of the outbox) will not be delivered: another vidcap's story."""
        self.superseded += 1
        self._bytes -= len(entry.payload)
        if entry.dropped_through is None:
            self._real -= 1
        self._spool_done(entry)

    # ---- the spool ----

    async def deliver_spooled(self, recovery: Recovery) -> None:
        """Deliver first what an earlier run left in the spool, skipping what JetStream
        already holds; returns once all of it is stored (logging while it waits)."""
        for damage in recovery.corrupt:
            self._metrics.spool_corrupt.inc()
            logger.error("spool damaged: %s; that part is not delivered", damage)
        if recovery.expired:
            logger.warning(
                "spool: %d event(s) older than spool.max_age_s not delivered", recovery.expired
            )
        if not recovery.events:
            return
        for spooled in recovery.events:
            self._entries.append(_recovered_entry(spooled))
            self._real += spooled.dropped_through is None
            self._bytes += len(spooled.payload)
        logger.warning(
            "spool: delivering %d event(s) an earlier run left (first: %s)",
            len(recovery.events),
            self._entries[0].envelope.msg_id,
        )
        self._check_stored = self._js is not None
        self._empty.clear()
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_forever(), name="vidcap-publisher")
        self._not_empty.set()
        while not await self.flush(10.0):
            logger.warning("spool: %d event(s) still waiting for JetStream", len(self._entries))
        logger.info(
            "spool: earlier run's events delivered (%d were already stored, %d superseded)",
            self.found_stored,
            self.superseded,
        )

    def _spool_write(self, entry: _Entry, restate: bool) -> None:
        if self._spool is None or (restate and entry.record is None):
            return
        spooled = SpooledEvent(
            record=entry.record or 0,
            stream=entry.envelope.stream,
            session=entry.envelope.session,
            seq=entry.envelope.seq,
            kind=entry.kind,
            subject=entry.subject,
            payload=entry.payload,
            produced_at=time.time(),
            dropped_through=entry.dropped_through,
        )
        try:
            if restate:
                self._spool.restate(spooled.record, spooled)
            else:
                entry.record = self._spool.append(spooled)
        except SpoolError as exc:
            self._spool_failed(exc)

    def _spool_done(self, entry: _Entry) -> None:
        if self._spool is None or entry.record is None:
            return
        try:
            self._spool.done(entry.record)
        except SpoolError as exc:
            self._spool_failed(exc)

    def _spool_failed(self, exc: SpoolError) -> None:
        """A full or broken disk must not stop captioning: events go on in memory only."""
        self._metrics.spool_errors.inc()
        self.spool_failure = str(exc)
        logger.error("%s; the spool is off: waiting events are kept in memory only", exc)
        self._spool = None

    def _spool_metrics(self) -> None:
        if self._spool is not None:
            self._metrics.spool_bytes.set(self._spool.size)
            self._metrics.spool_fill.set(self._spool.fill)
            self._metrics.spool_events.set(self._spool.events)


def _recovered_entry(spooled: SpooledEvent) -> _Entry:
    return _Entry(
        Envelope(spooled.stream, spooled.session, spooled.seq),
        cast(EventKind, spooled.kind),
        spooled.subject,
        spooled.payload,
        dropped_through=spooled.dropped_through,
        record=spooled.record,
        recovered=True,
    )


async def close_client(client: Client) -> None:
    """Drain ``client`` if NATS is there, else close it: a client left reconnecting would
    try to reach NATS for as long as the process lives."""
    if client.is_closed:
        return
    with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
        await client.drain()
    if not client.is_closed:
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await client.close()


async def _log_error(exc: Exception) -> None:
    logger.warning("NATS error: %r", exc)


async def _log_reconnected() -> None:
    logger.info("NATS reconnected")

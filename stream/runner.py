"""`vidcap run`: one engine, one NATS connection, N stream pipelines, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from aiohttp import web
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from engine.base import CaptionEngine
from engine.cache import cache_dir
from engine.captioner import Captioner
from engine.config import EngineConfig
from engine.errors import VidcapError
from engine.factory import WorkerRoute, start_engine
from engine.metrics import Metrics
from engine.nats_engine import NatsEngine, engine_subject
from stream.config import Config, StreamConfig
from stream.delivery import embedded_address
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import DeliveryMetrics, EventPublisher, connect
from stream.delivery.spool import Recovery, Spool, open_spool, spool_root
from stream.delivery.story import REMOVED
from stream.fair_share import FairShare
from stream.fleet.fleet import Fleet
from stream.fleet.leases import Lease
from stream.pipeline import (
    PublishedCallback,
    StreamMetrics,
    StreamPipeline,
    StreamPosition,
    new_session_id,
)
from stream.search.commands import default_db
from stream.search.follower import Indexer
from stream.service.dashboard.routes import Dashboard
from stream.service.http_server import ConnectionMetrics, HttpServer
from stream.service.json_errors import json_error
from stream.service.operations import Operations
from stream.service.search_api import SearchApi
from stream.service.stream_api import StreamApi
from stream.service.stream_store import StoredStream, StreamStore, bucket_name, merge
from stream.sources.ingest import FrameSource
from stream.sources.whip import WhipSource
from stream.sources.whip_server import WhipServer

logger = logging.getLogger(__name__)


Announce = Callable[[str], None]
"""Where lines for the person running vidcap go (the CLI prints them; by default, logged)."""


@asynccontextmanager
async def nats_url(
    config: Config, data_dir: Path | None = None, announce: Announce = logger.info
) -> AsyncIterator[str]:
    """The configured NATS URL, or an embedded server's for the duration of the block."""
    if config.nats.url:
        yield config.nats.url
        return
    server = EmbeddedNatsServer(data_dir, tethered=True)  # it dies with vidcap
    url = await asyncio.to_thread(server.start)
    announce(f"no nats.url configured; started embedded nats-server at {url}")
    embedded_address.remember(url)  # for `vidcap tail` here
    try:
        yield url
    finally:
        embedded_address.forget()
        await asyncio.to_thread(server.stop)


@dataclass(frozen=True, slots=True)
class _RunScope:
    """What every stream of one run shares."""

    group: asyncio.TaskGroup
    captioner: Captioner
    publisher: EventPublisher
    model_id: str
    share: FairShare
    metrics: StreamMetrics


@dataclass(slots=True)
class _RunningStream:
    pipeline: StreamPipeline
    task: asyncio.Task[bool]


class Runner:
    def __init__(
        self,
        config: Config,
        on_event: PublishedCallback | None = None,
        announce: Announce = logger.info,
    ) -> None:
        self.config = config
        self._announce = announce
        self.session = new_session_id()
        self.registry = CollectorRegistry()
        """Every metric of this run: engine, streams, delivery."""
        self._on_event = on_event
        self._streams: dict[str, _RunningStream] = {}
        self._removed: dict[str, StreamPosition] = {}
        self._failed: set[str] = set()
        self._scope: _RunScope | None = None
        self._started = False
        self._whip_sources: dict[str, WhipSource] = {}
        self._stop_requested = False
        self._deliver_by: float | None = None
        """When the last events must be delivered, once stopping (see _delivery_time_left)."""
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self.engine_died = False
        self._engine_loaded = False
        self._engine_absent: Callable[[], str | None] = lambda: None
        """Why the engine cannot serve now though loaded (no vidcap worker), for readiness."""
        self._stream_made = False
        self._client: Client | None = None
        self._publisher: EventPublisher | None = None
        self._fleet: Fleet | None = None
        self._store: StreamStore | None = None
        self._added_at_run_time: set[str] = set()
        self._removing: set[str] = set()
        self.http_url = ""
        """The HTTP server's base URL once it listens."""
        self.index_stopped: str | None = None
        """Why the search index (``index.enabled``) stopped following; None while it runs."""
        self.whip_url = ""
        """The WHIP endpoint's base URL once it listens (``.../whip``; POST to ``/<stream>``)."""

    @property
    def running(self) -> bool:
        """Start-up is over: streams run, or drain (a signal then stops them gracefully)."""
        return self._started

    @property
    def stopping(self) -> bool:
        """Stop was requested: the streams drain."""
        return self._stop_requested

    @property
    def pipelines(self) -> list[StreamPipeline]:
        return [running.pipeline for running in self._streams.values()]

    def request_stop(self) -> None:
        if self._stop_requested:
            return
        self._stop_requested = True
        self._deliver_by = time.monotonic() + self.config.nats.flush_timeout_s
        self._stopped.set()
        self._announce("stopping: finishing the captions in flight, then publishing them")
        for running in self._streams.values():
            running.pipeline.stop()

    async def run(self, url: str, engine: CaptionEngine | None = None) -> int:
        """Run every stream until each ends (or, when streams can come at run time, until
        stop is requested); returns the exit status. Without ``engine``, the configured one
        is started here and closed at the end."""
        async with self._serving_http():
            return await self._run(url, engine)

    async def _run(self, url: str, engine: CaptionEngine | None) -> int:
        owns_engine = engine is None
        spool, recovery = self._open_spool()
        client = self._client = await connect(self.config.nats, url)
        metrics = DeliveryMetrics(self.registry)
        snapshots = self.config.snapshots if self.config.snapshots_enabled else None
        publisher = EventPublisher(client, self.config.nats, metrics, spool, snapshots)
        self._publisher = publisher
        if engine is None:
            route = WorkerRoute(client, engine_subject(self.config.nats.subject_prefix))
            try:
                engine = await start_engine(self._engine_settings(), route)
            except BaseException:  # bad settings, a signal during the load
                await publisher.close()  # before an embedded server goes: no lost-link warnings
                raise
        self._engine_loaded = True
        captioner = Captioner(
            engine,
            max_tokens=self.config.engine.max_tokens,
            max_attempts=self.config.engine.max_attempts,
            timeout_s=self.config.engine.request_timeout_s,
            metrics=Metrics(self.registry),
            stopping=self._stopped,
        )
        looking = None
        if isinstance(engine, NatsEngine):
            captioner.until_serving = engine.until_serving
            self._engine_absent = lambda: engine.absent
            looking = asyncio.create_task(engine.until_serving())  # says at once if none
        try:
            await publisher.ensure_stream()
            self._stream_made = True  # before, a missing stream is no news (made after the load)
            if recovery is not None:
                await publisher.deliver_spooled(recovery)
            self._fleet = await self._join_fleet(client, spool)
            if self._fleet is not None:
                publisher.may_send = self._fleet.may_send
            streams = await self._streams_to_start(client)
            await self._run_streams(captioner, publisher, engine.model_id, streams)
        finally:
            if looking is not None:
                looking.cancel()
            # Deliver before closing the engine: closing vLLM can block the event loop for
            # seconds. The connection closes last: a NATS engine shares it.
            if self._deliver_by is None:  # every stream ended by itself
                self._deliver_by = time.monotonic() + self.config.nats.flush_timeout_s
            await publisher.flush(self._delivery_time_left())
            if owns_engine:
                await engine.close()
            undelivered = await publisher.close(self._delivery_time_left())
        return self._exit_status(undelivered)

    def _exit_status(self, undelivered: int) -> int:
        """0 when all went well; else 1, with a last line that says why."""
        reasons = []
        if self._failed:
            reasons.append(f"stream(s) failed: {', '.join(sorted(self._failed))}")
        if self.engine_died:
            reasons.append("the engine died")
        if undelivered:
            reasons.append(f"{undelivered} event(s) not delivered")
        if reasons:
            self._announce(f"exit status 1: {'; '.join(reasons)}")
        return 1 if reasons else 0

    def _engine_settings(self) -> EngineConfig:
        """The engine settings, with vLLM's priority scheduler when a stream has a priority
        or logo alerts boost one."""
        settings = self.config.engine
        logos = self.config.alerts.logos
        boosted = logos.mode != "off" and logos.priority_boost > 0
        if boosted or any(stream.priority for stream in self.config.streams):
            return settings.model_copy(update={"scheduling_policy": "priority"})
        return settings

    def _open_spool(self) -> tuple[Spool | None, Recovery | None]:
        if not self.config.spool_enabled:
            return None, None
        root = spool_root(self.config.spool, self.config.nats, cache_dir())
        spool, recovery = open_spool(root, self.config.spool)
        spool.start()
        logger.info("spool at %s (fsync: %s)", spool.directory, self.config.spool.fsync)
        return spool, recovery

    async def _join_fleet(self, client: Client, spool: Spool | None) -> Fleet | None:
        if not self.config.leases_enabled:
            return None
        # The spool's slot names this process across restarts (its lock proves the earlier
        # holder dead); without a spool, the session does.
        node = f"{socket.gethostname()}:{spool.directory if spool else self.session}"
        fleet = Fleet(
            client.jetstream(timeout=self.config.nats.ack_timeout_s),
            self.config.nats.stream_name,
            self.config.leases.ttl_s,
            node,
            self.session,
            self.config.nats.replicas,
            reconnects=lambda: int(client.stats["reconnects"]),
            connected=lambda: client.is_connected,
        )
        await fleet.join()
        return fleet

    @asynccontextmanager
    async def _serving_http(self) -> AsyncIterator[None]:
        """The HTTP server, up from before NATS and the engine (liveness holds while they
        come up; readiness says what is missing) to after the last event is delivered."""
        if self.config.http.listen is None:
            yield
            return
        server = HttpServer(self.config.http)
        self.registry.register(ConnectionMetrics(server))
        Operations(
            self.registry, self.not_ready, engine_in_process=self.config.engine.kind == "vllm"
        ).mount(server.app)
        StreamApi(self.config.http, self).mount(server.app)
        SearchApi(self.config.index.db or default_db(), lambda: self.index_stopped).mount(
            server.app
        )
        Dashboard(self.config.nats, lambda: self._client).mount(server.app)
        whip: WhipServer | None = None
        if self.config.whip.enabled:
            whip = WhipServer(
                self.config.whip,
                self._whip_source,
                may_publish=self._whip_open,
                body_timeout_s=self.config.http.request_timeout_s,
            )
            whip.mount(server.app)
        self.http_url = await server.start()
        self._announce(
            f"HTTP at {self.http_url} (/ dashboard, /healthz /readyz /metrics /api/streams)"
        )
        if whip is not None:
            self.whip_url = f"{self.http_url}/whip"
            self._announce(f"WHIP ingest at {self.whip_url}/<stream>")
        try:
            yield
        finally:
            if whip is not None:
                await whip.close()
            await server.close()

    async def _streams_to_start(self, client: Client) -> list[tuple[StreamConfig, bool]]:
        """The config file's streams, changed by what the API stored in earlier runs."""
        if not self.config.api_writable:
            return [(stream, False) for stream in self.config.streams]
        if not self.config.nats.jetstream:
            logger.warning(
                "nats.jetstream is false: streams changed through the API last until vidcap stops"
            )
            return [(stream, False) for stream in self.config.streams]
        bucket = bucket_name(self.config.nats.stream_name)
        self._store = await StreamStore.open(client.jetstream(), bucket, self.config.nats.replicas)
        stored = await self._store.load()
        self._added_at_run_time = {i for i, record in stored.items() if record.stream is not None}
        if stored:
            logger.info("%d stream change(s) from earlier runs (bucket %s)", len(stored), bucket)
        return merge(self.config.streams, stored)

    async def not_ready(self) -> list[str]:
        """Why vidcap cannot caption and deliver now (empty: ready), for ``/readyz``."""
        reasons: list[str] = []
        if self._stop_requested:
            reasons.append("stopping")
        if not self._engine_loaded:
            reasons.append("the engine is loading")
        elif self.engine_died:
            reasons.append("the engine died")
        elif (absent := self._engine_absent()) is not None:
            reasons.append(absent)
        if self._client is None or not self._client.is_connected:
            reasons.append("NATS is not connected")
        elif self._publisher is not None and self._stream_made:
            missing = await self._publisher.stream_missing(READINESS_NATS_TIMEOUT_S)
            if missing:
                reasons.append(missing)
        if self._publisher is not None and self._publisher.fill >= OUTBOX_HIGH_WATER:
            reasons.append(f"the outbox is {self._publisher.fill:.0%} full (NATS behind)")
        if self._publisher is not None and self._publisher.spool_failure:
            reasons.append(f"the spool failed: {self._publisher.spool_failure}")
        if not reasons and not self._started:
            reasons.append("streams are starting")
        return reasons

    async def _run_streams(
        self,
        captioner: Captioner,
        publisher: EventPublisher,
        model_id: str,
        streams: list[tuple[StreamConfig, bool]],
    ) -> None:
        """All streams in one task group: every task is awaited, whatever happens."""
        pipeline = self.config.pipeline
        share = FairShare(
            pipeline.in_flight_total(self.config.engine),
            pipeline.priority_reserve,
            self._top_priority,
        )
        async with asyncio.TaskGroup() as group:
            self._scope = _RunScope(
                group,
                captioner,
                publisher,
                model_id,
                share,
                StreamMetrics(self.registry),
            )
            self._started = True
            watcher = group.create_task(self._stop_when_engine_dies(captioner))
            fleet = (
                group.create_task(self._fleet.run(self._stopped), name="vidcap-fleet")
                if self._fleet is not None
                else None
            )
            index_stop = asyncio.Event()
            if self.config.index.enabled:
                group.create_task(self._index(index_stop), name="vidcap-index")
            try:
                for stream, paused in streams:
                    self.add_stream(stream, paused=paused)
                if self.config.serves_until_stopped:
                    await self._stopped.wait()
                await self._all_streams_ended()
            finally:
                watcher.cancel()
                index_stop.set()
                if fleet is not None:
                    fleet.cancel()
        self._scope = None

    def add_stream(
        self, stream: StreamConfig, source: FrameSource | None = None, *, paused: bool = False
    ) -> None:
        """Start captioning a stream (while running). Its id must be new to this run."""
        if self._scope is None:
            raise RuntimeError("add_stream needs a running Runner")
        ended = self._streams.get(stream.id)
        if ended is not None and ended.task.done():  # ended on its own: may start again
            self._removed[stream.id] = self._streams.pop(stream.id).pipeline.position
        if stream.id in self._streams:
            raise ValueError(f"stream {stream.id!r} is already running")
        pipeline = self._new_pipeline(stream, source, paused)
        self._idle.clear()
        leased = self._fleet is not None and source is None  # WHIP: the publisher chose us
        run = self._run_leased(stream, pipeline) if leased else self._run_isolated(pipeline)
        task = self._group().create_task(run, name=f"stream-{stream.id}")
        self._streams[stream.id] = _RunningStream(pipeline, task)

    def _group(self) -> asyncio.TaskGroup:
        if self._scope is None:
            raise RuntimeError("needs a running Runner")
        return self._scope.group

    def _new_pipeline(
        self, stream: StreamConfig, source: FrameSource | None, paused: bool
    ) -> StreamPipeline:
        assert self._scope is not None
        scope = self._scope
        pipeline = StreamPipeline(
            stream,
            self.config,
            scope.captioner,
            scope.publisher,
            session=self.session,
            model_id=scope.model_id,
            share=scope.share,
            metrics=scope.metrics,
            on_event=self._on_event,
            source=source,
            resume=self._removed.pop(stream.id, None),
            paused=paused,
        )
        if self._stop_requested:
            pipeline.stop()
        return pipeline

    async def remove_stream(self, stream_id: str, why: str = "shutdown") -> bool:
        """Stop a stream: captions in flight are published, then its ``stopped`` event
        (its detail begins with ``why``). Returns whether it ended without an error."""
        running = self._streams[stream_id]
        running.pipeline.stop(why)
        ok = await running.task
        del self._streams[stream_id]
        self._removed[stream_id] = running.pipeline.position
        return ok

    # ---- the stream API's side (StreamControl) ----

    @property
    def _max_streams(self) -> int:
        return self.config.pipeline.max_streams

    def _top_priority(self) -> int:
        """The highest priority among the running streams (a logo boost included)."""
        return max((running.pipeline.priority for running in self._streams.values()), default=0)

    def snapshots(self) -> list[dict[str, Any]]:
        return [running.pipeline.stats.snapshot() for running in self._streams.values()]

    def snapshot(self, stream_id: str) -> dict[str, Any] | None:
        running = self._streams.get(stream_id)
        return running.pipeline.stats.snapshot() if running is not None else None

    async def add(self, stream: StreamConfig) -> dict[str, Any]:
        self.check_changeable(stream.id)
        if stream.id in self._whip_sources:
            raise ValueError(f"stream {stream.id!r} is a WHIP stream")
        if len(self._streams) >= self._max_streams and stream.id not in self._streams:
            raise ValueError(f"{self._max_streams} streams already (pipeline.max_streams)")
        self.add_stream(stream)
        self._added_at_run_time.add(stream.id)
        await self._store_change(stream.id, StoredStream(stream))
        return self._streams[stream.id].pipeline.stats.snapshot()

    async def remove(self, stream_id: str) -> bool:
        self.check_changeable(stream_id)
        if stream_id in self._whip_sources:
            raise ValueError("a WHIP stream ends when its publisher leaves; it is not removed")
        self._removing.add(stream_id)
        try:
            ok = await self.remove_stream(stream_id, REMOVED)
        finally:
            self._removing.discard(stream_id)
        self._added_at_run_time.discard(stream_id)
        self._failed.discard(stream_id)  # seen and removed: not a reason for exit status 1
        await self._store_change(stream_id, StoredStream(None, removed=True))
        return ok

    async def pause(self, stream_id: str, pause: bool) -> dict[str, Any]:
        self.check_changeable(stream_id)
        pipeline = self._streams[stream_id].pipeline
        if pipeline.pause(pause) and stream_id not in self._whip_sources:
            added = stream_id in self._added_at_run_time
            await self._store_change(
                stream_id, StoredStream(pipeline.stream if added else None, paused=pause)
            )
        return pipeline.stats.snapshot()

    def check_changeable(self, stream_id: str) -> None:
        """503 (json) while starting or stopping; ValueError while the stream is removed."""
        if self._scope is None or self._stop_requested:
            raise json_error(
                web.HTTPServiceUnavailable,
                "vidcap is starting (the engine loads) or stopping",
                {"Retry-After": "5"},
            )
        if stream_id in self._removing:
            raise ValueError(f"stream {stream_id!r} is being removed")

    async def _store_change(self, stream_id: str, record: StoredStream) -> None:
        if self._store is not None:
            await self._store.put(stream_id, record)

    async def _all_streams_ended(self) -> None:
        while any(not running.task.done() for running in self._streams.values()):
            self._idle.clear()
            await self._idle.wait()

    async def _stop_when_engine_dies(self, captioner: Captioner) -> None:
        """A dead engine stops every stream (their failure events are published first)."""
        await captioner.engine_dead.wait()
        self.engine_died = True
        logger.error("the engine died; stopping all streams")
        self.request_stop()

    def _whip_open(self, stream_id: str) -> bool:
        """Whether WHIP publishers may use this id (creates nothing)."""
        if self._scope is None and not self._stop_requested:
            raise web.HTTPServiceUnavailable(
                text="vidcap is starting", headers={"Retry-After": "5"}
            )
        taken = stream_id in self._streams and stream_id not in self._whip_sources
        full = stream_id not in self._streams and len(self._streams) >= self._max_streams
        if self._stop_requested or taken or full:
            return False
        allowed = self.config.whip.streams
        return allowed is None or stream_id in allowed

    def _whip_source(self, stream_id: str) -> WhipSource | None:
        """The WHIP source of a stream id; its pipeline starts with the first publisher and
        lives until vidcap stops, so the stream's seq stays one sequence across publishers."""
        if not self._whip_open(stream_id):
            return None
        if stream_id not in self._whip_sources:
            source = WhipSource(stream_id)
            stream = StreamConfig(
                id=stream_id,
                url=f"whip://{stream_id}",
                live=True,
                stall_timeout_s=self.config.whip.stall_timeout_s,
            )
            self.add_stream(stream, source)
            self._whip_sources[stream_id] = source
        return self._whip_sources[stream_id]

    async def _run_leased(self, stream: StreamConfig, pipeline: StreamPipeline) -> bool:
        """Run the stream while this process holds its lease; stand by while another does.
        A lost lease stops the pipeline (its events not yet sent are dropped: the new owner
        goes on from what JetStream holds) and this process stands by again."""
        assert self._fleet is not None and self._publisher is not None
        try:
            while True:
                pipeline.stats.state = "standby"
                pipeline.stats.state_detail = (
                    "waiting for its lease (taken at once when free; meanwhile another vidcap "
                    "writes it, or this one already has its share)"
                )
                lease = await self._fleet.acquire(stream.id, self._stopped)
                if lease is None:  # stopped while standing by
                    return True
                try:
                    if lease.waited and await self._finished_elsewhere(stream):
                        return True
                    self._publisher.unfence(stream.id)
                    ok = await self._run_while_owned(pipeline, lease)
                finally:
                    await self._hand_over(lease)
                moved = lease.lost.is_set() or lease.yielding.is_set()
                if not moved or self._stop_requested:
                    return ok
                pipeline = self._new_pipeline(stream, None, pipeline.stats.paused)
                self._streams[stream.id].pipeline = pipeline
        finally:
            self._fleet.forget(stream.id)
            self._idle.set()

    async def _run_while_owned(self, pipeline: StreamPipeline, lease: Lease) -> bool:
        assert self._fleet is not None and self._publisher is not None
        publisher = self._publisher
        stream_id = lease.stream_id
        taken_at: tuple[str, int] | None = None  # the story's last event when taken
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            taken_at = await publisher.last_stored(stream_id)

        async def story_is_ours() -> bool:
            """Nobody wrote the stream since this process took its lease."""
            last = await publisher.last_stored(stream_id)
            return last is None or last[0] == self.session or last == taken_at

        keeping = asyncio.create_task(self._fleet.leases.keep(lease, story_is_ours))

        async def stop_when_lost() -> None:
            await lease.lost.wait()
            publisher.fence(lease.stream_id)
            pipeline.stop(f"lease lost ({lease.why_lost}); another vidcap writes the stream")

        async def stop_when_yielding() -> None:
            await lease.yielding.wait()
            pipeline.stop()  # gracefully: its last events are stored, then it is released

        watching = [
            asyncio.create_task(stop_when_lost()),
            asyncio.create_task(stop_when_yielding()),
        ]
        try:
            return await self._run_isolated(pipeline)
        finally:
            for task in (keeping, *watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _hand_over(self, lease: Lease) -> None:
        """Release after the stream's last events are stored: the next owner reads them."""
        assert self._fleet is not None and self._publisher is not None
        if not lease.lost.is_set():
            await self._publisher.flush(self._delivery_time_left())
        await self._fleet.release(lease)

    def _delivery_time_left(self) -> float:
        """How long a flush may wait: flush_timeout_s, and at a stop all flushes together
        (with NATS away, each one's own wait made a stop outlast Compose's grace)."""
        if self._deliver_by is None:
            return self.config.nats.flush_timeout_s
        return max(0.0, self._deliver_by - time.monotonic())

    async def _finished_elsewhere(self, stream: StreamConfig) -> bool:
        """A file another vidcap captioned to its end (or failed on) while this one stood by
        is not started over."""
        assert self._publisher is not None
        if stream.is_live or stream.loop:
            return False
        story = await self._publisher.story_end(stream.id)
        if story is None or story.session == self.session or story.ended not in ("ended", "failed"):
            return False
        logger.info(
            "stream %s: %s by session %s meanwhile; nothing left to do here",
            stream.id,
            story.ended,
            story.session,
        )
        return True

    async def _index(self, stop: asyncio.Event) -> None:
        """Follow the stored events into the search index; its failure stops only it."""
        indexer = Indexer(
            self.config.nats,
            self.config.index.db or default_db(),
            client=self._client,
            durable=self.config.index.durable,
        )
        try:
            await indexer.run(stop)
        except VidcapError as exc:
            self.index_stopped = str(exc)
            logger.error("the search index stopped: %s (captioning goes on)", exc)

    async def _run_isolated(self, pipeline: StreamPipeline) -> bool:
        """A failing stream is logged and reported by its exit status; the others go on."""
        try:
            await pipeline.run()
            if pipeline.source_failed:
                self._failed.add(pipeline.stream.id)
                return False
        except Exception as exc:
            causes = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            for cause in causes:
                logger.error("stream %s stopped with an error: %r", pipeline.stream.id, cause)
            self._failed.add(pipeline.stream.id)
            return False
        finally:
            self._idle.set()
        return True


READINESS_NATS_TIMEOUT_S = 1.0
OUTBOX_HIGH_WATER = 0.9
"""Not ready once the outbox is this full: NATS is behind, events will soon wait or drop."""

STOPPED_DURING_START_UP = 130
"""Exit status when a signal came before the streams ran (128 + SIGINT, as shells report)."""


async def run_with_signals(
    config: Config,
    on_event: PublishedCallback | None = None,
    announce: Announce = logger.info,
    watch: Callable[[Runner], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """`vidcap run`. A signal while streams run drains them; before that (NATS unreachable,
    JetStream not answering) it stops the start-up at once. ``watch`` runs beside, until the
    end (progress bars)."""
    runner = Runner(config, on_event, announce)
    watching = asyncio.create_task(watch(runner)) if watch is not None else None
    loop = asyncio.get_running_loop()
    start_up = asyncio.current_task()
    assert start_up is not None
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if runner.running and runner.stopping:  # a second Ctrl-C was met with silence
            announce(
                "still stopping: the captions in flight are finished and published first "
                "(a SIGKILL stops at once; captions then in the engine are lost)"
            )
        elif runner.running:
            runner.request_stop()
        elif not interrupted:
            interrupted = True
            start_up.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        async with nats_url(config, announce=announce) as url:
            return await runner.run(url)
    except asyncio.CancelledError:
        if not interrupted:
            raise
        announce("stopped before start-up finished")
        return STOPPED_DURING_START_UP
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

"""`vidcap run`: one engine, one NATS connection, N stream pipelines, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from engine.base import CaptionEngine
from engine.captioner import Captioner
from engine.factory import WorkerRoute, start_engine
from engine.metrics import Metrics
from engine.nats_engine import engine_subject
from stream.config import Config, StreamConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import DeliveryMetrics, EventPublisher, connect
from stream.fair_share import FairShare
from stream.pipeline import (
    PublishedCallback,
    StreamMetrics,
    StreamPipeline,
    StreamPosition,
    new_session_id,
)
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
    server = EmbeddedNatsServer(data_dir)
    url = await asyncio.to_thread(server.start)
    announce(f"no nats.url configured; started embedded nats-server at {url}")
    try:
        yield url
    finally:
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
        self._stopped = asyncio.Event()
        self._idle = asyncio.Event()
        self.engine_died = False
        self.whip_url = ""
        """The WHIP endpoint's base URL once it listens (``.../whip``; POST to ``/<stream>``)."""

    @property
    def running(self) -> bool:
        """Start-up is over: streams run, or drain (a signal then stops them gracefully)."""
        return self._started

    @property
    def pipelines(self) -> list[StreamPipeline]:
        return [running.pipeline for running in self._streams.values()]

    def request_stop(self) -> None:
        if self._stop_requested:
            return
        self._stop_requested = True
        self._stopped.set()
        logger.info("stopping: finishing captions in flight")
        for running in self._streams.values():
            running.pipeline.stop()

    async def run(self, url: str, engine: CaptionEngine | None = None) -> int:
        """Run every stream until each ends (or, with WHIP ingest, until stop is requested);
        returns the exit status. Without ``engine``, the configured one is started here and
        closed at the end."""
        owns_engine = engine is None
        client = await connect(self.config.nats, url)
        if engine is None:
            route = WorkerRoute(client, engine_subject(self.config.nats.subject_prefix))
            engine = await start_engine(self.config.engine, route)
        captioner = Captioner(
            engine,
            max_tokens=self.config.engine.max_tokens,
            max_attempts=self.config.engine.max_attempts,
            timeout_s=self.config.engine.request_timeout_s,
            metrics=Metrics(self.registry),
        )
        publisher = EventPublisher(client, self.config.nats, DeliveryMetrics(self.registry))
        try:
            await publisher.ensure_stream()
            await self._run_streams(captioner, publisher, engine.model_id)
        finally:
            # Deliver before closing the engine: closing vLLM can block the event loop for
            # seconds. The connection closes last: a NATS engine shares it.
            await publisher.flush(self.config.nats.flush_timeout_s)
            if owns_engine:
                await engine.close()
            undelivered = await publisher.close()
        ok = not self._failed and not self.engine_died and not undelivered
        return 0 if ok else 1

    async def _run_streams(
        self, captioner: Captioner, publisher: EventPublisher, model_id: str
    ) -> None:
        """All streams in one task group: every task is awaited, whatever happens."""
        total = self.config.pipeline.max_in_flight_total or 2 * self.config.engine.max_num_seqs
        whip: WhipServer | None = None
        async with asyncio.TaskGroup() as group:
            self._scope = _RunScope(
                group,
                captioner,
                publisher,
                model_id,
                FairShare(total),
                StreamMetrics(self.registry),
            )
            self._started = True
            watcher = group.create_task(self._stop_when_engine_dies(captioner))
            try:
                for stream in self.config.streams:
                    self.add_stream(stream)
                if self.config.whip.enabled:
                    whip = WhipServer(
                        self.config.whip, self._whip_source, may_publish=self._whip_open
                    )
                    self.whip_url = await whip.start()
                    self._announce(f"WHIP ingest at {self.whip_url}/<stream>")
                    await self._stopped.wait()
                await self._all_streams_ended()
            finally:
                watcher.cancel()
                if whip is not None:
                    await whip.close()
        self._scope = None

    def add_stream(self, stream: StreamConfig, source: FrameSource | None = None) -> None:
        """Start captioning a stream (while running). Its id must be new to this run."""
        if self._scope is None:
            raise RuntimeError("add_stream needs a running Runner")
        ended = self._streams.get(stream.id)
        if ended is not None and ended.task.done():  # ended on its own: may start again
            self._removed[stream.id] = self._streams.pop(stream.id).pipeline.position
        if stream.id in self._streams:
            raise ValueError(f"stream {stream.id!r} is already running")
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
        )
        if self._stop_requested:
            pipeline.stop()
        self._idle.clear()
        task = scope.group.create_task(self._run_isolated(pipeline), name=f"stream-{stream.id}")
        self._streams[stream.id] = _RunningStream(pipeline, task)

    async def remove_stream(self, stream_id: str) -> bool:
        """Stop a stream: captions in flight are published, then its ``stopped`` event.
        Returns whether it ended without an error."""
        running = self._streams[stream_id]
        running.pipeline.stop()
        ok = await running.task
        del self._streams[stream_id]
        self._removed[stream_id] = running.pipeline.position
        return ok

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
        if self._stop_requested or any(s.id == stream_id for s in self.config.streams):
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


STOPPED_DURING_START_UP = 130
"""Exit status when a signal came before the streams ran (128 + SIGINT, as shells report)."""


async def run_with_signals(
    config: Config, on_event: PublishedCallback | None = None, announce: Announce = logger.info
) -> int:
    """`vidcap run`. A signal while streams run drains them; before that (NATS unreachable,
    JetStream not answering) it stops the start-up at once."""
    runner = Runner(config, on_event, announce)
    loop = asyncio.get_running_loop()
    start_up = asyncio.current_task()
    assert start_up is not None
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if runner.running:
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

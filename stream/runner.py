"""`vidcap run`: one engine, one NATS connection, N stream pipelines, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from engine.base import CaptionEngine
from engine.captioner import Captioner
from engine.factory import WorkerRoute, start_engine
from engine.nats_engine import engine_subject
from stream.config import Config, StreamConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.fair_share import FairShare
from stream.pipeline import Event, EventCallback, StreamPipeline, new_session_id
from stream.sources.ingest import FrameSource
from stream.sources.whip import WhipSource
from stream.sources.whip_server import WhipServer

logger = logging.getLogger(__name__)


@asynccontextmanager
async def nats_url(config: Config, data_dir: Path | None = None) -> AsyncIterator[str]:
    """The configured NATS URL, or an embedded server's for the duration of the block."""
    if config.nats.url:
        yield config.nats.url
        return
    server = EmbeddedNatsServer(data_dir)
    url = await asyncio.to_thread(server.start)
    print(f"vidcap: no nats.url configured; started embedded nats-server at {url}", flush=True)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)


class Runner:
    def __init__(self, config: Config, on_event: EventCallback | None = None) -> None:
        self.config = config
        self.session = new_session_id()
        self._on_event = on_event
        self.pipelines: list[StreamPipeline] = []
        self._tasks: list[asyncio.Task[bool]] = []
        self._whip_sources: dict[str, WhipSource] = {}
        self._stop_requested = False
        self._stopped = asyncio.Event()
        self.engine_died = False
        self._start_pipeline: Callable[..., None] = lambda *_: None  # set by run()
        self.whip_url = ""
        """The WHIP endpoint's base URL once it listens (``.../whip``; POST to ``/<stream>``)."""

    def request_stop(self) -> None:
        if self._stop_requested:
            return
        self._stop_requested = True
        self._stopped.set()
        logger.info("stopping: finishing captions in flight")
        for pipeline in self.pipelines:
            pipeline.stop()

    async def run(self, url: str, engine: CaptionEngine | None = None) -> int:
        """Run every stream until each ends (or, with WHIP ingest, until stop is requested);
        returns the exit status. Without ``engine``, the configured one is started here and
        closed at the end."""
        owns_engine = engine is None
        client = await connect(self.config.nats, url)
        if engine is None:
            subject = engine_subject(self.config.nats.subject_prefix)
            engine = await start_engine(self.config.engine, WorkerRoute(client, subject))
        captioner = Captioner(
            engine,
            max_tokens=self.config.engine.max_tokens,
            max_attempts=self.config.engine.max_attempts,
            timeout_s=self.config.engine.request_timeout_s,
        )
        publisher = EventPublisher(client, self.config.nats, captioner.metrics)
        whip: WhipServer | None = None
        try:
            await publisher.ensure_stream()
            total = self.config.pipeline.max_in_flight_total or 2 * self.config.engine.max_num_seqs
            self._start_pipeline = partial(
                self._add_pipeline, captioner, publisher, engine.model_id, FairShare(total)
            )
            for stream in self.config.streams:
                self._start_pipeline(stream)
            if self.config.whip.enabled:
                whip = WhipServer(self.config.whip, self._whip_source)
                self.whip_url = await whip.start()
                print(f"vidcap: WHIP ingest at {self.whip_url}/<stream>", flush=True)
                await self._stopped.wait()
                await whip.close()
            results = [await task for task in self._tasks]
        finally:
            if whip is not None:
                await whip.close()
            for task in self._tasks:
                task.cancel()
            # Deliver before closing the engine: closing vLLM can block the event loop for
            # seconds. The connection closes last: a NATS engine shares it.
            await publisher.flush(self.config.nats.flush_timeout_s)
            if owns_engine:
                await engine.close()
            undelivered = await publisher.close()
        return 0 if all(results) and not self.engine_died and not undelivered else 1

    def _add_pipeline(
        self,
        captioner: Captioner,
        publisher: EventPublisher,
        model_id: str,
        share: FairShare,
        stream: StreamConfig,
        source: FrameSource | None = None,
    ) -> None:
        pipeline = StreamPipeline(
            stream,
            self.config,
            captioner,
            publisher,
            session=self.session,
            model_id=model_id,
            share=share,
            on_event=self._observe,
            source=source,
        )
        if self._stop_requested:
            pipeline.stop()
        self.pipelines.append(pipeline)
        self._tasks.append(asyncio.create_task(self._run_isolated(pipeline)))

    def _whip_source(self, stream_id: str) -> WhipSource | None:
        """The WHIP source of a stream id; its pipeline starts with the first publisher and
        lives until vidcap stops, so the stream's seq stays one sequence across publishers."""
        if self._stop_requested or any(s.id == stream_id for s in self.config.streams):
            return None
        allowed = self.config.whip.streams
        if allowed is not None and stream_id not in allowed:
            return None
        if stream_id not in self._whip_sources:
            source = WhipSource(stream_id)
            stream = StreamConfig(
                id=stream_id,
                url=f"whip://{stream_id}",
                live=True,
                stall_timeout_s=self.config.whip.stall_timeout_s,
            )
            self._start_pipeline(stream, source)
            self._whip_sources[stream_id] = source
        return self._whip_sources[stream_id]

    def _observe(self, event: Event) -> None:
        """Pass events on; a dead engine stops every stream (its failure events are published)."""
        if self._on_event is not None:
            self._on_event(event)
        error = event.get("error") or {}
        if error.get("reason") == "engine_dead" and not self.engine_died:
            self.engine_died = True
            logger.error("the engine died (%s); stopping all streams", error.get("detail"))
            self.request_stop()

    async def _run_isolated(self, pipeline: StreamPipeline) -> bool:
        """A failing stream is logged and reported by its exit status; the others go on."""
        try:
            await pipeline.run()
        except Exception as exc:
            causes = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            for cause in causes:
                logger.error("stream %s stopped with an error: %r", pipeline.stream.id, cause)
            return False
        return True


async def run_with_signals(config: Config, on_event: EventCallback | None = None) -> int:
    runner = Runner(config, on_event)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runner.request_stop)
    try:
        async with nats_url(config) as url:
            return await runner.run(url)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

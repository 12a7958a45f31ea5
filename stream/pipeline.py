"""One stream, end to end: ingest thread -> keyframes -> engine -> in-order events -> NATS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import uuid4

from engine.captioner import Captioner
from stream.config import Config, StreamConfig
from stream.delivery.events import caption_event, logo_event, status_event
from stream.delivery.logo_alerts import LogoTracker
from stream.delivery.publisher import EventPublisher
from stream.delivery.sequencer import Sequencer
from stream.fair_share import FairShare
from stream.sources.frames import Keyframe, SourceState, SourceStatus
from stream.sources.handoff import KeyframeHandoff
from stream.sources.ingest import FrameSource, Ingest

logger = logging.getLogger(__name__)

Event = dict[str, Any]
EventCallback = Callable[[Event], None]


def new_session_id() -> str:
    """Identifies one run of vidcap; with the stream and seq, it names an event uniquely."""
    return uuid4().hex[:12]


class StreamPipeline:
    def __init__(
        self,
        stream: StreamConfig,
        config: Config,
        captioner: Captioner,
        publisher: EventPublisher,
        *,
        session: str,
        model_id: str,
        share: FairShare,
        on_event: EventCallback | None = None,
        source: FrameSource | None = None,
    ) -> None:
        self.stream = stream
        self._source = source
        self._config = config
        self._captioner = captioner
        self._publisher = publisher
        self._session = session
        self._model_id = model_id
        self._on_event = on_event
        self._share = share
        self._stopping = False
        self._ingest: Ingest | None = None
        self._keyframes_numbered = 0
        self._drops_reported = 0
        self._skipped_at_stop = 0
        self._next_seq = 0

    def stop(self) -> None:
        """Stop reading; captions in flight finish and are published, then run() returns."""
        self._stopping = True
        if self._ingest is not None:
            self._ingest.stop()

    async def run(self) -> None:
        policy = "drop_oldest" if self.stream.is_live else "block"
        handoff = KeyframeHandoff(
            self._config.pipeline.max_pending_keyframes, policy, asyncio.get_running_loop()
        )
        self._ingest = Ingest(
            self.stream,
            self._config.keyframes,
            self._config.engine.image_size,
            handoff,
            self._source,
        )
        if self._stopping:
            self._ingest.stop()
        sequencer: Sequencer[Event] = Sequencer(self._config.pipeline.max_in_flight_per_stream)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._ingest.run())
            group.create_task(self._dispatch(handoff, sequencer))
            group.create_task(self._publish_in_order(sequencer))

    async def _dispatch(self, handoff: KeyframeHandoff, sequencer: Sequencer[Event]) -> None:
        try:
            while (item := await handoff.get()) is not None:
                if self._stopping:
                    self._skipped_at_stop += len(handoff.drain_keyframes())
                await self._report_drops(handoff, sequencer)
                if isinstance(item, SourceStatus):
                    await self._submit_status(sequencer, item)
                elif self._stopping:
                    self._skipped_at_stop += 1
                else:
                    await self._submit_keyframe(sequencer, item)
            await self._report_drops(handoff, sequencer)
            if self._stopping:
                await self._submit_status(sequencer, self._stopped_status())
        finally:
            sequencer.close()

    async def _submit_keyframe(self, sequencer: Sequencer[Event], keyframe: Keyframe) -> None:
        number, self._keyframes_numbered = self._keyframes_numbered, self._keyframes_numbered + 1
        await sequencer.submit(lambda seq: self._caption(keyframe, seq, number))

    async def _caption(self, keyframe: Keyframe, seq: int, number: int) -> Event:
        request_id = f"{self.stream.id}-{self._session}-{number}"
        async with self._share.slot(self.stream.id):
            queue_s = max(0.0, time.time() - keyframe.time.captured_at)
            self._captioner.metrics.queue_wait.labels(self.stream.id).observe(queue_s)
            outcome = await self._captioner.caption(keyframe.image, request_id)
        if not outcome.ok:
            logger.warning(
                "stream %s keyframe %d failed: %s", self.stream.id, number, outcome.error
            )
        return caption_event(
            session=self._session,
            seq=seq,
            keyframe_no=number,
            keyframe=keyframe,
            outcome=outcome,
            model=self._model_id,
            queue_s=queue_s,
        )

    async def _submit_status(
        self, sequencer: Sequencer[Event], status: SourceStatus, **extra: Any
    ) -> None:
        async def ready(seq: int) -> Event:
            return status_event(session=self._session, seq=seq, status=status, **extra)

        await sequencer.submit(ready)

    async def _report_drops(self, handoff: KeyframeHandoff, sequencer: Sequencer[Event]) -> None:
        new_drops = handoff.dropped - self._drops_reported
        if new_drops <= 0:
            return
        self._drops_reported = handoff.dropped
        detail = (
            f"engine behind: {new_drops} stalest waiting keyframe(s) dropped for newer ones "
            f"({handoff.dropped} in total)"
        )
        logger.warning("stream %s: %s", self.stream.id, detail)
        await self._submit_status(
            sequencer, self._status("keyframes_dropped", detail), dropped=new_drops
        )

    def _stopped_status(self) -> SourceStatus:
        detail = "shutdown"
        if self._skipped_at_stop:
            detail += f"; {self._skipped_at_stop} waiting keyframe(s) not captioned"
        return self._status("stopped", detail)

    def _status(self, state: SourceState, detail: str) -> SourceStatus:
        return SourceStatus(self.stream.id, state, detail, time.time())

    async def _publish_in_order(self, sequencer: Sequencer[Event]) -> None:
        """Publish in slot order. An event's seq is given here, so that the logo alerts a
        caption raises take the seqs right after it."""
        logos = LogoTracker(self._config.alerts.logos)
        async for event in sequencer.results():
            await self._publish(event)
            if event["type"] == "caption" and self._config.alerts.logos.mode != "off":
                for alert in logos.observe(event):
                    await self._publish(
                        logo_event(stream=self.stream.id, session=self._session, seq=0, alert=alert)
                    )

    async def _publish(self, event: Event) -> None:
        event["seq"], self._next_seq = self._next_seq, self._next_seq + 1
        await self._publisher.publish(event)
        if event["type"] == "caption":
            captured = datetime.fromisoformat(event["frame"]["captured_at"]).timestamp()
            latency = max(0.0, time.time() - captured)
            self._captioner.metrics.end_to_end.labels(self.stream.id).observe(latency)
        if self._on_event is not None:
            self._on_event(event)

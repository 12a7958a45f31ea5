"""One stream, end to end: ingest thread -> keyframes -> engine -> in-order events -> NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

import orjson
from prometheus_client import CollectorRegistry, Histogram

from engine.captioner import Captioner
from engine.metrics import LATENCY_BUCKETS
from stream.config import Config, StreamConfig
from stream.delivery.events import CaptionEvent, Envelope, Event, PipelineState, StatusEvent
from stream.delivery.logo_alerts import LogoTracker
from stream.delivery.publisher import EventPublisher
from stream.delivery.sequencer import Sequencer
from stream.delivery.snapshots import snapshot_name
from stream.delivery.story import REMOVED, StoryEnd
from stream.fair_share import FairShare
from stream.service.stream_stats import StreamStats
from stream.sources.frames import Keyframe, SourceStatus
from stream.sources.handoff import Control, KeyframeHandoff, Policy
from stream.sources.ingest import FrameSource, Ingest

logger = logging.getLogger(__name__)

PublishedCallback = Callable[[dict[str, Any]], None]
"""Called with each event's published JSON, decoded (for printing and observing)."""


_HOW_IT_ENDED: Final = {
    "stopped": "was stopped",
    "ended": "reached the end of its source",
    "failed": "failed",
    "interrupted": "was interrupted (vidcap died)",
}
_REMOVED_HOW: Final = f"was {REMOVED}"
"""A ``resumed`` event's words for the earlier session's ``previous_end``."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a stream's story stands: its next seq and next keyframe number. A stream removed
    and added again in one run continues from here (its event ids stay unique)."""

    seq: int
    keyframes: int


class StreamMetrics:
    """Per-stream latencies, in the registry vidcap serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.queue_wait = Histogram(
            "vidcap_queue_wait_seconds",
            "Decode to engine submission",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "vidcap_end_to_end_seconds",
            "Frame decoded to its event published",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


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
        metrics: StreamMetrics,
        on_event: PublishedCallback | None = None,
        source: FrameSource | None = None,
        resume: StreamPosition | None = None,
        paused: bool = False,
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
        self._metrics = metrics
        self._stop_event = asyncio.Event()  # also ends keyframes' waits for a worker
        self._stopped_why = "shutdown"
        self.source_failed = False
        """The source gave up (a ``failed`` status): the stream ended with an error."""
        self._ingest: Ingest | None = None
        self._keyframes_numbered = resume.keyframes if resume else 0
        """Captions published so far (keyframe numbers are given at publishing: a keyframe
        dropped on its way leaves no gap)."""
        self._requests = self._keyframes_numbered  # engine request ids
        self._late = 0  # keyframes past their deadline, not yet reported
        self._late_waited_s = 0.0
        self._drops_reported = 0
        self._skipped_at_stop = 0
        self._next_seq = resume.seq if resume else 0
        self.stats = StreamStats(stream.id, stream.url)
        self._handoff: KeyframeHandoff | None = None
        self._captioning_paused = False  # as the dispatcher has it
        self._controls: list[Control] = [Control(pause=True)] if paused else []
        self._logos = LogoTracker(config.alerts.logos)
        self.stats.paused = paused

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self._next_seq, self._keyframes_numbered)

    @property
    def priority(self) -> int:
        """The stream's priority now: its own, plus the logo boost while an alert is open."""
        boost = self._config.alerts.logos.priority_boost if self._logos.any_open else 0
        return self.stream.priority + boost

    def pause(self, pause: bool = True) -> bool:
        """Captioning off (or on again): keyframes are still selected, and counted, but not
        sent to the engine; ingest and health reports go on. Keyframes waiting for the engine
        when captioning pauses are not sent either (a file's queue took 40 s to drain). A
        ``paused`` (``unpaused``) status event marks the change in the stream's events.
        Returns whether anything changed."""
        if self.stats.paused == pause:
            return False
        self.stats.paused = pause
        if self._handoff is None:
            self._controls.append(Control(pause))
            return True
        if pause:
            waiting = len(self._handoff.drain_keyframes())
            self.stats.keyframes += waiting
            self.stats.keyframes_skipped_paused += waiting
        self._handoff.put_control(Control(pause))
        return True

    def stop(self, why: str = "shutdown") -> None:
        """Stop reading; captions in flight finish and are published, then run() returns.
        ``why`` begins the ``stopped`` event's detail."""
        self._stop_event.set()
        self._stopped_why = why
        if self._ingest is not None:
            self._ingest.stop()

    async def run(self) -> None:
        policy: Policy = "drop_oldest" if self.stream.is_live else "block"
        handoff = KeyframeHandoff(
            self._config.pipeline.max_pending_keyframes, policy, asyncio.get_running_loop()
        )
        for control in self._controls:
            handoff.put_control(control)
        self._handoff = handoff
        sequencer: Sequencer[Event] = Sequencer(self._config.pipeline.max_in_flight_per_stream)
        story = await self._publisher.story_end(self.stream.id)
        skip_through = self._skip_through(story)
        if story is not None:
            await self._submit_status(sequencer, self._continue_story(story, skip_through))
        self._ingest = Ingest(
            self.stream,
            self._config.keyframes,
            self._config.engine.image_size,
            handoff,
            self._source,
            on_frame=self.stats.frames.tick,
            skip_through_frame=skip_through,
        )
        if self._stop_event.is_set():
            self._ingest.stop()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._ingest.run())
            group.create_task(self._dispatch(handoff, sequencer))
            group.create_task(self._publish_in_order(sequencer))

    def _skip_through(self, story: StoryEnd | None) -> int | None:
        """The last frame already captioned, when this is a file whose earlier run was
        interrupted or stopped (and ``resume`` is on): selection starts again from frame 0,
        alike, and nothing up to this frame is captioned twice."""
        if story is None or not story.unfinished or self.stream.is_live or self.stream.loop:
            return None
        return story.last_frame if self.stream.resume else None

    def _continue_story(self, story: StoryEnd, skip_through: int | None) -> StatusEvent:
        """Seq and keyframe numbers go on from what JetStream holds; a ``resumed`` event says
        from where, and how the earlier session ended."""
        self._next_seq = max(self._next_seq, story.last_seq + 1)
        self._keyframes_numbered = max(self._keyframes_numbered, story.next_keyframe)
        now = time.time()
        gap = max(0.0, now - story.stored_at) if story.stored_at is not None else None
        how = (
            _REMOVED_HOW
            if story.removed
            else _HOW_IT_ENDED.get(story.ended, f"ended ({story.ended})")
        )
        detail = f"session {story.session} {how} at seq {story.last_seq}"
        if gap is not None:
            detail += f", {gap:.1f} s ago"
        fields: dict[str, Any] = {
            "previous_session": story.session,
            "previous_end": story.ended,
            "last_seq": story.last_seq,
        }
        if gap is not None:
            fields["gap_s"] = round(gap, 3)
        if skip_through is not None:
            detail += f"; the file resumes after frame {skip_through}"
            fields["resume_after_frame"] = skip_through
        logger.info("stream %s: resumed (%s)", self.stream.id, detail)
        return StatusEvent("resumed", detail, now, fields)

    async def _dispatch(self, handoff: KeyframeHandoff, sequencer: Sequencer[Event]) -> None:
        try:
            while (item := await handoff.get()) is not None:
                if self._stop_event.is_set():
                    self._skipped_at_stop += len(handoff.drain_keyframes())
                await self._report_drops(handoff, sequencer)
                if isinstance(item, SourceStatus):
                    self.source_failed = self.source_failed or item.state == "failed"
                    await self._submit_source_status(sequencer, item)
                elif isinstance(item, Control):
                    await self._apply(sequencer, item)
                elif self._stop_event.is_set():
                    self._skipped_at_stop += 1
                else:
                    self.stats.keyframes += 1
                    if self._captioning_paused:
                        self.stats.keyframes_skipped_paused += 1
                    elif (waited := self._waited_too_long(item)) is not None:
                        self._late += 1  # reported before the next item, with any after it
                        self._late_waited_s = max(self._late_waited_s, waited)
                    else:
                        await self._submit_keyframe(sequencer, item)
            await self._report_drops(handoff, sequencer)
            if self._stop_event.is_set():
                await self._submit_status(sequencer, self._stopped_status())
        finally:
            sequencer.close()

    async def _apply(self, sequencer: Sequencer[Event], control: Control) -> None:
        if control.pause == self._captioning_paused:
            return
        self._captioning_paused = control.pause
        state: PipelineState = "paused" if control.pause else "unpaused"
        detail = "captioning paused" if control.pause else "captioning resumed"
        logger.info("stream %s: %s", self.stream.id, detail)
        await self._submit_status(sequencer, _status(state, detail))

    async def _submit_keyframe(self, sequencer: Sequencer[Event], keyframe: Keyframe) -> None:
        number, self._requests = self._requests, self._requests + 1
        await sequencer.submit(lambda: self._caption(keyframe, number))

    def _waited_too_long(self, keyframe: Keyframe) -> float | None:
        """How long the keyframe has waited since capture, if past the stream's deadline."""
        waited = time.time() - keyframe.time.captured_at
        deadline = self.stream.max_staleness_s
        return waited if deadline is not None and waited > deadline else None

    def _time_left(self, keyframe: Keyframe) -> float | None:
        """Seconds until the keyframe's deadline; None without one."""
        if self.stream.max_staleness_s is None:
            return None
        return keyframe.time.captured_at + self.stream.max_staleness_s - time.time()

    async def _caption(self, keyframe: Keyframe, number: int) -> CaptionEvent | StatusEvent:
        """The keyframe's caption (numbered when published), or, when its deadline passed
        before its turn at the engine, the report of its drop in its place."""
        request_id = f"{self.stream.id}-{self._session}-{number}"
        priority = self.priority
        # A keyframe whose deadline passes while it waits for a slot leaves the queue then,
        # so the slots go to keyframes still worth captioning.
        try:
            async with asyncio.timeout(self._time_left(keyframe)) as deadline:
                async with self._share.slot(self.stream.id, priority):
                    deadline.reschedule(None)
                    if (waited := self._waited_too_long(keyframe)) is not None:
                        return self._late_status(1, waited)
                    queue_s = max(0.0, time.time() - keyframe.time.captured_at)
                    self._metrics.queue_wait.labels(self.stream.id).observe(queue_s)
                    # Stored while the model works; the event waits for it only briefly after.
                    name = snapshot_name(self.stream.id, self._session, number)
                    pending = self._publisher.snapshots.start(name, keyframe.image, keyframe.planes)
                    try:
                        outcome = await self._captioner.caption(
                            keyframe.image, request_id, priority, self._stop_event
                        )
                    except BaseException:
                        pending.cancel()
                        raise
        except TimeoutError:
            return self._late_status(1, time.time() - keyframe.time.captured_at)
        snapshot = await pending.settle()
        if outcome.error is not None:
            # Named by its frame, as its event is (the event's keyframe number goes on
            # across runs; ``number`` is this session's request count).
            logger.warning(  # short: the event has the whole detail and the excerpt
                "stream %s: the keyframe at frame %d (%.2f s) failed: %s (%.160s)",
                self.stream.id,
                keyframe.time.index,
                keyframe.time.time_s,
                outcome.error["reason"],
                outcome.error["detail"],
            )
        return CaptionEvent(
            number,
            keyframe.time,
            keyframe.reason,
            keyframe.score,
            outcome,
            self._model_id,
            queue_s,
            snapshot,
            keyframe.transition,
        )

    async def _submit_status(self, sequencer: Sequencer[Event], status: StatusEvent) -> None:
        async def ready() -> Event:
            return status

        await sequencer.submit(ready)

    async def _submit_source_status(
        self, sequencer: Sequencer[Event], status: SourceStatus
    ) -> None:
        await self._submit_status(sequencer, StatusEvent.of_source(status))

    def _late_status(self, dropped: int, waited_s: float) -> StatusEvent:
        detail = (
            f"{dropped} keyframe(s) dropped: their turn at the engine came {waited_s:.2f} s "
            f"after capture, past max_staleness_s ({self.stream.max_staleness_s:g} s)"
        )
        logger.warning("stream %s: %s", self.stream.id, detail)
        fields = {"dropped": dropped, "reason": "deadline", "waited_s": round(waited_s, 3)}
        return _status("keyframes_dropped", detail, **fields)

    async def _report_drops(self, handoff: KeyframeHandoff, sequencer: Sequencer[Event]) -> None:
        if self._late:
            status = self._late_status(self._late, self._late_waited_s)
            self._late, self._late_waited_s = 0, 0.0
            await self._submit_status(sequencer, status)
        new_drops = handoff.dropped - self._drops_reported
        if new_drops <= 0:
            return
        self._drops_reported = handoff.dropped
        detail = (
            f"engine behind: {new_drops} stalest waiting keyframe(s) dropped for newer ones "
            f"({handoff.dropped} in total)"
        )
        logger.warning("stream %s: %s", self.stream.id, detail)
        fields = {"dropped": new_drops, "reason": "engine_behind"}
        await self._submit_status(sequencer, _status("keyframes_dropped", detail, **fields))

    def _stopped_status(self) -> StatusEvent:
        detail = self._stopped_why
        if self._skipped_at_stop:
            detail += f"; {self._skipped_at_stop} waiting keyframe(s) not captioned"
        return _status("stopped", detail)

    async def _publish_in_order(self, sequencer: Sequencer[Event]) -> None:
        """Publish in slot order, giving each event its seq; the logo alerts a caption raises
        take the seqs right after it."""
        watching = self._config.alerts.logos.mode != "off"
        async for result in sequencer.results():
            event = self._numbered(result)
            seq = await self._publish(event)
            if isinstance(event, CaptionEvent):
                latency = max(0.0, time.time() - event.time.captured_at)
                self._metrics.end_to_end.labels(self.stream.id).observe(latency)
                if watching:
                    for alert in self._logos.observe(seq, event):
                        await self._publish(alert)

    def _numbered(self, event: Event) -> Event:
        if not isinstance(event, CaptionEvent):
            return event
        number, self._keyframes_numbered = self._keyframes_numbered, self._keyframes_numbered + 1
        return dataclasses.replace(event, keyframe_no=number)

    async def _publish(self, event: Event) -> int:
        envelope = Envelope(self.stream.id, self._session, self._next_seq)
        self._next_seq += 1
        payload = await self._publisher.publish(envelope, event)
        self.stats.published(event, envelope.seq)
        if self._on_event is not None:
            self._on_event(orjson.loads(payload))
        return envelope.seq


def _status(state: PipelineState, detail: str, **fields: Any) -> StatusEvent:
    return StatusEvent(state, detail, time.time(), fields)

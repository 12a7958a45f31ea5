"""Guarded captioning: deadline, bounded retries, and an outcome for every keyframe."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict

from PIL import Image

from engine.base import CaptionEngine, Generation
from engine.errors import (
    EngineAbsentError,
    EngineDeadError,
    EngineError,
    FailureReason,
    MalformedReplyError,
    RequestTimeoutError,
)
from engine.guard import EXCERPT_CHARS, GuardedCaption, GuardRejection, check_output, printable
from engine.metrics import Metrics

logger = logging.getLogger(__name__)

TRUNCATION_GROWTH = 1.5  # a truncated output is retried with this much more room
STOPPING_LOOK_S: Final = 1.0
"""At a stop, how long a keyframe still waiting for a worker looks for one before failing."""
DETAIL_CHARS: Final = 500  # a failure's detail; with the excerpt, an event stays a few kB


class CaptionError(TypedDict):
    """Why a keyframe has no caption, as published in its event's ``error``."""

    reason: FailureReason
    detail: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class CaptionOutcome:
    """The result for one keyframe: a caption, or a failure with its reason. Never both."""

    caption: dict[str, Any] | None
    error: CaptionError | None
    attempts: int
    engine_s: float
    first_token_s: float | None = None
    tokens: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.caption is not None


@dataclass(slots=True)
class Captioner:
    """Wraps a CaptionEngine with the guard. ``caption`` never raises except on cancellation."""

    engine: CaptionEngine
    max_tokens: int = 512
    max_attempts: int = 3
    timeout_s: float = 60.0
    metrics: Metrics = field(default_factory=Metrics)
    engine_dead: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the engine can serve no request any more (its process died, or it closed)."""
    until_serving: Callable[[], Awaitable[None]] | None = None
    """Waits until the engine can take a request (vidcap workers can all be gone); outside
    each request's deadline, so keyframes wait for a worker instead of failing."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when vidcap stops: a keyframe still waiting for a worker then fails."""

    async def caption(
        self,
        image: Image.Image,
        request_id: str,
        priority: int = 0,
        stream_stopping: asyncio.Event | None = None,
    ) -> CaptionOutcome:
        """``stream_stopping``: set when the keyframe's stream stops alone (removed, its
        lease lost): if it is then waiting for a worker, it fails as at vidcap's stop."""
        self.metrics.in_flight.inc()
        try:
            outcome = await self._caption(image, request_id, priority, stream_stopping)
        finally:
            self.metrics.in_flight.dec()
        self._record(outcome)
        return outcome

    def _record(self, outcome: CaptionOutcome) -> None:
        m = self.metrics
        m.captions.labels("ok" if outcome.error is None else outcome.error["reason"]).inc()
        m.engine_latency.observe(outcome.engine_s)
        if outcome.first_token_s is not None:
            m.first_token.observe(outcome.first_token_s)
        m.tokens.labels("in").inc(outcome.tokens.get("prompt", 0))
        m.tokens.labels("out").inc(outcome.tokens.get("output", 0))

    async def _caption(
        self,
        image: Image.Image,
        request_id: str,
        priority: int,
        stream_stopping: asyncio.Event | None,
    ) -> CaptionOutcome:
        started = time.monotonic()
        max_tokens = self.max_tokens
        rejection: GuardRejection | None = None
        first_token_s: float | None = None
        tokens = {"prompt": 0, "output": 0}
        for attempt in range(1, self.max_attempts + 1):
            try:
                generation = await self._generate(
                    image, f"{request_id}.{attempt}", max_tokens, priority, stream_stopping
                )
            except Exception as exc:  # the engine boundary: any failure is this keyframe's
                if isinstance(exc, EngineDeadError):
                    self.engine_dead.set()
                return self._failed(_reason(exc), _describe(exc), "", attempt, started, tokens)
            first_token_s = first_token_s or generation.first_token_s
            tokens["prompt"] += generation.prompt_tokens
            tokens["output"] += generation.output_tokens
            checked = check_output(generation.text, generation.finish_reason)
            if isinstance(checked, GuardedCaption):
                return CaptionOutcome(
                    checked.caption,
                    None,
                    attempt,
                    time.monotonic() - started,
                    first_token_s,
                    tokens,
                )
            rejection = checked
            logger.info("request %s attempt %d rejected: %s", request_id, attempt, checked.reason)
            if not checked.retryable or attempt == self.max_attempts:
                break
            self.metrics.retries.labels(checked.reason).inc()
            if checked.reason == "truncated":
                max_tokens = int(max_tokens * TRUNCATION_GROWTH)
        assert rejection is not None
        return self._failed(
            rejection.reason, rejection.detail, rejection.excerpt, attempt, started, tokens
        )

    async def _generate(
        self,
        image: Image.Image,
        request_id: str,
        max_tokens: int,
        priority: int,
        stream_stopping: asyncio.Event | None,
    ) -> Generation:
        while True:
            await self._until_serving(stream_stopping)
            try:
                async with asyncio.timeout(self.timeout_s):
                    generation = await self.engine.generate(image, request_id, max_tokens, priority)
            except EngineAbsentError:
                if self.until_serving is None:
                    raise
                continue  # the workers went: wait for one, then send it again
            except TimeoutError as exc:
                if isinstance(exc, EngineError):
                    raise
                raise RequestTimeoutError(request_id, self.timeout_s) from None
            break
        if not isinstance(generation, Generation):
            raise MalformedReplyError(f"engine returned {type(generation).__name__}")
        return generation

    async def _until_serving(self, stream_stopping: asyncio.Event | None) -> None:
        if self.until_serving is None:
            return
        waiting = asyncio.ensure_future(self.until_serving())
        stops = [self.stopping] + ([stream_stopping] if stream_stopping is not None else [])
        stop_waits = [asyncio.ensure_future(stop.wait()) for stop in stops]
        try:
            await asyncio.wait({waiting, *stop_waits}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # stopping: one last look
                await asyncio.wait({waiting}, timeout=STOPPING_LOOK_S)
        finally:
            for stop_wait in stop_waits:
                stop_wait.cancel()
            waiting.cancel()  # nothing when it is done
        if not waiting.done() or waiting.cancelled():
            await asyncio.wait({waiting})  # its cancel lands
            what = "vidcap" if self.stopping.is_set() else "its stream"
            raise EngineAbsentError(f"no worker was serving the engine when {what} stopped")
        waiting.result()

    @staticmethod
    def _failed(
        reason: FailureReason,
        detail: str,
        excerpt: str,
        attempts: int,
        started: float,
        tokens: dict[str, int],
    ) -> CaptionOutcome:
        error = CaptionError(
            reason=reason,
            detail=printable(detail[:DETAIL_CHARS]),
            excerpt=printable(excerpt[:EXCERPT_CHARS]),
        )
        return CaptionOutcome(None, error, attempts, time.monotonic() - started, None, tokens)


def _reason(exc: Exception) -> FailureReason:
    if isinstance(exc, EngineDeadError):
        return "engine_dead"
    if isinstance(exc, EngineError) and isinstance(exc, TimeoutError):
        return "timeout"
    if not isinstance(exc, EngineError):
        logger.warning("engine raised %s; counted as engine_error", type(exc).__name__)
    return "engine_error"


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"

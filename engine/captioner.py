"""Guarded captioning: deadline, bounded retries, and an outcome for every keyframe."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from engine.base import CaptionEngine, Generation
from engine.errors import EngineDeadError, EngineError, RequestTimeoutError
from engine.guard import GuardedCaption, GuardRejection, check_output
from engine.metrics import Metrics

logger = logging.getLogger(__name__)

TRUNCATION_GROWTH = 1.5  # a truncated output is retried with this much more room


@dataclass(frozen=True, slots=True)
class CaptionOutcome:
    """The result for one keyframe: a caption, or a failure with its reason. Never both."""

    caption: dict[str, Any] | None
    error: dict[str, str] | None
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

    async def caption(self, image: Image.Image, request_id: str) -> CaptionOutcome:
        self.metrics.in_flight.inc()
        try:
            outcome = await self._caption(image, request_id)
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

    async def _caption(self, image: Image.Image, request_id: str) -> CaptionOutcome:
        started = time.monotonic()
        max_tokens = self.max_tokens
        rejection: GuardRejection | None = None
        first_token_s: float | None = None
        tokens = {"prompt": 0, "output": 0}
        for attempt in range(1, self.max_attempts + 1):
            try:
                generation = await self._generate(image, f"{request_id}.{attempt}", max_tokens)
            except EngineError as exc:
                reason = "engine_dead" if isinstance(exc, EngineDeadError) else "engine_error"
                if isinstance(exc, TimeoutError):
                    reason = "timeout"
                return self._failed(reason, str(exc), "", attempt, started, tokens)
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

    async def _generate(self, image: Image.Image, request_id: str, max_tokens: int) -> Generation:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.engine.generate(image, request_id, max_tokens)
        except TimeoutError as exc:
            if isinstance(exc, EngineError):
                raise
            raise RequestTimeoutError(request_id, self.timeout_s) from None

    @staticmethod
    def _failed(
        reason: str,
        detail: str,
        excerpt: str,
        attempts: int,
        started: float,
        tokens: dict[str, int],
    ) -> CaptionOutcome:
        error = {"reason": reason, "detail": detail, "excerpt": excerpt}
        return CaptionOutcome(None, error, attempts, time.monotonic() - started, None, tokens)

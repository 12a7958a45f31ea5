"""The seam between the pipeline and any model server: one image in, one completion out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

from PIL import Image

from engine.errors import MalformedReplyError

MAX_TOKEN_COUNT: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Generation:
    """One raw completion, before the guard has looked at it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    first_token_s: float | None
    """Seconds from submission to the first output token (None when not observed)."""

    def __post_init__(self) -> None:
        # The engine boundary: replies come from other processes and hosts, so a Generation
        # is type-checked where it is made, and a wrong one is that request's failure.
        if not isinstance(self.text, str):
            raise MalformedReplyError(f"completion text is {type(self.text).__name__}, not str")
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            raise MalformedReplyError(f"finish reason {self.finish_reason!r:.100} is not a str")
        for name in ("prompt_tokens", "output_tokens"):
            count = getattr(self, name)
            if not _is_number(count, int) or not 0 <= count <= MAX_TOKEN_COUNT:
                raise MalformedReplyError(f"{name} {count!r:.100} is not a token count")
        first = self.first_token_s
        if first is not None and (
            not _is_number(first, (int, float)) or not math.isfinite(first) or first < 0
        ):
            raise MalformedReplyError(f"first_token_s {first!r:.100} is not a duration")


def _is_number(value: object, kinds: type | tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


class CaptionEngine(Protocol):
    """Serves many concurrent requests; each call is one image with the canonical prompts."""

    model_id: str

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        """Complete one request. Cancelling the call aborts the request in the engine.
        ``priority`` (higher first) orders requests where the engine can: vLLM with the
        priority scheduler, and workers that run one; others ignore it."""
        ...

    async def close(self) -> None: ...

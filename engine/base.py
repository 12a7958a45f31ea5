"""The seam between the pipeline and any model server: one image in, one completion out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True, slots=True)
class Generation:
    """One raw completion, before the guard has looked at it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    first_token_s: float | None
    """Seconds from submission to the first output token (None when not observed)."""


class CaptionEngine(Protocol):
    """Serves many concurrent requests; each call is one image with the canonical prompts."""

    model_id: str

    async def generate(self, image: Image.Image, request_id: str, max_tokens: int) -> Generation:
        """Complete one request. Cancelling the call aborts the request in the engine."""
        ...

    async def close(self) -> None: ...

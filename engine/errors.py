"""Errors raised by the engine; each carries the data a caller needs to report it."""

from __future__ import annotations


class VidcapError(Exception):
    """Base class of every error vidcap raises on purpose."""


class EngineError(VidcapError):
    """A caption request failed inside the engine; other requests may still succeed."""


class EngineDeadError(EngineError):
    """The engine can no longer serve any request (its process died or it was closed)."""


class RequestTimeoutError(EngineError, TimeoutError):
    """A caption request ran past its deadline and was aborted."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(f"request {request_id} timed out after {timeout_s:g} s and was aborted")
        self.request_id = request_id
        self.timeout_s = timeout_s

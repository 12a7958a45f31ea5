"""Errors raised by the engine; each carries the data a caller needs to report it."""

from __future__ import annotations

from typing import Literal


class VidcapError(Exception):
    """Base class of every error vidcap raises on purpose."""


class EngineSettingsError(VidcapError):
    """The engine settings name something the engine does not have (checked before loading)."""


class EngineError(VidcapError):
    """A caption request failed inside the engine; other requests may still succeed."""


class EngineAbsentError(EngineError):
    """Nothing serves the engine now (every vidcap worker is gone); the request was not
    served, and one may come: wait for it rather than fail the keyframe."""


class EngineDeadError(EngineError):
    """The engine can no longer serve any request (its process died or it was closed)."""


class MalformedReplyError(EngineError, ValueError):
    """The engine answered, but not with a completion (wrong types, not JSON, missing fields)."""


class RequestTimeoutError(EngineError, TimeoutError):
    """A caption request ran past its deadline and was aborted."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        super().__init__(f"request {request_id} timed out after {timeout_s:g} s and was aborted")
        self.request_id = request_id
        self.timeout_s = timeout_s


FailureReason = Literal[
    "truncated",  # the output hit max_tokens before the JSON closed (after the retries)
    "invalid_json",  # not one strict JSON object
    "schema",  # not the caption schema (types, fields, lengths, counts)
    "rules",  # breaks the prompt's rules (more than 4 sentences in the description)
    "empty",  # the model returned no text
    "finish_reason",  # the engine stopped for a reason other than "stop"
    "timeout",  # the request ran past engine.request_timeout_s
    "engine_error",  # the engine failed this request, or its reply was malformed
    "engine_dead",  # the engine can serve no request any more
]
"""Why a keyframe has no caption: a closed set, published as ``error.reason``."""

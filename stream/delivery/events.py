"""Event payloads: what subscribers receive. Versioned by the ``schema`` field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from engine.captioner import CaptionOutcome
from stream.sources.frames import Keyframe, SourceStatus

CAPTION_SCHEMA_ID: Final = "vidcap.caption/1"
STATUS_SCHEMA_ID: Final = "vidcap.status/2"
LOGO_SCHEMA_ID: Final = "vidcap.logo/1"


def iso_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def caption_event(
    *,
    session: str,
    seq: int,
    keyframe_no: int,
    keyframe: Keyframe,
    outcome: CaptionOutcome,
    model: str,
    queue_s: float,
) -> dict[str, Any]:
    time = keyframe.time
    return {
        "schema": CAPTION_SCHEMA_ID,
        "type": "caption",
        "stream": keyframe.stream_id,
        "session": session,
        "seq": seq,
        "keyframe": keyframe_no,
        "frame": {
            "index": time.index,
            "pts": time.pts,
            "time_base": str(time.time_base) if time.time_base is not None else None,
            "time_s": round(time.time_s, 6),
            "captured_at": iso_time(time.captured_at),
        },
        "selection": {"reason": keyframe.reason, "score": keyframe.score},
        "status": "ok" if outcome.ok else "failed",
        "caption": outcome.caption,
        "error": outcome.error,
        "model": model,
        "attempts": outcome.attempts,
        "tokens": {
            "prompt": outcome.tokens.get("prompt", 0),
            "output": outcome.tokens.get("output", 0),
        },
        "timing": {
            "queue_s": round(queue_s, 4),
            "engine_s": round(outcome.engine_s, 4),
            "first_token_s": None
            if outcome.first_token_s is None
            else round(outcome.first_token_s, 4),
        },
    }


def status_event(*, session: str, seq: int, status: SourceStatus, **extra: Any) -> dict[str, Any]:
    return {
        "schema": STATUS_SCHEMA_ID,
        "type": "status",
        "stream": status.stream_id,
        "session": session,
        "seq": seq,
        "state": status.state,
        "detail": status.detail,
        "at": iso_time(status.at),
        **status.fields,
        **extra,
    }


def logo_event(*, stream: str, session: str, seq: int, alert: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": LOGO_SCHEMA_ID,
        "type": "logo",
        "stream": stream,
        "session": session,
        "seq": seq,
        **alert,
    }

"""Typed events, and the one function that writes their wire JSON.

An event is a frozen value built by the stage that knows it (a caption, a status change, a logo
alert). It gets its place in the stream's story, an ``Envelope`` (stream, session, seq), once,
when the pipeline publishes it; ``wire_json`` then writes the bytes subscribers receive. Times
stay floats until then. The wire format is versioned by each event's ``schema`` field and
described by ``schemas/`` (see ``stream.delivery.schemas``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import orjson

from engine.captioner import CaptionOutcome
from stream.delivery.snapshots import DISABLED, Snapshot, SnapshotOutcome
from stream.sources.frames import FrameTime, SelectionReason, SourceState, SourceStatus

if TYPE_CHECKING:
    from stream.keyframes.transitions import Transition

CAPTION_SCHEMA_ID: Final = "vidcap.caption/2"
STATUS_SCHEMA_ID: Final = "vidcap.status/4"
LOGO_SCHEMA_ID: Final = "vidcap.logo/2"

EventKind = Literal["caption", "status", "logo"]
PipelineState = Literal[
    "stopped",  # vidcap is shutting down (or the stream was removed)
    "keyframes_dropped",  # the engine fell behind, or keyframes' deadlines passed: dropped
    "paused",  # captioning turned off through the API (ingest and health reports go on)
    "unpaused",  # captioning on again
    "resumed",  # the story goes on from an earlier session's last stored event
]
DeliveryState = Literal[
    "events_dropped",  # NATS was away and the outbox full (drop_oldest): events replaced by this
    "event_too_large",  # an event above the server's max_payload, replaced by this in its slot
]
StatusState = SourceState | PipelineState | DeliveryState
AlertKind = Literal["appeared", "disappeared"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event's place: the stream, the run of vidcap that made it, and its seq there."""

    stream: str
    session: str
    seq: int

    @property
    def msg_id(self) -> str:
        """Unique per event and stable across retries: the JetStream de-duplication key."""
        return f"{self.stream}:{self.session}:{self.seq}"


@dataclass(frozen=True, slots=True)
class CaptionEvent:
    """One keyframe's outcome: its caption, or why there is none."""

    kind: ClassVar[EventKind] = "caption"
    keyframe_no: int
    time: FrameTime
    reason: SelectionReason
    score: float
    outcome: CaptionOutcome
    model: str
    queue_s: float
    snapshot: SnapshotOutcome = DISABLED
    """The keyframe's picture in the object store, or why it is not there."""
    transition: Transition | None = None
    """The transition that led to the keyframe; on the wire only when there is one."""

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A change in a stream's condition: its source's, the pipeline's, or delivery's."""

    kind: ClassVar[EventKind] = "status"
    state: StatusState
    detail: str
    at: float
    """Wall-clock (Unix) time of the change."""
    fields: Mapping[str, Any] = field(default_factory=dict)
    """State-specific numbers (gap_s, attempt, dropped, ...), published as event fields."""

    @classmethod
    def of_source(cls, status: SourceStatus) -> StatusEvent:
        return cls(status.state, status.detail, status.at, status.fields)


@dataclass(frozen=True, slots=True)
class LogoSighting:
    """A captioned keyframe that counts for (or closes) a logo alert."""

    seq: int
    time_s: float
    captured_at: float
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class LogoEvent:
    """A brand appeared on screen, or disappeared from it."""

    kind: ClassVar[EventKind] = "logo"
    alert: AlertKind
    brand: str
    matched: str
    """The logo description the brand was matched in."""
    keyframes: tuple[LogoSighting, ...]


Event = CaptionEvent | StatusEvent | LogoEvent


def wire_json(envelope: Envelope, event: Event) -> bytes:
    """The bytes published for ``event``: the schema's JSON, keys in documented order."""
    return orjson.dumps(wire_object(envelope, event))


def wire_object(envelope: Envelope, event: Event) -> dict[str, Any]:
    head = {"stream": envelope.stream, "session": envelope.session, "seq": envelope.seq}
    if isinstance(event, CaptionEvent):
        return {"schema": CAPTION_SCHEMA_ID, "type": "caption", **head, **_caption_body(event)}
    if isinstance(event, StatusEvent):
        return {"schema": STATUS_SCHEMA_ID, "type": "status", **head, **_status_body(event)}
    return {"schema": LOGO_SCHEMA_ID, "type": "logo", **head, **_logo_body(event)}


def iso_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def _caption_body(event: CaptionEvent) -> dict[str, Any]:
    time, outcome = event.time, event.outcome
    return {
        "keyframe": event.keyframe_no,
        "frame": {
            "index": time.index,
            "pts": time.pts,
            "time_base": str(time.time_base) if time.time_base is not None else None,
            "time_s": round(time.time_s, 6),
            "captured_at": iso_time(time.captured_at),
        },
        "selection": _selection(event),
        "status": "ok" if outcome.ok else "failed",
        "caption": outcome.caption,
        "error": outcome.error,
        "model": event.model,
        "attempts": outcome.attempts,
        "tokens": {
            "prompt": outcome.tokens.get("prompt", 0),
            "output": outcome.tokens.get("output", 0),
        },
        "timing": {
            "queue_s": round(event.queue_s, 4),
            "engine_s": round(outcome.engine_s, 4),
            "first_token_s": None
            if outcome.first_token_s is None
            else round(outcome.first_token_s, 4),
        },
        "snapshot": _snapshot(event.snapshot.stored),
        "snapshot_error": event.snapshot.error,
    }


def _selection(event: CaptionEvent) -> dict[str, Any]:
    """Why the keyframe was chosen; ``transition`` (optional, so events without one read as
    before) where a transition led to it."""
    selection: dict[str, Any] = {"reason": event.reason, "score": event.score}
    if event.transition is not None:
        selection["transition"] = event.transition.wire()
    return selection


def _snapshot(snapshot: Snapshot | None) -> dict[str, Any] | None:
    return snapshot.wire() if snapshot is not None else None


def _status_body(event: StatusEvent) -> dict[str, Any]:
    return {"state": event.state, "detail": event.detail, "at": iso_time(event.at), **event.fields}


def _logo_body(event: LogoEvent) -> dict[str, Any]:
    return {
        "alert": event.alert,
        "brand": event.brand,
        "matched": event.matched,
        "keyframes": [
            {
                "seq": s.seq,
                "time_s": s.time_s,
                "captured_at": iso_time(s.captured_at),
                "snapshot": _snapshot(s.snapshot),
            }
            for s in event.keyframes
        ],
    }

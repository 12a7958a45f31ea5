"""A stream's story so far, as JetStream holds it: the last event stored for the stream (any
kind) and its last caption. A new run continues from there: seq keeps counting, keyframes keep
their numbers, and a file interrupted mid-way resumes after its last captioned frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

logger = logging.getLogger(__name__)

# A story whose last event is one of these ended on purpose; after anything else, vidcap died
# (or lost NATS for good) mid-story.
FINAL_STATES = frozenset({"stopped", "ended", "failed"})
REMOVED: Final = "removed through the stream API"
"""How a ``stopped`` event's detail begins when the stream was removed, not shut down."""


@dataclass(frozen=True, slots=True)
class StoryEnd:
    last_seq: int
    session: str
    ended: str
    """The final state (``stopped``, ``ended``, ``failed``), or ``interrupted``."""
    stored_at: float | None
    """When JetStream stored the last event (Unix time), if the server said."""
    next_keyframe: int
    last_frame: int | None
    """Frame index of the last captioned keyframe (files resume after it)."""
    removed: bool = False
    """Stopped because it was removed through the stream API: added again, it starts over."""

    @property
    def unfinished(self) -> bool:
        """Stopped or killed before the stream's end (a file then goes on from there)."""
        return self.ended == "interrupted" or (self.ended == "stopped" and not self.removed)


async def read_story_end(
    js: JetStreamContext, stream_name: str, prefix: str, stream_id: str
) -> StoryEnd | None:
    """The end of ``stream_id``'s story in JetStream; None when nothing is stored."""
    last = await _last(js, stream_name, f"{prefix}.{stream_id}.>")
    if last is None:
        return None
    event, stored_at = last
    caption = await _last(js, stream_name, f"{prefix}.{stream_id}.caption")
    next_keyframe, last_frame = 0, None
    if caption is not None:
        next_keyframe = int(caption[0].get("keyframe", -1)) + 1
        last_frame = caption[0].get("frame", {}).get("index")
    state = event.get("state") if event.get("type") == "status" else None
    return StoryEnd(
        last_seq=int(event["seq"]),
        session=str(event.get("session", "")),
        ended=state if state in FINAL_STATES else "interrupted",
        stored_at=stored_at,
        next_keyframe=next_keyframe,
        last_frame=int(last_frame) if isinstance(last_frame, int) else None,
        removed=state == "stopped" and str(event.get("detail", "")).startswith(REMOVED),
    )


async def read_last_stored(
    js: JetStreamContext, stream_name: str, prefix: str, stream_id: str
) -> tuple[str, int] | None:
    """The session and seq of the last event JetStream holds for ``stream_id``."""
    last = await _last(js, stream_name, f"{prefix}.{stream_id}.>")
    return None if last is None else (str(last[0].get("session", "")), int(last[0]["seq"]))


async def _last(
    js: JetStreamContext, stream_name: str, subject: str
) -> tuple[dict[str, Any], float | None] | None:
    try:
        message = await js.get_last_msg(stream_name, subject)
    except nats.js.errors.NotFoundError:
        return None
    if not message.data:
        return None
    event = orjson.loads(message.data)
    if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
        raise ValueError(f"the last message on {subject} is not a vidcap event")
    stored_at = message.time.timestamp() if message.time is not None else None
    return event, stored_at


async def find_event(
    js: JetStreamContext, stream_name: str, prefix: str, stream_id: str, seq: int
) -> dict[str, Any] | None:
    """The event of ``stream_id`` with this ``seq``, or None. Seqs grow along the stream's
    messages, so a binary search over JetStream's positions finds it in about log2(messages)
    lookups of the next message on the stream's subjects."""
    subject = f"{prefix}.{stream_id}.>"
    info = await js.stream_info(stream_name)
    low, high = info.state.first_seq, info.state.last_seq
    found: dict[str, Any] | None = None
    while low <= high:
        middle = (low + high) // 2
        message = await _next(js, stream_name, subject, middle)
        if message is None or message[1] > high:
            high = middle - 1
            continue
        event, position = message
        if event["seq"] < seq:
            low = position + 1
        else:
            found, high = event, middle - 1
    return found if found is not None and found["seq"] == seq else None


async def _next(
    js: JetStreamContext, stream_name: str, subject: str, position: int
) -> tuple[dict[str, Any], int] | None:
    """The first event on ``subject`` at or after JetStream position ``position``."""
    try:
        message = await js.get_msg(stream_name, seq=position, subject=subject, next=True)
    except nats.js.errors.NotFoundError:
        return None
    event = orjson.loads(message.data or b"null")
    if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
        raise ValueError(f"message {message.seq} on {subject} is not a vidcap event")
    return event, int(message.seq or position)

"""Event logs for the search index's tests and benchmark: typed events written by the one
wire-format function (``wire_json``), so what is indexed is exactly what vidcap publishes."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from engine.captioner import CaptionOutcome
from stream.delivery.events import (
    AlertKind,
    CaptionEvent,
    Envelope,
    Event,
    LogoEvent,
    LogoSighting,
    StatusEvent,
    StatusState,
    wire_json,
)
from stream.sources.frames import FrameTime, SelectionReason


@dataclass(frozen=True, slots=True)
class LogEvent:
    envelope: Envelope
    event: Event

    def subject(self, prefix: str) -> str:
        return f"{prefix}.{self.envelope.stream}.{self.event.kind}"

    @property
    def payload(self) -> bytes:
        return wire_json(self.envelope, self.event)


def caption_text(
    description: str,
    summary: str = "",
    *,
    objects: Sequence[str] = (),
    actions: Sequence[str] = (),
    environment: str = "",
    content_type: str = "real-world footage",
    specific_style: str = "",
    production_quality: str = "professional",
    logos: Sequence[str] = (),
) -> dict[str, Any]:
    """A caption object with every schema field."""
    return {
        "description": description,
        "objects": list(objects),
        "actions": list(actions),
        "environment": environment,
        "content_type": content_type,
        "specific_style": specific_style,
        "production_quality": production_quality,
        "summary": summary,
        "logos": list(logos),
    }


def caption(
    where: Envelope,
    keyframe: int,
    at: float,
    text: dict[str, Any] | None,
    reason: SelectionReason = "cut",
) -> LogEvent:
    """A caption captured at Unix time ``at`` (stream time: ``keyframe`` seconds); None: a
    failed caption."""
    outcome = (
        CaptionOutcome(text, None, 1, 0.5, 0.1, {"prompt": 300, "output": 90})
        if text is not None
        else CaptionOutcome(None, {"reason": "timeout", "detail": "", "excerpt": ""}, 3, 60.0)
    )
    time = FrameTime(keyframe * 25, None, None, float(keyframe), at)
    return LogEvent(where, CaptionEvent(keyframe, time, reason, 40.0, outcome, "test", 0.01))


def logo(
    where: Envelope, alert: AlertKind, brand: str, sightings: Sequence[tuple[int, float]]
) -> LogEvent:
    """A logo alert naming keyframes (seq, captured-at Unix time)."""
    keyframes = tuple(LogoSighting(seq, float(seq), at) for seq, at in sightings)
    return LogEvent(where, LogoEvent(alert, brand, f"{brand} logo", keyframes))


def status(where: Envelope, state: StatusState, at: float, **fields: Any) -> LogEvent:
    """A status event; ``fields``: the state's own (``silent_s`` for ``stalled``, ...)."""
    return LogEvent(where, StatusEvent(state, f"{state} (test)", at, fields))


_PLACES: Final = "studio stadium street beach office kitchen forest harbour station market".split()
_PEOPLE: Final = "anchor reporter crowd player runner chef driver child dog referee".split()
_ACTIONS: Final = "speaking running cheering cooking driving waving jumping walking".split()
_OBJECTS: Final = "desk ball car microphone flag tree bicycle umbrella camera bus".split()
_BRANDS: Final = "Nike Adidas BBC Coca-Cola Shell Visa Puma Heineken".split()
_KINDS: Final = "news sports cooking documentary advertisement".split()


def synthetic_log(
    events: int, streams: int = 4, start_at: float = 1_780_000_000.0, seed: int = 0
) -> Iterator[LogEvent]:
    """``events`` plausible events over ``streams`` streams, one keyframe a second each:
    captions (a cut every few keyframes), a logo alert now and then, a status event rarely."""
    rng = random.Random(seed)
    seqs = [0] * streams
    keyframes = [0] * streams
    for index in range(events):
        lane = index % streams
        where = Envelope(f"cam{lane}", "bench", seqs[lane])
        seqs[lane] += 1
        at = start_at + index / streams
        roll = rng.random()
        if roll < 0.01:
            yield status(where, rng.choice(["live", "paused", "unpaused"]), at)
        elif roll < 0.03:
            brand = rng.choice(_BRANDS)
            yield logo(where, rng.choice(["appeared", "disappeared"]), brand, [(where.seq, at)])
        else:
            reason: SelectionReason = "cut" if rng.random() < 0.3 else "interval"
            yield caption(where, keyframes[lane], at, _random_caption(rng), reason)
            keyframes[lane] += 1


def _random_caption(rng: random.Random) -> dict[str, Any]:
    place, person, action = rng.choice(_PLACES), rng.choice(_PEOPLE), rng.choice(_ACTIONS)
    objects = rng.sample(_OBJECTS, 3)
    kind = rng.choice(_KINDS)
    logos = [f"{rng.choice(_BRANDS)} logo, lower left"] if rng.random() < 0.2 else []
    return caption_text(
        f"A {person} is {action} in a {place} near a {objects[0]} and a {objects[1]}.",
        f"{person.capitalize()} {action} in a {place}.",
        objects=objects,
        actions=[f"{person} {action}"],
        environment=f"{place}, daytime",
        content_type=kind,
        production_quality=rng.choice(["professional", "amateur", "broadcast"]),
        logos=logos,
    )

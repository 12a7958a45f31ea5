"""When the engine falls behind a live stream, the stalest keyframes are dropped before
submission and every drop is reported in order with the captions; nothing vanishes silently."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.base import Generation
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats
from tests.test_sequencer import GOOD


class SlowEngine:
    """Stands in for a model server that is too slow for its input: the point is a chosen,
    steady slowness, which the real CPU engine cannot promise."""

    model_id = "slow"

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        await asyncio.sleep(0.3)
        return Generation(GOOD, "stop", 10, 10, 0.01)

    async def close(self) -> None:
        pass


async def test_live_overload_drops_stalest_keyframes_and_reports_each_drop(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    spec = ClipSpec(shots=30, shot_frames=15, fps=25)  # a cut every 0.6 s of media time
    clip = write_clip(tmp_path / "busy.mp4", spec)
    config = parse_config(
        {
            # A file read as a live feed decodes far faster than real time: an overload.
            # A long reconnect wait: no second pass may start before the stop below, or its
            # keyframes could push first-pass ones out and blur the count (seen in CI).
            "streams": [
                {
                    "id": "busy",
                    "url": str(clip),
                    "live": True,
                    "reconnect_initial_s": 60,
                    "reconnect_max_s": 60,
                }
            ],
            # A live clock is wall time, and the file decodes in well under a second.
            "keyframes": {"min_gap_s": 0.0},
            **engine_and_nats(nats_server.url, "adm"),
            "pipeline": {"max_pending_keyframes": 2, "max_in_flight_per_stream": 1},
        }
    )
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("state") == "reconnecting":  # the "feed" ended once: enough
            runner.request_stop()

    runner = Runner(config, on_event)
    assert await runner.run(nats_server.url, engine=SlowEngine()) == 0
    captions = [e for e in events if e["type"] == "caption"]
    drops = [e for e in events if e.get("state") == "keyframes_dropped"]
    assert drops, "an overloaded live stream must report its drops"
    # Every keyframe of the first pass through the file (its first frame and 29 cuts) is
    # accounted for before the "reconnecting" event: captioned, or reported dropped.
    end = next(i for i, e in enumerate(events) if e.get("state") == "reconnecting")
    captioned = sum(e["type"] == "caption" for e in events[:end])
    dropped = sum(e.get("dropped", 0) for e in events[:end])
    assert captioned + dropped == spec.shots, (captioned, dropped)
    assert [c["keyframe"] for c in captions] == list(range(len(captions)))
    assert [e["seq"] for e in events] == list(range(len(events)))
    # Newer keyframes won: the captions skip ahead instead of trailing the feed.
    assert captions[-1]["frame"]["index"] > captions[len(captions) // 2]["frame"]["index"]

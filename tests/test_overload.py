"""Overload with the real engine: eight live cameras (GStreamer RTSP, each paced in real time)
send more keyframes than the tiny CPU vLLM engine captions; one of them has a higher
priority. It loses no keyframe while the others shed load, every drop reported in order;
nothing is captioned past its deadline and nothing is lost without a word. Its
keyframe-to-event p95 against its p95 with the engine to itself is printed (a speed figure).
nats-server, the cameras and vLLM are real."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from stream.search.rows import unix_time
from tests.conftest import engine_and_nats

# 10 frames/s: the cameras' decoding takes less of the two cores the engine runs on.
SPEC = ClipSpec(shots=30, shot_frames=4, fps=10)  # a cut every 0.4 s, for 12 s
VIP_SPEC = ClipSpec(shots=12, shot_frames=10, fps=10)  # a cut every 1 s, for 12 s
CAMERAS = 8
VIP = "cam0"
DEADLINE_S = 3.0


@dataclass
class Story:
    """One camera's events, each with the time it reached vidcap's event callback, and the
    keyframes its pipeline took in (its stats)."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    keyframes: int = 0

    @property
    def captions(self) -> list[tuple[float, dict[str, Any]]]:
        return [(at, e) for at, e in self.events if e["type"] == "caption"]

    def dropped(self, reason: str | None = None) -> int:
        return sum(
            e["dropped"]
            for _, e in self.events
            if e.get("state") == "keyframes_dropped" and reason in (None, e["reason"])
        )

    def accounted(self, keyframes: int) -> bool:
        """Its playback ended, and each keyframe the pipeline took has its caption or is
        reported past its deadline (those the engine queue dropped never reached it)."""
        ended = any(e.get("state") == "reconnecting" for _, e in self.events)
        return ended and len(self.captions) + self.dropped("deadline") == keyframes

    def latencies(self) -> list[float]:
        """Capture to event, seconds; not the connection's first keyframe (it waits for the
        stream to start)."""
        return [
            at - unix_time(e["frame"]["captured_at"])
            for at, e in self.captions
            if e["selection"]["reason"] != "start"
        ]


async def _run(
    name: str, tiny_model: Path, server: EmbeddedNatsServer, engine: VllmEngine, urls: list[str]
) -> dict[str, Story]:
    # Short captions, one attempt each: a steady time per caption (the tiny model writes
    # random text; what is measured is the queueing around it).
    sections = engine_and_nats(server.url, name.lower(), tiny_model, name, short_captions=True)
    cameras: list[dict[str, Any]] = [
        {
            "id": f"cam{n}",
            "url": url,
            "priority": 10 if n == 0 else 0,
            "max_staleness_s": DEADLINE_S,
            "reconnect_initial_s": 60,  # one playback each: it ends in `reconnecting`
            "reconnect_max_s": 60,
        }
        for n, url in enumerate(urls)
    ]
    keyframes = {"min_gap_s": 0.2, "max_interval_s": 60}
    # Two keyframes at the engine at once, one kept for the top priority: the top camera's
    # keyframes share a batch with at most one other, loaded or not.
    pipeline = {"max_in_flight_total": 2, "priority_reserve": 1}
    config = parse_config(
        {"streams": cameras, "keyframes": keyframes, "pipeline": pipeline, **sections}
    )
    stories = {str(camera["id"]): Story() for camera in cameras}
    runner = Runner(config, lambda event: on_event(event))

    def on_event(event: dict[str, Any]) -> None:
        stories[event["stream"]].events.append((time.time(), event))
        taken = {name: (runner.snapshot(name) or {}).get("keyframes", 0) for name in stories}
        if all(story.accounted(taken[name]) for name, story in stories.items()):
            for name, story in stories.items():
                story.keyframes = taken[name]
            runner.request_stop()

    assert await asyncio.wait_for(runner.run(server.url, engine=engine), 240) == 0
    return stories


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def test_a_priority_stream_keeps_its_latency_while_the_others_shed_load(
    rtsp_server: Callable[[Path], str],
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", SPEC)
    vip_clip = write_clip(tmp_path / "vip.mp4", VIP_SPEC)
    # A warm engine for both runs: the first request of a fresh one is slower.
    await vllm_engine.generate(Image.new("RGB", (SPEC.width, SPEC.height)), "warm-up", 32)
    alone = await _run("ALONE", tiny_model, nats_server, vllm_engine, [rtsp_server(vip_clip)])
    assert alone[VIP].dropped() == 0, "alone, the engine captions every keyframe"
    urls = [rtsp_server(vip_clip)] + [rtsp_server(clip) for _ in range(CAMERAS - 1)]
    loaded = await _run("LOADED", tiny_model, nats_server, vllm_engine, urls)

    report = []
    for name, story in loaded.items():
        events = [e for _, e in story.events]
        assert [e["seq"] for e in events] == list(range(len(events))), f"{name}: not in order"
        captions = [e for _, e in story.captions]
        assert all(c["timing"]["queue_s"] <= DEADLINE_S for c in captions), name
        selected = story.keyframes + story.dropped("engine_behind")
        shots = VIP_SPEC.shots if name == VIP else SPEC.shots
        assert selected >= shots // 2, (
            name,
            selected,
        )  # the camera played (cuts 4 frames apart may merge)
        report.append(f"{name} {len(captions)}/{selected}")
    captioned = sum(len(story.captions) for story in loaded.values())
    selected = sum(story.keyframes + story.dropped("engine_behind") for story in loaded.values())
    unloaded, busy = alone[VIP].latencies(), loaded[VIP].latencies()
    ratio = _p95(busy) / _p95(unloaded)
    print(
        f"\ncaptioned: {', '.join(report)} ({captioned / selected:.0%} of all keyframes)\n"
        f"{VIP} keyframe-to-event p95 {_p95(busy):.2f} s loaded, {_p95(unloaded):.2f} s alone "
        f"({ratio:.2f}x); median {statistics.median(busy):.2f} s, "
        f"{statistics.median(unloaded):.2f} s"
    )
    assert captioned / selected < 0.8, "the engine was not overloaded: the test proves nothing"
    assert loaded[VIP].dropped() == 0, f"{VIP} lost keyframes"
    # The latency ratio is a speed figure: printed above and kept in the README, not asserted
    # (the guide's rule for timed targets). Run alone it measured 1.05-1.28x; inside the full
    # suite, where the session's other servers share the two cores, 1.53-1.70x.

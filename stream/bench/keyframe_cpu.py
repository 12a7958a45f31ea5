"""vidcap's own CPU per keyframe at 720p, outside the model: what each stage of the path from
a decoded frame to its published event costs (process CPU time, so helper threads count),
and, apart, what every frame costs before any keyframe is chosen (decode and selection).

The pictures are real 720p footage (PySceneDetect's ``testvideo.mp4`` from ``../shared/media``
when it is there) and random noise, the worst case for the snapshot JPEG."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import av
import orjson

from engine.captioner import CaptionOutcome
from engine.guard import check_output
from stream.bench.engine_path import video_frames
from stream.bench.snapshots import DEFAULT_MEDIA
from stream.config import KeyframeConfig, NatsConfig
from stream.delivery.events import CaptionEvent, Envelope, wire_json
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.snapshots import encode_jpeg
from stream.keyframes.features import FeatureExtractor
from stream.keyframes.selector import KeyframeSelector
from stream.sample_clip import ClipSpec, write_clip
from stream.sources.frames import FrameTime
from stream.sources.model_picture import ModelScaler

T = TypeVar("T")

FOOTAGE = DEFAULT_MEDIA / "testvideo.mp4"

CAPTION = {
    "description": "A news anchor in a grey suit sits at a glass desk in a bright studio. "
    "Behind her a wall of screens shows a city skyline at dusk.",
    "objects": ["glass desk", "microphone", "video wall", "laptop"],
    "actions": ["anchor speaking to camera"],
    "environment": "TV news studio",
    "content_type": "real-world footage",
    "specific_style": "news broadcast",
    "production_quality": "professional studio",
    "summary": "An anchor presents the evening news.",
    "logos": ["white BBC logo, lower left"],
}


def _per_item_us(items: Sequence[T], work: Callable[[T], object]) -> float:
    started = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - started) / len(items) * 1e6


async def _publish_us(events: list[CaptionEvent]) -> float:
    """Enqueue, serialise and send to a local nats-server (core NATS), all of it."""
    server = EmbeddedNatsServer(jetstream=False)
    server.start()
    try:
        config = NatsConfig(url=server.url, jetstream=False)
        publisher = EventPublisher(await connect(config, server.url), config)
        started = time.process_time()
        for number, event in enumerate(events):
            await publisher.publish(Envelope("bench", "ab12", number), event)
        await publisher.flush(30)
        spent = time.process_time() - started
        await publisher.close()
        return spent / len(events) * 1e6
    finally:
        server.stop()


def footage_frames(count: int, clip: Path = FOOTAGE) -> list[av.VideoFrame]:
    """``count`` decoded frames of ``clip`` (over again if it is shorter); none without it."""
    if not clip.is_file():
        return []
    with av.open(str(clip)) as container:
        frames = list(itertools.islice(container.decode(video=0), count))
    return list(itertools.islice(itertools.cycle(frames), count))


def picture_stages(frames: list[av.VideoFrame], image_size: int) -> list[tuple[str, float]]:
    """µs of CPU per keyframe for the stages that depend on the picture."""
    scale = ModelScaler(image_size)  # a stream's own, as the ingest thread has
    scale(frames[0])  # its swscale contexts
    # Each picture is let go before the next, as a stream's are (a list of them kept the
    # heap full of holes to reuse, and hid the page faults of fresh memory).
    scale_us = _per_item_us(frames, scale)
    pictures = [scale(frame) for frame in frames]
    return [
        ("scale for the model", scale_us),
        ("snapshot JPEG", _per_item_us(pictures, lambda p: encode_jpeg(p.image, 80, p.planes))),
    ]


async def event_stages(keyframes: int) -> list[tuple[str, float]]:
    """µs of CPU per keyframe from the model's text to the event sent."""
    text = orjson.dumps(CAPTION).decode()
    outcome = CaptionOutcome(CAPTION, None, 1, 0.5, 0.1, {"prompt": 300, "output": 90})
    at = FrameTime(250, 250, None, 10.0, time.time())
    events = [CaptionEvent(n, at, "cut", 40.0, outcome, "bench", 0.01) for n in range(keyframes)]
    return [
        (
            "guard (parse, check)",
            _per_item_us([text] * keyframes, lambda t: check_output(t, "stop")),
        ),
        ("event JSON", _per_item_us(events, lambda e: wire_json(Envelope("b", "s", 0), e))),
        ("publish (outbox, send)", await _publish_us(events)),
    ]


def frame_cost_us(frames: int = 250) -> float:
    """µs of CPU per 720p H.264 frame: decode, analysis picture, selector."""
    with tempfile.TemporaryDirectory() as folder:
        spec = ClipSpec(shots=max(1, frames // 50), shot_frames=50, width=1280, height=720)
        clip = write_clip(Path(folder) / "720p.mp4", spec)
        config = KeyframeConfig()
        selector, features = KeyframeSelector(config), FeatureExtractor(config.analysis_width)
        started = time.process_time()
        with av.open(str(clip)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                selector.process_frame(index, index / spec.fps, features(frame))
        return (time.process_time() - started) / (spec.shots * spec.shot_frames) * 1e6


async def print_keyframe_cpu(keyframes: int = 200, image_size: int = 896) -> None:
    inputs = {"footage": footage_frames(keyframes), "noise": video_frames(keyframes)}
    columns = {
        name: picture_stages(frames, image_size) for name, frames in inputs.items() if frames
    }
    shared = await event_stages(keyframes)
    names = [name for name, _ in [*next(iter(columns.values())), *shared]]
    costs = {name: [us for _, us in [*stages, *shared]] for name, stages in columns.items()}
    print(f"\nvidcap's CPU per keyframe outside the model, 720p frames, {keyframes} keyframes")
    if "footage" not in columns:
        print(f"  ({FOOTAGE} not found: noise only, the worst case for the JPEG)")
    print(f"  {'µs per keyframe':<24}" + "".join(f"{column:>10}" for column in costs))
    for row, name in enumerate(names):
        print(f"  {name:<24}" + "".join(f"{us[row]:>10.0f}" for us in costs.values()))
    print(f"  {'total':<24}" + "".join(f"{sum(us):>10.0f}" for us in costs.values()))
    jpeg = names.index("snapshot JPEG")
    print(
        f"  {'without snapshots':<24}"
        + "".join(f"{sum(us) - us[jpeg]:>10.0f}" for us in costs.values())
        + "  (snapshots.enabled: false)"
    )
    frame_us = frame_cost_us()
    print("  (target: at most 2000 µs)")
    print(
        f"  and per frame, before any keyframe is chosen: decode and selection {frame_us:.0f} µs"
        " (x25 per second of 720p25 video); a keyframe costs "
        + ", ".join(f"{sum(us) / frame_us:.2f}x ({name})" for name, us in costs.items())
        + " of that, measured in the same run"
    )

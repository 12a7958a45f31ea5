"""vidcap's captioning path against the same requests sent straight to vLLM's AsyncLLM, and
the cost of structured output, at a few concurrency levels, on one engine.

Same pictures, prompt and sampling in every run. The raw path hands vLLM pictures prepared
beforehand and reads the completions; vidcap's path starts from decoded 720p frames: it scales
each for the model, captions it through the guard (one attempt, so both paths do the same
number of generations), puts it in order through the sequencer and writes its event's JSON.
Throughput is compared in output tokens/s as well as requests/s: the model writes captions
of different lengths from run to run, so tokens/s is the fairer ratio.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from engine.captioner import Captioner, CaptionOutcome
from engine.config import EngineConfig
from engine.vllm_engine import VllmEngine
from stream.delivery.events import CaptionEvent, Envelope, wire_json
from stream.delivery.sequencer import Sequencer
from stream.sources.frames import FrameTime
from stream.sources.model_picture import ModelScaler, model_image


@dataclass(frozen=True, slots=True)
class PathResult:
    requests: int
    seconds: float
    output_tokens: int

    def __add__(self, other: PathResult) -> PathResult:
        return PathResult(
            self.requests + other.requests,
            self.seconds + other.seconds,
            self.output_tokens + other.output_tokens,
        )

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


def video_frames(count: int, width: int = 1280, height: int = 720) -> list[av.VideoFrame]:
    """Distinct decoded-looking frames (yuv420p, as a decoder gives them)."""
    rng = np.random.default_rng(1)
    return [
        av.VideoFrame.from_ndarray(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        for _ in range(count)
    ]


async def _at_most(concurrency: int, jobs: list[Callable[[], Awaitable[None]]]) -> float:
    """Run ``jobs`` with at most ``concurrency`` at once; their wall time."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(gated(job) for job in jobs))
    return time.perf_counter() - started


async def raw_path(
    engine: VllmEngine,
    pictures: list[Image.Image],
    concurrency: int,
    max_tokens: int,
    tag: str,
    structured: bool = True,
) -> PathResult:
    """The requests straight to ``AsyncLLM.generate``: no guard, no order, no events."""
    tokens = 0

    def job(number: int, picture: Image.Image) -> Callable[[], Awaitable[None]]:
        async def generate() -> None:
            nonlocal tokens
            sampling = engine.sampling(max_tokens, structured)
            final = None
            async for output in engine.llm.generate(
                engine.request(picture), sampling, f"raw-{tag}-{number}"
            ):
                final = output
            tokens += len(final.outputs[0].token_ids) if final is not None else 0

        return generate

    jobs = [job(number, picture) for number, picture in enumerate(pictures)]
    return PathResult(len(jobs), await _at_most(concurrency, jobs), tokens)


async def vidcap_path(
    engine: VllmEngine,
    frames: list[av.VideoFrame],
    settings: EngineConfig,
    concurrency: int,
    tag: str,
) -> PathResult:
    """Frame to event JSON as the pipeline does it, at most ``concurrency`` in flight."""
    captioner = Captioner(engine, max_tokens=settings.max_tokens, max_attempts=1, timeout_s=3600)
    sequencer: Sequencer[CaptionEvent] = Sequencer(concurrency)
    scale = ModelScaler(settings.image_size)
    ingest = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-ingest")
    tokens = 0

    async def caption(number: int, frame: av.VideoFrame) -> CaptionEvent:
        # On one thread of its own, as a stream's ingest thread scales its keyframes.
        loop = asyncio.get_running_loop()
        picture = await loop.run_in_executor(ingest, scale, frame)
        outcome: CaptionOutcome = await captioner.caption(picture, f"vidcap-{tag}-{number}")
        at = FrameTime(number, None, None, float(number), time.time())
        return CaptionEvent(number, at, "cut", 1.0, outcome, engine.model_id, 0.0)

    async def submit_all() -> None:
        for number, frame in enumerate(frames):
            await sequencer.submit(functools.partial(caption, number, frame))
        sequencer.close()

    async def publish_in_order() -> None:
        nonlocal tokens
        async for event in sequencer.results():
            wire_json(Envelope("bench", tag, event.keyframe_no), event)
            tokens += event.outcome.tokens.get("output", 0)

    started = time.perf_counter()
    try:
        await asyncio.gather(submit_all(), publish_in_order())
    finally:
        ingest.shutdown()
    return PathResult(len(frames), time.perf_counter() - started, tokens)


async def compare_paths(
    engine: VllmEngine, settings: EngineConfig, levels: list[int], requests: int
) -> None:
    frames = video_frames(requests)
    pictures = [model_image(frame, settings.image_size) for frame in frames]
    print(
        f"\nvidcap's path vs AsyncLLM.generate, {requests} requests per run, "
        "same pictures, prompt and sampling (output tokens/s, the fair ratio, in brackets)"
    )
    print(
        f"{'concurrency':>11} {'raw req/s':>10} {'vidcap req/s':>13} {'ratio':>14} "
        f"{'tok/s schema':>13} {'tok/s free':>11} {'schema/free':>12}"
    )
    for level in levels:
        # raw, vidcap, vidcap, raw: a drift of the machine's speed weighs on both alike.
        raw = await raw_path(engine, pictures, level, settings.max_tokens, f"a{level}")
        ours = await vidcap_path(engine, frames, settings, level, f"a{level}")
        ours += await vidcap_path(engine, frames, settings, level, f"b{level}")
        raw += await raw_path(engine, pictures, level, settings.max_tokens, f"b{level}")
        free = await raw_path(engine, pictures, level, settings.max_tokens, f"f{level}", False)
        print(
            f"{level:>11} {raw.requests_per_s:>10.2f} {ours.requests_per_s:>13.2f} "
            f"{ours.requests_per_s / raw.requests_per_s:>6.2f}x "
            f"[{ours.tokens_per_s / raw.tokens_per_s:.2f}x] "
            f"{raw.tokens_per_s:>13.1f} {free.tokens_per_s:>11.1f} "
            f"{raw.tokens_per_s / free.tokens_per_s:>11.2f}x"
        )
    print(
        "ratio: vidcap / raw, req/s [output tok/s]; schema/free: raw output tok/s with the "
        "caption's JSON schema constraint / without it (< 1: the constraint costs speed)"
    )

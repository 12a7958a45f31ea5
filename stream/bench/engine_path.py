"""vidcap's captioning path against the same requests sent straight to vLLM's AsyncLLM, and
the cost of structured output, at a few concurrency levels, on one engine.

Same pictures, prompt and sampling in every run. The raw path hands vLLM pictures prepared
beforehand and reads the completions; vidcap's path starts from decoded 720p frames: it scales
each for the model, captions it through the guard (one attempt, so both paths do the same
number of generations), puts it in order through the sequencer and writes its event's JSON.
Decoding is greedy during the comparison, so a picture gives the same tokens on both paths
and both do the same work (the sampled temperature made captions of different lengths from
run to run, and the ratio swung 0.85-1.21x). Runs alternate raw, vidcap, vidcap, raw in
several blocks, so a drift of the machine's speed weighs on both alike; each block gives a
ratio, and the table shows their median and range.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from engine.captioner import Captioner, CaptionOutcome
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
    cpu_s: float
    """This process's CPU time (all its threads; vLLM's engine core runs in another)."""

    def __add__(self, other: PathResult) -> PathResult:
        return PathResult(
            self.requests + other.requests,
            self.seconds + other.seconds,
            self.output_tokens + other.output_tokens,
            self.cpu_s + other.cpu_s,
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
    cpu_started = time.process_time()
    seconds = await _at_most(concurrency, jobs)
    return PathResult(len(jobs), seconds, tokens, time.process_time() - cpu_started)


async def vidcap_path(
    engine: VllmEngine,
    frames: list[av.VideoFrame],
    image_size: int,
    max_tokens: int,
    concurrency: int,
    tag: str,
) -> PathResult:
    """Frame to event JSON as the pipeline does it, at most ``concurrency`` in flight."""
    captioner = Captioner(engine, max_tokens=max_tokens, max_attempts=1, timeout_s=3600)
    sequencer: Sequencer[CaptionEvent] = Sequencer(concurrency)
    scale = ModelScaler(image_size)
    ingest = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-ingest")
    tokens = 0

    async def caption(number: int, frame: av.VideoFrame) -> CaptionEvent:
        # On one thread of its own, as a stream's ingest thread scales its keyframes.
        loop = asyncio.get_running_loop()
        picture = await loop.run_in_executor(ingest, scale, frame)
        request_id = f"vidcap-{tag}-{number}"
        outcome: CaptionOutcome = await captioner.caption(picture.image, request_id)
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

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(submit_all(), publish_in_order())
    finally:
        ingest.shutdown()
    cpu_s = time.process_time() - cpu_started
    return PathResult(len(frames), time.perf_counter() - started, tokens, cpu_s)


@dataclass(frozen=True, slots=True)
class Comparison:
    """What both paths are given at every level: the same frames and token budget."""

    frames: list[av.VideoFrame]
    pictures: list[Image.Image]  # the frames as the model gets them, for the raw path
    image_size: int
    max_tokens: int


async def compare_paths(
    engine: VllmEngine,
    image_size: int,
    levels: list[int],
    requests: int,
    max_tokens: int,
    blocks: int = 3,
) -> None:
    frames = video_frames(requests)
    pictures = [model_image(frame, image_size) for frame in frames]
    same = Comparison(frames, pictures, image_size, max_tokens)
    print(
        f"\nvidcap's path vs AsyncLLM.generate, {requests} requests per run, same pictures, "
        f"prompt and structured output, greedy decoding, at most {max_tokens} tokens; "
        f"{blocks} blocks of raw, vidcap, vidcap, raw per level"
    )
    print(
        f"{'concurrency':>11} {'raw req/s':>10} {'vidcap req/s':>13} {'ratio':>6} "
        f"{'median':>7} {'range':>12} {'tokens':>7} {'+CPU ms/req':>12} {'schema/free':>12}"
    )
    sampled, engine.temperature = engine.temperature, 0.0
    try:
        for level in levels:
            await _compare_level(engine, same, level, blocks)
    finally:
        engine.temperature = sampled
    print(
        "ratio: vidcap / raw requests/s over all runs, then the median and range of the "
        "blocks' ratios; tokens: vidcap's output tokens / raw's (1.00: the same work); "
        "+CPU ms/req: this process's CPU per request on vidcap's path minus on the raw path "
        "(vLLM's engine core, the same for both, runs apart); schema/free: raw output tok/s "
        "with the caption's JSON schema constraint / without it (< 1: the constraint costs)"
    )


async def _compare_level(engine: VllmEngine, same: Comparison, level: int, blocks: int) -> None:
    def raw(tag: str, structured: bool = True) -> Awaitable[PathResult]:
        return raw_path(engine, same.pictures, level, same.max_tokens, tag, structured)

    def ours(tag: str) -> Awaitable[PathResult]:
        return vidcap_path(engine, same.frames, same.image_size, same.max_tokens, level, tag)

    raw_all = vidcap_all = PathResult(0, 0.0, 0, 0.0)
    ratios = []
    for block in range(blocks):
        tag = f"{level}-{block}"
        raw_block = await raw(f"a{tag}")
        vidcap_block = await ours(f"a{tag}")
        vidcap_block += await ours(f"b{tag}")
        raw_block += await raw(f"b{tag}")
        ratios.append(vidcap_block.requests_per_s / raw_block.requests_per_s)
        raw_all, vidcap_all = raw_all + raw_block, vidcap_all + vidcap_block
    free = await raw(f"f{level}", structured=False)
    extra_cpu_ms = (vidcap_all.cpu_s - raw_all.cpu_s) / raw_all.requests * 1000
    print(
        f"{level:>11} {raw_all.requests_per_s:>10.2f} {vidcap_all.requests_per_s:>13.2f} "
        f"{vidcap_all.requests_per_s / raw_all.requests_per_s:>5.2f}x "
        f"{statistics.median(ratios):>6.2f}x {min(ratios):>5.2f}-{max(ratios):.2f}x "
        f"{vidcap_all.output_tokens / raw_all.output_tokens:>7.2f} {extra_cpu_ms:>12.1f} "
        f"{raw_all.tokens_per_s / free.tokens_per_s:>11.2f}x"
    )

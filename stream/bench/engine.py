"""`vidcap bench engine`: requests/s, latency and time to first token per concurrency level.

The same command runs here on the CPU with the tiny model and, unchanged, on a GPU host with
the real one (`--model wynd/wynd-vidcap-12b --quantization fp8 --kv-cache-dtype fp8`).
Every request is a full guarded caption (retries included), as the pipeline would make it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.captioner import Captioner, CaptionOutcome
from engine.config import EngineConfig
from engine.factory import start_engine
from engine.vllm_engine import VllmEngine
from stream.bench.engine_path import compare_paths
from stream.bench.keyframe_cpu import print_keyframe_cpu


@dataclass(frozen=True, slots=True)
class LevelResult:
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]
    first_tokens: list[float]
    ok: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def frames(count: int, size: int) -> list[Image.Image]:
    """Distinct random pictures: live frames never repeat, so no cache may help."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (size * 9 // 16, size, 3), dtype=np.uint8))
        for _ in range(count)
    ]


async def run_level(
    captioner: Captioner, images: list[Image.Image], concurrency: int, tag: str
) -> LevelResult:
    """``len(images)`` requests, at most ``concurrency`` in flight at any time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    outcomes: list[CaptionOutcome] = []

    async def one(n: int, image: Image.Image) -> None:
        async with gate:
            started = time.perf_counter()
            outcomes.append(await captioner.caption(image, f"bench-{tag}-{n}"))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(n, image) for n, image in enumerate(images)))
    seconds = time.perf_counter() - started
    first = [o.first_token_s for o in outcomes if o.first_token_s is not None]
    return LevelResult(
        concurrency, len(images), seconds, latencies, first, sum(o.ok for o in outcomes)
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def bench_engine(
    settings: EngineConfig,
    levels: list[int],
    requests: int,
    compared: list[int],
    compare_tokens: int = 128,
) -> int:
    engine = await start_engine(settings)
    captioner = Captioner(
        engine,
        max_tokens=settings.max_tokens,
        max_attempts=settings.max_attempts,
        timeout_s=settings.request_timeout_s,
    )
    try:
        await run_level(captioner, frames(2, 640), 2, "warmup")  # compile, prefix cache
        print(f"engine: {engine.model_id}; {requests} requests per level; guarded captions")
        print(
            f"{'concurrency':>11} {'req/s':>7} {'vs c=1':>7} {'p50 s':>7} {'p99 s':>7} "
            f"{'TTFT p50':>9} {'ok':>6}"
        )
        base = None
        for level in levels:
            result = await run_level(captioner, frames(requests, 640), level, f"c{level}")
            base = base or result.throughput
            print(
                f"{level:>11} {result.throughput:7.2f} {result.throughput / base:6.2f}x "
                f"{percentile(result.latencies, 50):7.2f} {percentile(result.latencies, 99):7.2f} "
                f"{percentile(result.first_tokens, 50):9.3f} {result.ok:>3}/{result.requests}"
            )
        if compared and isinstance(engine, VllmEngine):
            await compare_paths(engine, settings.image_size, compared, requests, compare_tokens)
        await print_keyframe_cpu(image_size=settings.image_size)
    finally:
        await engine.close()
    return 0

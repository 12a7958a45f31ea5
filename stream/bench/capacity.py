"""`vidcap bench capacity`: streams per engine at a target p95 latency.

Two measurements, one answer: the keyframe rate vidcap's selector really produces on real
footage (heartbeat on, as for a live stream), and the engine's guarded-caption throughput and
p95 latency per concurrency level. Streams per engine = the best throughput whose p95 meets
the target, divided by one stream's keyframe rate. The same command runs on a GPU host with
the real checkpoint (`--model ... --quantization fp8 --kv-cache-dtype fp8`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.captioner import Captioner
from engine.config import EngineConfig
from engine.factory import start_engine
from stream.bench.engine import LevelResult, frames, percentile, run_level
from stream.config import KeyframeConfig
from stream.keyframes.scan import detect_scenes


@dataclass(frozen=True, slots=True)
class ClipRate:
    name: str
    seconds: float
    keyframes: int
    """Chosen after the first frame: a live stream's one ``start`` keyframe would weigh on
    a short clip's rate as it never does on an hour of video."""

    @property
    def per_hour(self) -> float:
        return self.keyframes / self.seconds * 3600


def keyframe_rates(clips: list[Path], config: KeyframeConfig) -> list[ClipRate]:
    rates = []
    for clip in clips:
        report = detect_scenes(clip, config, heartbeat=True)
        seconds = report.frames / report.fps if report.fps else 0.0
        if seconds > 0:
            later = [s for s in report.selections if s.reason != "start"]
            rates.append(ClipRate(clip.name, seconds, len(later)))
    return rates


def streams_at(level: LevelResult, per_stream_s: float, target_p95_s: float) -> float | None:
    """How many streams this level serves, or None when its p95 misses the target."""
    if percentile(level.latencies, 95) > target_p95_s:
        return None
    return level.throughput / per_stream_s


async def bench_capacity(
    settings: EngineConfig,
    clips: list[Path],
    levels: list[int],
    requests: int,
    target_p95_s: float,
) -> int:
    config = KeyframeConfig()
    rates = keyframe_rates(clips, config)
    if not rates:
        print("no readable clips: give --media with video files")
        return 1
    print("keyframes per stream-hour on real footage (selector defaults, heartbeat on, start")
    print("keyframe left out):")
    for rate in rates:
        print(
            f"  {rate.name:<28} {rate.seconds:7.1f} s {rate.keyframes:4} kf {rate.per_hour:6.0f}/h"
        )
    seconds = sum(r.seconds for r in rates)
    # A live stream sends at least the heartbeat's keyframe every max_interval_s.
    pooled = max(sum(r.keyframes for r in rates) / seconds, 1 / config.max_interval_s)
    busiest = max(pooled, *(r.keyframes / r.seconds for r in rates))
    print(f"  pooled: {pooled * 3600:.0f}/h over {seconds:.0f} s; busiest {busiest * 3600:.0f}/h")

    engine = await start_engine(settings)
    captioner = Captioner(engine, max_tokens=settings.max_tokens, timeout_s=3600)
    try:
        await run_level(captioner, frames(2, 640), 2, "warmup")
        print(
            f"\nengine {engine.model_id}, {requests} guarded captions per level, "
            f"target p95 {target_p95_s:g} s"
        )
        print(f"{'concurrency':>11} {'req/s':>7} {'p95 s':>7} {'streams':>17} {'(busiest)':>10}")
        best: tuple[float, float] = (0.0, 0.0)
        for concurrency in levels:
            level = await run_level(
                captioner, frames(requests, 640), concurrency, f"cap{concurrency}"
            )
            pooled_streams = streams_at(level, pooled, target_p95_s)
            busiest_streams = streams_at(level, busiest, target_p95_s)
            shown = "misses p95" if pooled_streams is None else f"{pooled_streams:17.1f}"
            shown_busy = "" if busiest_streams is None else f"{busiest_streams:10.1f}"
            print(
                f"{concurrency:>11} {level.throughput:7.2f} {percentile(level.latencies, 95):7.2f} "
                f"{shown:>17} {shown_busy:>10}"
            )
            if pooled_streams is not None and pooled_streams > best[0]:
                best = (pooled_streams, busiest_streams or 0.0)
    finally:
        await engine.close()
    print(
        f"\nstreams per engine at p95 <= {target_p95_s:g} s: {best[0]:.1f} at the pooled rate, "
        f"{best[1]:.1f} if every stream cut like the busiest clip"
    )
    return 0

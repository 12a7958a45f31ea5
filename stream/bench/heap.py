"""`vidcap bench heap`: the garbage collector's longest pause in a process serving vLLM, with
the start-up objects in its sight and frozen out of it (engine/heap.py)."""

from __future__ import annotations

import gc
import statistics

from engine.captioner import Captioner
from engine.config import EngineConfig
from engine.factory import in_daemon_thread, start_vllm_engine
from engine.heap import freeze_long_lived, full_collection_s
from stream.bench.engine import frames, run_level

PASSES = 5


async def bench_heap(settings: EngineConfig) -> int:
    engine = await in_daemon_thread(start_vllm_engine, settings)  # not frozen, unlike start_engine
    try:
        captioner = Captioner(engine, max_tokens=64, max_attempts=1)
        await run_level(captioner, frames(4, 640), 4, "heap")  # the serving path's objects too
        print(f"engine: {engine.model_id}; one full collection, {PASSES} passes each")
        print(f"{'heap':>12} {'walked':>9} {'frozen':>9} {'median ms':>10} {'max ms':>8}")
        _report("as started", [full_collection_s() for _ in range(PASSES)])
        freeze_long_lived()
        _report("frozen", [full_collection_s() for _ in range(PASSES)])
        gc.unfreeze()
    finally:
        await engine.close()
    return 0


def _report(label: str, seconds: list[float]) -> None:
    median, longest = statistics.median(seconds) * 1000, max(seconds) * 1000
    walked, frozen = len(gc.get_objects()), gc.get_freeze_count()
    print(f"{label:>12} {walked:>9} {frozen:>9} {median:10.1f} {longest:8.1f}")

"""A dead vLLM engine fails every waiter promptly and says so; nothing hangs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from engine.captioner import Captioner
from engine.factory import start_vllm_engine
from tests.conftest import kill_tree, tiny_engine_config

PROMPT_FAILURE_S = 30.0


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))


IN_FLIGHT_DEADLINE_S = 60.0


def engine_cores() -> set[int]:
    return {
        p.pid
        for p in psutil.Process(os.getpid()).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    }


async def test_killing_the_engine_core_fails_waiters_promptly(tiny_model: Path) -> None:
    others = engine_cores()  # e.g. the session's shared engine: must survive this test
    engine = start_vllm_engine(tiny_engine_config(tiny_model, max_num_seqs=4))
    captioner = Captioner(engine, max_tokens=512, max_attempts=3, timeout_s=300)
    try:
        before = await captioner.caption(picture(0), "before")
        assert before.tokens["output"] > 0 and 1 <= before.attempts <= 3  # the engine serves
        in_flight = [asyncio.create_task(captioner.caption(picture(n), f"w{n}")) for n in range(4)]
        # Kill only once all four are inside the engine (not after a guessed delay).
        for _ in range(int(IN_FLIGHT_DEADLINE_S / 0.01)):
            if engine.requests_in_flight == len(in_flight):
                break
            await asyncio.sleep(0.01)
        assert engine.requests_in_flight == len(in_flight), "the requests never reached vLLM"
        cores = engine_cores() - others
        assert len(cores) == 1, (cores, others)
        killed_at = time.monotonic()
        for pid in cores:
            kill_tree(pid)  # the core and its worker process, which would outlive it
        outcomes = await asyncio.wait_for(asyncio.gather(*in_flight), PROMPT_FAILURE_S)
        waited = time.monotonic() - killed_at
        unfinished = [o for o in outcomes if not o.ok]
        assert unfinished, "every request finished before the kill; nothing was tested"
        assert all(o.error and o.error["reason"] == "engine_dead" for o in unfinished), outcomes
        after = await asyncio.wait_for(captioner.caption(picture(9), "after"), 5)
        assert after.error is not None and after.error["reason"] == "engine_dead"
        assert waited < PROMPT_FAILURE_S
    finally:
        await engine.close()

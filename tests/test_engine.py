"""The real vLLM engine (CPU, tiny model): guarded captions, concurrency, deadlines, abort."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import psutil
from PIL import Image

from engine.captioner import Captioner
from engine.factory import CPU_KV_CACHE_BYTES, memory_args
from engine.schema import validate_caption
from engine.vllm_engine import VllmEngine, engine_args


def frame(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


async def test_concurrent_requests_each_get_a_valid_caption_or_explicit_failure(
    vllm_engine: VllmEngine,
) -> None:
    captioner = Captioner(vllm_engine, max_tokens=512, max_attempts=3, timeout_s=120)
    outcomes = await asyncio.gather(*(captioner.caption(frame(n), f"c{n}") for n in range(8)))
    for outcome in outcomes:
        if outcome.ok:
            assert outcome.caption is not None
            validate_caption(outcome.caption)
            assert outcome.tokens["prompt"] > 0 and outcome.tokens["output"] > 0
        else:
            assert outcome.error is not None and outcome.error["reason"]
    assert sum(o.ok for o in outcomes) >= 1
    assert vllm_engine.requests_in_flight == 0


async def test_timeout_aborts_the_request_and_the_engine_keeps_serving(
    vllm_engine: VllmEngine,
) -> None:
    hurried = Captioner(vllm_engine, max_tokens=512, max_attempts=3, timeout_s=0.05)
    outcome = await hurried.caption(frame(100), "hurried")
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["reason"] == "timeout" and outcome.attempts == 1
    await asyncio.sleep(0.5)
    assert vllm_engine.requests_in_flight == 0  # aborted inside vLLM, not left running
    patient = Captioner(vllm_engine, max_tokens=512, max_attempts=3, timeout_s=120)
    served = await patient.caption(frame(101), "patient")
    # The random-weight model's output may be rejected (retried), but the engine answers:
    # tokens come out and no try times out.
    assert served.tokens["output"] > 0 and 1 <= served.attempts <= 3
    assert served.error is None or served.error["reason"] != "timeout"


async def test_truncated_output_is_retried_then_reported(vllm_engine: VllmEngine) -> None:
    starved = Captioner(vllm_engine, max_tokens=16, max_attempts=2, timeout_s=120)
    outcome = await starved.caption(frame(7), "starved")
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["reason"] == "truncated" and outcome.attempts == 2
    assert outcome.error["excerpt"].startswith('{"description":')


async def test_a_ctrl_c_to_the_process_group_leaves_the_engine_serving(
    vllm_engine: VllmEngine,
) -> None:
    """A terminal's Ctrl-C signals vidcap's whole process group, the engine's processes too.
    vLLM's engine core exits on SIGINT: vidcap's drain then failed every caption in flight
    `engine_dead` and exited 1 (found by a fresh-clone trial). Here the engine's processes get
    the SIGINT the group would; they go on serving."""
    engine = _engine_processes()
    assert engine, "no vLLM engine process under this one"
    for process in engine:
        process.send_signal(signal.SIGINT)
    await asyncio.sleep(1.0)
    captioner = Captioner(vllm_engine, max_tokens=512, max_attempts=3, timeout_s=120)
    served = await captioner.caption(frame(200), "after-ctrl-c")
    assert served.tokens["output"] > 0, served.error
    assert served.error is None or served.error["reason"] != "engine_dead", served.error
    assert all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in engine)


def _engine_processes() -> list[psutil.Process]:
    """The in-process engine's: vLLM's engine core started by this process, and its workers
    (not those of the suite's `vllm serve`, a child of another process)."""
    found = []
    for child in psutil.Process(os.getpid()).children():
        if "EngineCore" in child.name():
            found += [child, *child.children(recursive=True)]
    return found


def test_fp8_and_batching_settings_pass_straight_to_vllm() -> None:
    args = engine_args(
        "wynd/wynd-vidcap-12b",
        quantization="fp8",
        kv_cache_dtype="fp8",
        max_num_seqs=32,
        max_num_batched_tokens=16384,
        max_model_len=8192,
    )
    assert args["quantization"] == "fp8" and args["kv_cache_dtype"] == "fp8"
    assert args["max_num_seqs"] == 32 and args["max_num_batched_tokens"] == 16384
    assert args["enable_prefix_caching"] is True and args["mm_processor_cache_gb"] == 0
    from vllm.engine.arg_utils import AsyncEngineArgs

    AsyncEngineArgs(**args)  # every key is a real vLLM engine argument


def test_cpu_engine_asks_for_a_fixed_kv_cache_not_a_share_of_ram() -> None:
    # A share of RAM is computed per NUMA node minus the worker's own size: on a 10 GiB node a
    # 0.1 share came out negative and the engine refused to start.
    assert memory_args(None, {}) == {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}
    assert memory_args(0.5, {}) == {"gpu_memory_utilization": 0.5}
    assert memory_args(None, {"kv_cache_memory_bytes": 1 << 28}) == {}

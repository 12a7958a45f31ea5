"""Build the configured engine. 'tiny' means a locally built random-weight checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client

from engine.base import CaptionEngine
from engine.cache import cache_dir
from engine.config import EngineConfig
from engine.errors import EngineSettingsError
from engine.heap import freeze_long_lived
from engine.vllm_engine import VllmEngine, engine_args

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"
T = TypeVar("T")


CPU_KV_CACHE_BYTES = 1 << 30


def memory_args(gpu_memory_utilization: float | None, extra: dict[str, Any]) -> dict[str, Any]:
    """How much memory vLLM takes: a share of the GPU, or on the CPU a fixed KV cache.

    On the CPU, vLLM reads the share as RAM of the first NUMA node minus its worker's own
    resident size; on a node of 10 GiB a 0.1 share came out negative (the worker alone held
    1.1 GiB) and the engine refused to start, so a fixed size is asked for instead."""
    from vllm.platforms import current_platform

    if gpu_memory_utilization is not None:
        return {"gpu_memory_utilization": gpu_memory_utilization}
    if current_platform.is_cpu() and "kv_cache_memory_bytes" not in extra:
        return {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}
    return {}  # vLLM's own default: 0.9 of the GPU


def resolve_model(model: str) -> str:
    if model != TINY_MODEL:
        return model
    from engine.tiny_model import build_tiny_model

    logger.warning(
        "engine.model is 'tiny': a random-weight Gemma 3 built locally. Its captions are "
        "meaningless; set engine.model to a real checkpoint (e.g. wynd/wynd-vidcap-12b) on a GPU."
    )
    return str(build_tiny_model(cache_dir() / "tiny-gemma3"))


@dataclass(frozen=True, slots=True)
class WorkerRoute:
    """Where kind 'nats' sends its requests: the connection and the workers' subject."""

    client: Client
    subject: str


async def start_engine(settings: EngineConfig, workers: WorkerRoute | None = None) -> CaptionEngine:
    """The configured engine; vLLM's start blocks for tens of seconds, before any stream.

    Kind 'nats' needs ``workers``: its requests go over that connection. What start-up built
    (imports, vLLM's front end) is frozen out of the collector's full passes afterwards."""
    engine = await _build_engine(settings, workers)
    freeze_long_lived()
    return engine


async def _build_engine(settings: EngineConfig, workers: WorkerRoute | None) -> CaptionEngine:
    if settings.kind == "nats":
        from engine.nats_engine import NatsEngine

        if workers is None:
            raise ValueError("engine.kind 'nats' needs a NATS connection to reach workers")
        return NatsEngine(
            workers.client,
            workers.subject,
            settings.model_id or settings.model,
            settings.worker_timeout_s,
            settings.worker_attempts,
        )
    if settings.kind == "openai":
        from engine.openai_engine import OpenAIEngine

        assert settings.url is not None
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return OpenAIEngine(
            settings.url,
            settings.model,
            api_key=key,
            temperature=settings.temperature,
            stop=settings.stop,
            max_connections=settings.max_connections,
            model_id=settings.model_id,
        )
    # In a thread, so the loop goes on answering (/healthz) and signals act during the load.
    return await in_daemon_thread(start_vllm_engine, settings)


async def in_daemon_thread(function: Callable[[EngineConfig], T], settings: EngineConfig) -> T:
    """``function(settings)`` on a daemon thread. Cancelling stops only the wait: the thread
    cannot be interrupted, but being a daemon it does not hold up exit (and vLLM's processes
    die with vidcap through the reaper)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result, error = None, None
        try:
            result = function(settings)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="engine-start", daemon=True).start()
    return await done


def check_quantization(name: str | None) -> None:
    """A quantization vLLM does not know fails here, not after the model has loaded."""
    if name is None:
        return
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    if name not in QUANTIZATION_METHODS:
        near = difflib.get_close_matches(name, QUANTIZATION_METHODS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise EngineSettingsError(f"engine.quantization {name!r} is not one vLLM knows{hint}")


def check_model_path(model: str) -> None:
    """A local path that is not there fails here, in one line (vLLM reads it as a Hugging Face
    id and ends in a long traceback)."""
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        raise EngineSettingsError(
            f"engine.model {model!r} does not exist (a local checkpoint folder, or a Hugging "
            "Face id such as wynd/wynd-vidcap-12b)"
        )


def start_vllm_engine(settings: EngineConfig) -> VllmEngine:
    """Start vLLM in process (blocking: tens of seconds; before any stream starts)."""
    check_quantization(settings.quantization)
    check_model_path(settings.model)
    model = resolve_model(settings.model)
    args = engine_args(
        model,
        dtype=settings.dtype,
        quantization=settings.quantization,
        kv_cache_dtype=settings.kv_cache_dtype,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_model_len=settings.max_model_len,
        seed=settings.seed,
        scheduling_policy=settings.scheduling_policy,
        extra={
            **memory_args(settings.gpu_memory_utilization, settings.engine_args),
            **settings.engine_args,
        },
    )
    model_id = settings.model_id or settings.model.rstrip("/").rsplit("/", 1)[-1]
    logger.info("starting vLLM engine for %s", model)
    try:
        return VllmEngine.start(args, model_id, settings.temperature, settings.stop)
    except (OSError, ValueError) as exc:  # vLLM's own checks: the model, the settings
        logger.debug("the engine did not start", exc_info=True)
        said = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise EngineSettingsError(
            f"engine.model {settings.model!r}: vLLM could not start it: {said[:400]}"
        ) from None

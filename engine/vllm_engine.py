"""The in-process vLLM engine: AsyncLLM, continuous batching, structured JSON output."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from typing import Any

from PIL import Image

from engine.base import Generation
from engine.errors import EngineDeadError, EngineError
from engine.prompts import SYSTEM_PROMPT, USER_PROMPT
from engine.reaper import Reaper
from engine.schema import CAPTION_SCHEMA

logger = logging.getLogger(__name__)


def engine_args(
    model: str,
    *,
    dtype: str = "auto",
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 8192,
    max_model_len: int = 4096,
    seed: int | None = None,
    scheduling_policy: str = "fcfs",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The vLLM engine arguments vidcap uses; FP8 settings pass through unchanged."""
    args: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "quantization": quantization,
        "kv_cache_dtype": kv_cache_dtype,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "max_model_len": max_model_len,
        # The fixed prompt text precedes the image, so every request shares its prefix.
        "enable_prefix_caching": True,
        # Live frames never repeat: caching processed images only costs memory.
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {"image": 1},
        # Engine-level whitespace ban: the per-request flag did not take effect (notes).
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        "disable_log_stats": False,  # its Prometheus metrics, served on /metrics
        # No "Loading safetensors checkpoint shards" bar on vidcap's terminal (its lines
        # about the load are in vLLM's log).
        "use_tqdm_on_load": False,
        "scheduling_policy": scheduling_policy,
    }
    if seed is not None:
        args["seed"] = seed
    args.update(extra or {})
    return args


@contextmanager
def _deaf_to_ctrl_c() -> Iterator[None]:
    """Processes started in this block, vLLM's engine core and (through it) its workers, have
    SIGINT blocked: children inherit the starting thread's signal mask, spawned or forked. A
    terminal's Ctrl-C goes to vidcap's whole process group, and vLLM's engine core stops on
    it, failing the captions in flight that vidcap was about to drain; vidcap closes the
    engine itself after them (vLLM stops its processes with SIGTERM, which stays open)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class VllmEngine:
    """CaptionEngine over vLLM's AsyncLLM. All streams share one instance."""

    def __init__(self, llm: Any, prompt: str, model_id: str, temperature: float, stop: list[str]):
        self._llm = llm
        self._prompt = prompt
        self.model_id = model_id
        self.temperature = temperature
        """Read per request: a change applies to the next one (benchmarks decode greedily)."""
        self._stop = list(stop)
        self._reaper: Reaper | None = None
        self._priority_scheduling = False

    @classmethod
    def start(
        cls, args: dict[str, Any], model_id: str, temperature: float, stop: list[str]
    ) -> VllmEngine:
        # No local may hold the AsyncLLM: this frame outlives the call (seen here), and close()
        # must drop the last reference so vLLM's __del__ runs before interpreter exit.
        reaper = Reaper()  # before vLLM starts its processes: they die with vidcap
        # Before the block below, and unmarked (the reaper would end it with the engine):
        # multiprocessing's resource tracker, started on the first spawn, unblocks SIGINT in
        # the thread that starts it, which would undo _deaf_to_ctrl_c.
        resource_tracker.ensure_running()
        try:
            with reaper.marking(), _deaf_to_ctrl_c():
                engine = cls(_new_async_llm(args), "", model_id, temperature, stop)
        except BaseException:
            reaper.close()
            raise
        engine._reaper = reaper
        engine._priority_scheduling = args.get("scheduling_policy") == "priority"
        engine._prompt = render_prompt(getattr(engine._llm, "tokenizer", None), args["model"])
        return engine

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        from vllm.v1.engine.exceptions import EngineDeadError as VllmDeadError

        if self._llm is None:
            raise EngineDeadError("vLLM engine is closed")
        if self._llm.errored:
            raise EngineDeadError(f"vLLM engine is dead: {self._llm.dead_error}")
        request = self.request(image)
        submitted = time.monotonic()
        first_token_s: float | None = None
        final = None
        try:
            # Cancelling this loop makes vLLM abort the request (generate() catches it).
            # vLLM serves lower values first; vidcap's higher priorities come first.
            ordering = {"priority": -priority} if self._priority_scheduling else {}
            sampling = self.sampling(max_tokens)
            async for output in self._llm.generate(request, sampling, request_id, **ordering):
                if first_token_s is None and output.outputs and output.outputs[0].token_ids:
                    first_token_s = time.monotonic() - submitted
                final = output
        except VllmDeadError as exc:
            raise EngineDeadError(f"vLLM engine died: {exc}") from exc
        except (asyncio.CancelledError, EngineError):
            raise
        except Exception as exc:
            raise EngineError(f"vLLM request {request_id} failed: {exc!r}") from exc
        if final is None or not final.outputs:
            raise EngineError(f"vLLM request {request_id} returned no output")
        completion = final.outputs[0]
        return Generation(
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=len(final.prompt_token_ids or ()),
            output_tokens=len(completion.token_ids),
            first_token_s=first_token_s,
        )

    @property
    def llm(self) -> Any:
        """vLLM's AsyncLLM (for `vidcap bench engine`: the same requests without vidcap)."""
        return self._llm

    def request(self, image: Image.Image) -> dict[str, Any]:
        """vLLM's prompt for one keyframe: the rendered canonical prompts and the image."""
        return {"prompt": self._prompt, "multi_modal_data": {"image": image}}

    def sampling(self, max_tokens: int, structured: bool = True) -> Any:
        """vidcap's sampling; ``structured``: decoding constrained to the caption's schema."""
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        return SamplingParams(
            temperature=self.temperature,
            max_tokens=max_tokens,
            stop=self._stop or None,
            # Keep the stop string, so "}\n" leaves a complete object for the guard to judge.
            include_stop_str_in_output=True,
            structured_outputs=StructuredOutputsParams(json=CAPTION_SCHEMA) if structured else None,
        )

    @property
    def requests_in_flight(self) -> int:
        return int(self._llm.get_num_unfinished_requests())

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        llm.shutdown()
        # Let AsyncLLM.__del__ run now, while modules are alive, not at interpreter exit.
        del llm
        gc.collect()
        if self._reaper is not None:
            self._reaper.close()


def _new_async_llm(args: dict[str, Any]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))


def render_prompt(tokenizer: Any, model: str) -> str:
    """The canonical prompts through the model's chat template: fixed text, then the image."""
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": USER_PROMPT}, {"type": "image"}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # vLLM adds BOS when it tokenizes; the template's own BOS would make it twice.
    bos = getattr(tokenizer, "bos_token", None)
    return text[len(bos) :] if bos and text.startswith(bos) else text

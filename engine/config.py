"""The engine's configuration (the ``engine:`` section of vidcap's config file)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["vllm", "openai", "nats"] = "vllm"
    """vllm: in-process AsyncLLM. openai: a remote OpenAI-compatible server (vllm serve).
    nats: `vidcap worker`s serving over the configured NATS (scale-out)."""
    model: str = "tiny"
    """Checkpoint path or hub id (openai: the served model name). 'tiny' builds a
    random-weight Gemma 3 locally (demo/tests)."""
    url: str | None = None
    """openai: the server's base URL, e.g. http://gpu-host:8000/v1."""
    api_key: SecretStr | None = None
    """openai: bearer token (use ${ENV})."""
    max_connections: int = Field(64, ge=1, le=4096)
    """openai: pooled HTTP connections (requests in flight at once)."""
    worker_timeout_s: float = Field(20.0, gt=0, le=3600)
    """nats: how long one try waits for a worker's reply before it goes to another worker.
    A third of ``request_timeout_s``, so the tries fit in a keyframe's deadline (at 60 s, a
    killed worker's keyframes timed out before a second try could go)."""
    worker_attempts: int = Field(3, ge=1, le=20)
    """nats: tries per request (a worker that died mid-request costs one)."""
    model_id: str | None = None
    """Name reported in events; default: the model path's last component."""
    dtype: str = "auto"
    quantization: str | None = None
    """e.g. 'fp8' on an H100; passed to vLLM unchanged."""
    kv_cache_dtype: str = "auto"
    """e.g. 'fp8' on an H100; passed to vLLM unchanged."""
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    """vllm: ``priority`` lets streams' ``priority`` order requests inside vLLM too (set for
    you when a configured stream has a priority); fcfs: in arrival order."""
    max_num_seqs: int = Field(16, ge=1, le=1024)
    max_num_batched_tokens: int = Field(8192, ge=256)
    max_model_len: int = Field(4096, ge=256)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    """Share of GPU memory vLLM may use; default 0.9. Unset on the CPU backend: vidcap asks for
    a fixed 1 GiB KV cache there (engine_args.kv_cache_memory_bytes changes it)."""
    temperature: float = Field(0.1, ge=0, le=2)
    max_tokens: int = Field(512, ge=16, le=8192)
    stop: list[str] = Field(default_factory=list)
    """Optional stop strings, e.g. ['}\\n']; the guard still checks every output."""
    request_timeout_s: float = Field(60.0, gt=0, le=3600)
    max_attempts: int = Field(3, ge=1, le=10)
    """Tries per keyframe before a failure event is published."""
    image_size: int = Field(896, ge=32, le=4096)
    """Frames are resized on our side so their longer side is at most this."""
    seed: int | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Further vLLM engine arguments, passed through unchanged."""

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EngineConfig:
        if self.kind == "openai" and not self.url:
            raise ValueError("engine.url is required when engine.kind is 'openai'")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"engine.url must be http(s)://host[:port]/..., not {self.url!r}")
        return self

    @model_validator(mode="after")
    def _batch_fits(self) -> EngineConfig:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_num_seqs ({self.max_num_seqs})"
            )
        return self

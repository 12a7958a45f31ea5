"""The OpenAI-compatible engine against a real `vllm serve` (vLLM's API server, CPU, tiny model)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.captioner import Captioner
from engine.openai_engine import OpenAIEngine
from engine.schema import validate_caption
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec
from tests.conftest import free_port


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8))


async def test_concurrent_captions_over_http(vllm_server: str) -> None:
    engine = OpenAIEngine(vllm_server, "tiny-gemma3", temperature=0.1)
    captioner = Captioner(engine, max_tokens=512, max_attempts=3, timeout_s=120)
    try:
        outcomes = await asyncio.gather(*(captioner.caption(picture(n), f"h{n}") for n in range(6)))
    finally:
        await engine.close()
    for outcome in outcomes:
        if outcome.ok:
            assert outcome.caption is not None
            validate_caption(outcome.caption)
            assert outcome.tokens["prompt"] > 0
        else:
            assert outcome.error is not None and outcome.error["reason"]
    assert sum(o.ok for o in outcomes) >= 1


async def test_unreachable_server_gives_an_explicit_failure() -> None:
    engine = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "tiny-gemma3")
    captioner = Captioner(engine, max_attempts=2, timeout_s=30)
    try:
        outcome = await captioner.caption(picture(0), "nowhere")
    finally:
        await engine.close()
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["reason"] == "engine_error"
    assert "ClientConnectorError" in outcome.error["detail"]


async def test_pipeline_with_the_http_engine(
    vllm_server: str, sample_clip: Path, clip_spec: ClipSpec, nats_server: EmbeddedNatsServer
) -> None:
    config = parse_config(
        {
            "streams": [{"id": "remote", "url": str(sample_clip)}],
            "engine": {"kind": "openai", "url": vllm_server, "model": "tiny-gemma3"},
            "nats": {"url": nats_server.url, "subject_prefix": "http", "jetstream": False},
        }
    )
    seen: list[dict[str, Any]] = []
    assert await Runner(config, seen.append).run(nats_server.url) == 0
    captions = [e for e in seen if e["type"] == "caption"]
    assert [c["frame"]["index"] for c in captions] == clip_spec.cut_frames
    assert all(c["model"] == "tiny-gemma3" for c in captions)
    assert [e["seq"] for e in seen] == list(range(len(seen)))

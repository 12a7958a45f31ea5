"""`vidcap demo`: the whole product on one machine with no GPU and no download.

A generated clip with known cuts -> keyframes -> the real vLLM engine with a tiny random-weight
Gemma 3 on the CPU -> guarded JSON -> embedded NATS/JetStream; a subscriber prints what NATS
delivers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from engine.cache import cache_dir
from stream.cli import announce
from stream.config import Config, parse_config
from stream.delivery.publisher import connect
from stream.runner import Runner, nats_url
from stream.sample_clip import ClipSpec, write_clip
from stream.tail import format_event

BANNER = """\
vidcap demo: the engine is a TINY RANDOM-WEIGHT Gemma 3 built on this machine, so the captions
are meaningless text in the right JSON shape. The path is real: PyAV decode, keyframe selection,
vLLM AsyncLLM (CPU), guard, JetStream. For real captions, on a GPU host set in your config:
  engine: {model: wynd/wynd-vidcap-12b, quantization: fp8, kv_cache_dtype: fp8}
and run `vidcap run --config FILE` (see README: "Running on an H100")."""


def demo_config(clip: Path, streams: int) -> Config:
    return parse_config(
        {
            "streams": [{"id": f"demo-{n}", "url": str(clip)} for n in range(streams)],
            "keyframes": {"max_interval_s": 10.0, "min_gap_s": 0.5},
            "engine": {
                "model": "tiny",
                "max_num_seqs": 8,
                "max_num_batched_tokens": 4096,
                "max_model_len": 4096,
                "seed": 0,
                "request_timeout_s": 120,
            },
        },
        source="demo",
    )


async def run_demo(streams: int = 2) -> int:
    print(BANNER, flush=True)
    spec = ClipSpec()
    clip = write_clip(cache_dir() / "demo" / "sample.mp4", spec)
    print(f"vidcap demo: sample clip {clip}: {spec.frames} frames, cuts at {spec.cut_frames}")
    config = demo_config(clip, streams)
    received: list[dict[str, Any]] = []
    async with nats_url(config, announce=announce) as url:
        subscriber = await connect(config.nats, url)

        async def show(msg: Any) -> None:
            event = orjson.loads(msg.data)
            received.append(event)
            print(f"[NATS {msg.subject}] {format_event(event)}", flush=True)

        await subscriber.subscribe(f"{config.nats.subject_prefix}.>", cb=show)
        runner = Runner(config)
        status = await runner.run(url)
        await subscriber.flush()
        await asyncio.sleep(0.2)  # let the last deliveries reach the callback
        await subscriber.drain()
    captions = [e for e in received if e["type"] == "caption"]
    ok = sum(e["status"] == "ok" for e in captions)
    print(
        f"vidcap demo: {len(received)} events from NATS: {len(captions)} captions "
        f"({ok} ok, {len(captions) - ok} explicit failures), "
        f"{len(received) - len(captions)} status events"
    )
    return status

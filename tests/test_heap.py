"""Start-up's objects leave the collector's full passes once the engine is up (engine/heap.py):
with vLLM in process a full pass walked about 720,000 objects, 0.7 s with the loop stopped."""

from __future__ import annotations

import gc

from engine.config import EngineConfig
from engine.factory import start_engine
from engine.heap import freeze_long_lived


async def test_starting_an_engine_freezes_what_start_up_built() -> None:
    gc.unfreeze()
    # An OpenAI-compatible engine: built without connecting (nothing listens on port 9).
    settings = EngineConfig(kind="openai", url="http://127.0.0.1:9/v1", model="m")
    engine = await start_engine(settings)
    try:
        assert gc.get_freeze_count() > 10_000  # the interpreter's, aiohttp's, vidcap's, ...
    finally:
        await engine.close()


def test_a_frozen_heap_is_not_walked_by_a_full_collection() -> None:
    survivors = [[n] for n in range(50_000)]  # tracked containers, as start-up leaves
    gc.unfreeze()
    walked_before = len(gc.get_objects())
    freeze_long_lived()
    assert len(gc.get_objects()) < walked_before - len(survivors)
    assert gc.get_freeze_count() >= len(survivors)

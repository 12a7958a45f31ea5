"""In-order release under random completion orders, failures and timeouts."""

from __future__ import annotations

import asyncio
import random
from functools import partial

import pytest

from engine.base import Generation
from engine.captioner import Captioner
from stream.delivery.sequencer import Sequencer


async def collect(sequencer: Sequencer[int]) -> list[int]:
    return [value async for value in sequencer.results()]


@pytest.mark.parametrize("seed", range(20))
async def test_results_leave_in_seq_order_whatever_the_completion_order(seed: int) -> None:
    rng = random.Random(seed)
    delays = [rng.uniform(0, 0.02) for _ in range(60)]
    completion_order: list[int] = []
    sequencer: Sequencer[int] = Sequencer(max_open=rng.randint(1, 12))

    async def work(seq: int) -> int:
        await asyncio.sleep(delays[seq])
        completion_order.append(seq)
        return seq

    consumer = asyncio.create_task(collect(sequencer))
    for n in range(len(delays)):
        await sequencer.submit(partial(work, n))
    sequencer.close()
    assert await consumer == list(range(len(delays)))
    assert sorted(completion_order) == list(range(len(delays)))


async def test_a_slow_head_holds_back_finished_later_slots() -> None:
    release_head = asyncio.Event()
    sequencer: Sequencer[str] = Sequencer(max_open=4)
    seen: list[str] = []

    async def work(seq: int) -> str:
        if seq == 0:
            await release_head.wait()
        return f"r{seq}"

    async def consume() -> None:
        async for value in sequencer.results():
            seen.append(value)

    consumer = asyncio.create_task(consume())
    for n in range(4):
        await sequencer.submit(partial(work, n))
    await asyncio.sleep(0.05)
    assert seen == []  # 1..3 are done, but 0 is not
    release_head.set()
    sequencer.close()
    await consumer
    assert seen == ["r0", "r1", "r2", "r3"]


async def test_submit_waits_when_max_open_slots_are_in_flight() -> None:
    gate = asyncio.Event()
    sequencer: Sequencer[int] = Sequencer(max_open=2)

    async def work(seq: int) -> int:
        await gate.wait()
        return seq

    await sequencer.submit(partial(work, 0))
    await sequencer.submit(partial(work, 1))
    third = asyncio.create_task(sequencer.submit(partial(work, 2)))
    await asyncio.sleep(0.05)
    assert not third.done()
    consumer = asyncio.create_task(collect(sequencer))
    gate.set()
    await third
    sequencer.close()
    assert await consumer == [0, 1, 2]


class ScriptedEngine:
    """Stands in for a model server only to script exact outputs, delays and hangs per
    request; the real vLLM engine cannot be made to produce chosen malformed text."""

    model_id = "scripted"

    def __init__(self, script: dict[str, tuple[float, str, str]]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.calls.append(request_id)
        delay, text, finish = self.script[request_id.rsplit(".", 1)[0]]
        await asyncio.sleep(delay)
        return Generation(text, finish, 10, len(text), delay)

    async def close(self) -> None:
        pass


GOOD = (
    '{"description":"d","objects":[],"actions":[],"environment":"e","content_type":"c",'
    '"specific_style":"s","production_quality":"p","summary":"s","logos":[]}'
)


@pytest.mark.parametrize("seed", range(10))
async def test_captions_failures_and_timeouts_keep_their_slots(seed: int) -> None:
    rng = random.Random(seed)
    script: dict[str, tuple[float, str, str]] = {}
    expected: list[str] = []
    for n in range(30):
        kind = rng.choice(["ok", "ok", "bad", "timeout"])
        delay = 5.0 if kind == "timeout" else rng.uniform(0, 0.03)
        script[f"k{n}"] = (delay, GOOD if kind == "ok" else "{oops", "stop")
        expected.append({"ok": "ok", "bad": "invalid_json", "timeout": "timeout"}[kind])
    engine = ScriptedEngine(script)
    captioner = Captioner(engine, max_attempts=2, timeout_s=0.1)
    sequencer: Sequencer[tuple[int, str]] = Sequencer(max_open=8)

    async def caption(seq: int) -> tuple[int, str]:
        outcome = await captioner.caption(None, f"k{seq}")  # type: ignore[arg-type]
        return seq, "ok" if outcome.ok else outcome.error["reason"]  # type: ignore[index]

    consumer = asyncio.create_task(_collect_pairs(sequencer))
    for n in range(30):
        await sequencer.submit(partial(caption, n))
    sequencer.close()
    results = await consumer
    assert [seq for seq, _ in results] == list(range(30))
    assert [reason for _, reason in results] == expected
    # bad outputs were retried once; timeouts were not retried
    for n, reason in enumerate(expected):
        tries = sum(call.startswith(f"k{n}.") for call in engine.calls)
        assert tries == {"ok": 1, "invalid_json": 2, "timeout": 1}[reason]


async def _collect_pairs(sequencer: Sequencer[tuple[int, str]]) -> list[tuple[int, str]]:
    return [value async for value in sequencer.results()]


async def test_captioner_metrics_count_outcomes_retries_and_tokens() -> None:
    from engine.metrics import Metrics

    script = {"a": (0.0, GOOD, "stop"), "b": (0.0, "{oops", "stop"), "c": (0.0, GOOD, "length")}
    metrics = Metrics()
    captioner = Captioner(ScriptedEngine(script), max_attempts=3, timeout_s=5, metrics=metrics)
    for name in script:
        await captioner.caption(None, name)  # type: ignore[arg-type]
    value = metrics.registry.get_sample_value
    assert value("vidcap_captions_total", {"outcome": "ok"}) == 1
    assert value("vidcap_captions_total", {"outcome": "invalid_json"}) == 1
    assert value("vidcap_captions_total", {"outcome": "truncated"}) == 1
    assert value("vidcap_engine_retries_total", {"reason": "invalid_json"}) == 2
    assert value("vidcap_engine_retries_total", {"reason": "truncated"}) == 2
    assert value("vidcap_engine_tokens_total", {"direction": "in"}) == 70  # 7 tries x 10
    assert value("vidcap_engine_requests_in_flight") == 0
    assert value("vidcap_engine_latency_seconds_count") == 3


async def test_submit_after_close_is_refused_and_says_so() -> None:
    sequencer: Sequencer[int] = Sequencer(max_open=2)
    sequencer.close()

    async def work() -> int:
        return 1

    with pytest.raises(RuntimeError, match="(?i)closed"):
        await sequencer.submit(work)
    assert await collect(sequencer) == []

"""README sentences about behaviour that no other test pinned down: truncated outputs are
retried with 1.5x ``max_tokens``; Ctrl-C publishes a ``stopped`` event per stream naming the
waiting keyframes not captioned; every documented metric exists after a run and counts it."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from engine.base import Generation
from engine.captioner import TRUNCATION_GROWTH, Captioner
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats
from tests.test_sequencer import GOOD

README = (Path(__file__).parents[1] / "README.md").read_text()
DEADLINE_S = 60


class BudgetEngine:
    """Answers "length" (truncated) until the budget reaches ``enough`` tokens."""

    model_id = "scripted"

    def __init__(self, enough: int) -> None:
        self.enough = enough
        self.budgets: list[int] = []

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.budgets.append(max_tokens)
        if max_tokens < self.enough:
            return Generation(GOOD[: max_tokens // 10], "length", 10, max_tokens, 0.01)
        return Generation(GOOD, "stop", 10, 50, 0.01)

    async def close(self) -> None:
        pass


async def test_a_truncated_output_is_retried_with_one_and_a_half_times_the_room() -> None:
    assert TRUNCATION_GROWTH == 1.5 and "retry with\n1.5× `max_tokens`" in README
    engine = BudgetEngine(enough=1000)
    captioner = Captioner(engine, max_tokens=512, max_attempts=3)
    outcome = await captioner.caption(Image.new("RGB", (8, 8)), "kf")
    assert engine.budgets == [512, 768, 1152]
    assert outcome.error is None and outcome.attempts == 3


async def test_truncation_after_the_last_attempt_is_reported() -> None:
    engine = BudgetEngine(enough=10_000)
    captioner = Captioner(engine, max_tokens=100, max_attempts=3)
    outcome = await captioner.caption(Image.new("RGB", (8, 8)), "kf")
    assert engine.budgets == [100, 150, 225]
    assert outcome.error is not None and outcome.error["reason"] == "truncated"


class HoldingEngine:
    """Holds every request until released: keyframes pile up behind the first one."""

    model_id = "scripted"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return Generation(GOOD, "stop", 10, 10, 0.01)

    async def close(self) -> None:
        pass


async def test_stop_publishes_stopped_naming_the_waiting_keyframes(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    spec = ClipSpec(shots=6, shot_frames=12, fps=25)
    clip = write_clip(tmp_path / "six.mp4", spec)
    config = parse_config(
        {
            "streams": [{"id": "held", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.1},
            **engine_and_nats(nats_server.url, "stop"),
            # Room for every keyframe: the whole file is read while the engine holds one.
            "pipeline": {"max_pending_keyframes": 16, "max_in_flight_per_stream": 1},
        }
    )
    events: list[dict[str, Any]] = []
    engine = HoldingEngine()
    runner = Runner(config, events.append)
    run = asyncio.create_task(runner.run(nats_server.url, engine=engine))
    async with asyncio.timeout(DEADLINE_S):
        await engine.started.wait()
    # The whole file has been read once its decode thread has ended.
    for thread in [t for t in threading.enumerate() if t.name == "ingest-held"]:
        await asyncio.to_thread(thread.join, DEADLINE_S)
        assert not thread.is_alive()
    runner.request_stop()
    engine.release.set()
    assert await asyncio.wait_for(run, DEADLINE_S) == 0
    captions = [e for e in events if e["type"] == "caption"]
    stopped = [e for e in events if e.get("state") == "stopped"]
    assert len(stopped) == 1 and stopped[0] is events[-1]
    match = re.fullmatch(
        r"shutdown; (\d+) waiting keyframe\(s\) not captioned", stopped[0]["detail"]
    )
    assert match, stopped[0]["detail"]
    waiting = int(match.group(1))
    assert waiting >= 1 and all(c["error"] is None for c in captions)
    assert len(captions) + waiting == spec.shots  # every keyframe captioned or named
    assert engine.calls == len(captions)


def documented_metrics() -> set[str]:
    metrics_section = README.split("**Metrics.**", 1)[1].split("\n\n", 1)[0]
    outbox_sentence = README.split("Metrics: `vidcap_outbox_events`", 1)[1].split(".", 1)[0]
    names = re.findall(r"`(vidcap_[a-z_]+)", metrics_section + "`vidcap_outbox_events`")
    return set(names) | set(re.findall(r"`(vidcap_[a-z_]+)`", outbox_sentence))


async def test_every_documented_metric_exists_after_a_run_and_counts_it(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    documented = documented_metrics()
    assert len(documented) == 20, documented
    spec = ClipSpec(shots=3, shot_frames=12, fps=25)
    clip = write_clip(tmp_path / "three.mp4", spec)
    config = parse_config(
        {
            "streams": [{"id": "m", "url": str(clip)}],
            **engine_and_nats(nats_server.url, "metrics", stream_name="METRICS"),
        }
    )
    events: list[dict[str, Any]] = []
    runner = Runner(config, events.append)
    engine = BudgetEngine(enough=0)
    started = time.monotonic()
    assert await asyncio.wait_for(runner.run(nats_server.url, engine=engine), DEADLINE_S) == 0
    names = {
        name
        for family in runner.registry.collect()
        for name in (family.name, *(sample.name for sample in family.samples))
    }
    # A labelled counter has no sample before its first use: compare by family name too.
    missing = {n for n in documented if n not in names and n.removesuffix("_total") not in names}
    assert not missing, missing

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        found = runner.registry.get_sample_value(name, labels or {})
        assert found is not None, (name, labels)
        return found

    assert value("vidcap_captions_total", {"outcome": "ok"}) == spec.shots
    assert value("vidcap_events_published_total") == len(events)
    assert value("vidcap_outbox_events") == 0
    assert value("vidcap_spool_events") == 0  # every spooled event stored, marked done
    assert value("vidcap_spool_corrupt_records_total") == 0
    assert value("vidcap_engine_latency_seconds_count") == spec.shots
    assert value("vidcap_end_to_end_seconds_count", {"stream": "m"}) == spec.shots
    assert value("vidcap_queue_wait_seconds_count", {"stream": "m"}) == spec.shots
    assert value("vidcap_engine_tokens_total", {"direction": "out"}) == 50 * spec.shots
    assert value("vidcap_engine_requests_in_flight") == 0
    assert value("vidcap_snapshots_total", {"result": "stored"}) == spec.shots
    assert value("vidcap_snapshot_store_seconds_count") == spec.shots
    stored = sum(e["snapshot"]["bytes"] for e in events if e["type"] == "caption")
    assert value("vidcap_snapshot_bytes_total") == stored > 0
    # Each latency lies within the run (their sum need not: captions overlap).
    mean_latency = value("vidcap_end_to_end_seconds_sum", {"stream": "m"}) / spec.shots
    assert 0 < mean_latency < time.monotonic() - started

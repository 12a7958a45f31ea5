"""Scale-out: two real `vidcap worker` processes on a real nats-server, one killed mid-run.
Every keyframe still gets exactly one event, in order."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import kill_tree, tiny_engine_config

WORKER_START_TIMEOUT_S = 240  # an engine starts in about a minute here


@pytest.fixture
def workers(
    nats_server: EmbeddedNatsServer, tiny_model: Path, vllm_server: str, tmp_path: Path
) -> Iterator[list[subprocess.Popen[str]]]:
    """A mixed pool: worker 0 runs its own vLLM (the one killed, engine processes and all);
    worker 1 fronts the suite's `vllm serve` (engine kind openai), which saves the suite a
    second engine start of about 80 s; to the requester both are the same queue group."""
    engines = [
        tiny_engine_config(tiny_model, max_num_seqs=4).model_dump(mode="json"),
        {"kind": "openai", "url": vllm_server, "model": "tiny-gemma3"},
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen[str]] = []
    try:
        for number, engine in enumerate(engines):
            config = tmp_path / f"worker-{number}.yaml"
            body = {"engine": engine, "nats": {"url": nats_server.url, "subject_prefix": "sc"}}
            config.write_text(orjson.dumps(body).decode())
            command = [sys.executable, "-m", "stream.cli", "worker", "--config", str(config)]
            processes.append(
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
                )
            )
            _wait_serving(processes[-1])
        yield processes
    finally:
        for process in processes:
            kill_tree(process.pid)
            process.wait()


def _wait_serving(process: subprocess.Popen[str]) -> None:
    """Until the worker says it serves; its output is read on a thread (always drained, so
    it never blocks on a full pipe), which lets the deadline hold even if it prints nothing."""
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            if process.poll() is not None:
                raise RuntimeError("worker exited:\n" + "".join(seen[-30:])) from None
            continue
        seen.append(line)
        if line.startswith("vidcap worker: serving"):
            return
    raise RuntimeError("worker did not start:\n" + "".join(seen[-30:]))


async def test_killing_one_of_two_workers_loses_and_duplicates_nothing(
    workers: list[subprocess.Popen[str]],
    nats_server: EmbeddedNatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = ClipSpec(shots=12, shot_frames=20, fps=25)
    clip = write_clip(tmp_path / "many-cuts.mp4", spec)
    config = parse_config(
        {
            "streams": [{"id": "scaled", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.5},
            "engine": {
                "kind": "nats",
                "model_id": "tiny-gemma3",
                "worker_timeout_s": 15,
                "worker_attempts": 3,
                "request_timeout_s": 120,
            },
            "nats": {"url": nats_server.url, "subject_prefix": "sc", "stream_name": "SC"},
            "pipeline": {"max_in_flight_per_stream": 6, "max_pending_keyframes": 4},
        }
    )
    events: list[dict[str, Any]] = []
    killer: list[asyncio.Task[None]] = []

    def retried() -> bool:
        return any("worker lost?" in r.getMessage() for r in caplog.records)

    async def kill_once_a_request_is_stuck() -> None:
        # Frozen, worker 0 keeps what NATS hands it without answering; once a request has
        # timed out there, it dies holding it: a worker lost mid-request, for certain.
        for _ in range(600):
            if retried():
                break
            await asyncio.sleep(0.1)
        kill_tree(workers[0].pid)  # the worker and its vLLM processes, as a host crash would

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["type"] == "caption" and not killer:
            workers[0].send_signal(signal.SIGSTOP)
            killer.append(asyncio.get_running_loop().create_task(kill_once_a_request_is_stuck()))

    assert await Runner(config, on_event).run(nats_server.url) == 0
    await killer[0]
    assert workers[0].wait(10) == -signal.SIGKILL and workers[1].poll() is None
    captions = [e for e in events if e["type"] == "caption"]
    assert [c["keyframe"] for c in captions] == list(range(spec.shots))  # none lost, none twice
    assert [c["frame"]["index"] for c in captions] == spec.cut_frames
    assert [e["seq"] for e in events] == list(range(len(events)))  # in order
    # The kill may cost time, never a caption: only the tiny model's own output may be refused.
    model_rejections = {"invalid_json", "schema", "rules", "truncated"}
    for caption in captions:
        assert caption["status"] == "ok" or caption["error"]["reason"] in model_rejections, caption
    assert sum(c["status"] == "ok" for c in captions) >= spec.shots // 2
    # Requests were lost with the worker, and were sent again to the other one.
    assert retried(), "no request was in flight on the killed worker"

"""No orphans: SIGKILL of the vidcap process alone leaves none of vLLM's engine processes
behind (they hold the model's memory, on a GPU host the memory a restarted vidcap needs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats, kill_tree

GONE_WITHIN_S = 10.0


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_vidcap_alone_leaves_no_engine_process(
    tmp_path: Path, nats_server: EmbeddedNatsServer, tiny_model: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=2, shot_frames=25))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": "looped", "url": str(clip), "loop": True}],
        **engine_and_nats(nats_server.url, "orphan", tiny_model),
    }
    config.write_bytes(orjson.dumps(settings))
    vidcap = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    engine: list[psutil.Process] = []
    try:
        assert vidcap.stdout is not None
        for line in vidcap.stdout:  # the engine serves: its processes are all up
            if " caption " in line:
                break
        engine = [p for p in psutil.Process(vidcap.pid).children(recursive=True)]
        assert any("VLLM" in p.name() or "VLLM" in " ".join(p.cmdline()) for p in engine)
        os.kill(vidcap.pid, signal.SIGKILL)  # vidcap alone, not its process group
        vidcap.wait()
        deadline = time.monotonic() + GONE_WITHIN_S
        while time.monotonic() < deadline and any(alive(p) for p in engine):
            time.sleep(0.2)
        left = [f"{p.pid} {p.name()}" for p in engine if alive(p)]
        assert not left, f"still running {GONE_WITHIN_S:g} s after vidcap was killed: {left}"
    finally:
        kill_tree(vidcap.pid)
        for process in engine:  # if the test failed, they are orphans: not kill_tree's to find
            if alive(process):
                process.kill()

"""A terminal's Ctrl-C reaches every process of vidcap's process group, vLLM's engine processes
included. vidcap drains: the captions in flight are captioned and published, its `stopped`
event is the last, and it exits 0; the engine's processes, in a session of their own, are not
stopped under it (vLLM's engine core exits on SIGINT: those captions failed `engine_dead`,
and vidcap exited 1). A real `vidcap run` as the README starts it: the tiny model on the CPU,
the embedded nats-server (no nats.url), in a process group of its own as a shell gives a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil

from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import kill_tree, tiny_engine_config


def test_ctrl_c_to_the_group_drains_the_captions_in_flight_and_exits_zero(
    tmp_path: Path, tiny_model: Path
) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", ClipSpec(shots=2, shot_frames=25))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": "looped", "url": str(clip), "loop": True}],
        "engine": tiny_engine_config(tiny_model).model_dump(mode="json"),
        "http": {"listen": None},
    }
    config.write_bytes(orjson.dumps(settings))
    vidcap = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # a process group of its own, as a terminal gives a job
    )
    family: list[str] = []
    output: list[str] = []
    try:
        assert vidcap.stdout is not None
        for line in vidcap.stdout:  # at the second caption, Ctrl-C; read on to the end
            output.append(line)
            if line.startswith("looped #") and " kf 1 " in line:
                family = names(psutil.Process(vidcap.pid).children(recursive=True))
                os.killpg(vidcap.pid, signal.SIGINT)
        exit_status = vidcap.wait(timeout=120)
    finally:
        kill_tree(vidcap.pid)
    text = "".join(output)
    assert any("VLLM" in name for name in family), (family, text)  # signalled with them up
    assert exit_status == 0, text
    assert "engine_dead" not in text and "Traceback" not in text, text
    assert "vidcap: stopping: finishing the captions in flight" in text, text  # said at once
    printed = [line for line in output if line.startswith("looped #")]
    assert " status  stopped" in printed[-1], text


def names(processes: list[psutil.Process]) -> list[str]:
    found = []
    for process in processes:
        try:
            found.append(" ".join([process.name(), *process.cmdline()]))
        except psutil.Error:  # ended meanwhile
            continue
    return found

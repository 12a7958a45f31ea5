"""Real components for tests, started per test or per session on 127.0.0.1, random ports."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from engine.factory import start_vllm_engine
from engine.tiny_model import build_tiny_model
from engine.vllm_engine import VllmEngine
from stream.config import EngineConfig
from stream.nats_server import EmbeddedNatsServer
from stream.sample_clip import ClipSpec, write_clip

HELPERS = Path(__file__).parent / "helpers"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has the GStreamer `gi` bindings
RTSP_START_TIMEOUT_S = 20.0


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Any ERROR from vidcap's own loggers fails the test (tests that expect one clear it)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [
        r
        for r in caplog.get_records("call")
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("stream", "engine")
    ]
    assert not errors, f"unexpected ERROR logs: {[r.getMessage() for r in errors]}"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma3"))


def tiny_engine_config(model: Path, **overrides: object) -> EngineConfig:
    settings: dict[str, object] = {
        "model": str(model),
        "model_id": "tiny-gemma3",
        "max_num_seqs": 8,
        "max_num_batched_tokens": 4096,
        "max_model_len": 4096,
        "seed": 0,
        "request_timeout_s": 120,
    }
    settings.update(overrides)
    return EngineConfig.model_validate(settings)


@pytest.fixture(scope="session")
async def vllm_engine(tiny_model: Path) -> AsyncIterator[VllmEngine]:
    """The real vLLM engine (CPU) with the tiny model; shared, since it takes ~40 s to start."""
    engine = start_vllm_engine(tiny_engine_config(tiny_model))
    yield engine
    await engine.close()


@pytest.fixture(scope="session")
def clip_spec() -> ClipSpec:
    return ClipSpec(shots=4, shot_frames=50, fps=25)


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory, clip_spec: ClipSpec) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "cuts.mp4", clip_spec)


@pytest.fixture
def rtsp_server() -> Iterator[Callable[[Path], str]]:
    """Start GStreamer RTSP servers for files; returns their rtsp:// URLs; stops them after."""
    processes: list[subprocess.Popen[str]] = []

    def serve(path: Path) -> str:
        process = subprocess.Popen(
            [SYSTEM_PYTHON, str(HELPERS / "rtsp_server.py"), str(path)],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        processes.append(process)
        return f"rtsp://127.0.0.1:{_read_port(process)}/stream"

    yield serve
    for process in processes:
        process.kill()
        process.wait()


def _read_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + RTSP_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("PORT "):
            return int(line.split()[1])
        if not line and process.poll() is not None:
            raise RuntimeError(f"RTSP server exited with {process.returncode}")
    raise RuntimeError("RTSP server did not report its port")

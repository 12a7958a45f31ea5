"""Real components for tests, started per test or per session on 127.0.0.1, random ports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import psutil
import pytest

import stream.delivery.publisher
from engine.config import EngineConfig
from engine.factory import start_vllm_engine
from engine.heap import freeze_long_lived
from engine.tiny_model import build_tiny_model
from engine.vllm_engine import VllmEngine
from stream.bench.rtsp_peer import RtspPeer
from stream.delivery.events import Envelope, Event, wire_json
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.sample_clip import ClipSpec, write_clip

# Every vidcap a test starts (in process or as a child) serves HTTP on a free port: tests
# that run at once, or beside a user's vidcap on the default 8480, never collide.
os.environ["VIDCAP_HTTP_LISTEN"] = "127.0.0.1:0"


@pytest.fixture(autouse=True, scope="session")
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite's vidcaps (in process or children) keep their cache in a folder of the
    suite's own: an embedded nats-server's address, written while one runs, would otherwise
    point a `vidcap tail` of the machine's user at the suite's server."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDCAP_CACHE", str(folder))
        yield folder


@pytest.fixture(autouse=True)
def own_spool(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's vidcaps (in process or children) spool in a folder of the test's own: what
    a killed run left is replayed only by the same test."""
    folder = tmp_path_factory.mktemp("spool")
    monkeypatch.setenv("VIDCAP_SPOOL_DIR", str(folder))
    return folder


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


def _current_version(schema: dict[str, Any]) -> str:
    """The version vidcap writes (a schema also accepting older ones lists it first)."""
    version = schema["properties"]["schema"]
    return str(version["const"] if "const" in version else version["enum"][0])


# Events vidcap publishes are of the current versions only.
_SCHEMA_CHECKS: dict[str, Callable[[object], object]] = {
    _current_version(schema): fastjsonschema.compile(schema) for schema in EVENT_SCHEMAS.values()
}


def schema_violations(payload: bytes) -> list[str]:
    """Why ``payload`` is not an event of one of the published schemas (empty: it is one)."""
    event = orjson.loads(payload)
    check = _SCHEMA_CHECKS.get(str(event.get("schema"))) if isinstance(event, dict) else None
    if check is None:
        return [f"no published schema for {payload!r}"]
    try:
        check(event)
    except fastjsonschema.JsonSchemaException as exc:
        return [f"{exc}: {payload!r}"]
    return []


@pytest.fixture(autouse=True)
def events_match_published_schemas(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every event published in-process (all go through ``publisher.wire_json``) is validated
    against the published schemas; any violation fails the test at teardown. The violations
    are recorded rather than raised so the pipeline runs on unchanged and all are reported."""
    violations: list[str] = []

    def validated_wire_json(envelope: Envelope, event: Event) -> bytes:
        payload = wire_json(envelope, event)
        violations.extend(schema_violations(payload))
        return payload

    monkeypatch.setattr(stream.delivery.publisher, "wire_json", validated_wire_json)
    yield violations
    assert not violations, f"events that break the published schemas: {violations}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        # No torch.compile warm-up for the tiny model: about 12-27 s less per engine start,
        # and the suite starts vLLM about ten times (the product's default is unchanged).
        "engine_args": {"enforce_eager": True},
    }
    settings.update(overrides)
    return EngineConfig.model_validate(settings)


def engine_and_nats(
    nats_url: str,
    prefix: str,
    model: Path | None = None,
    stream_name: str | None = None,
    short_captions: bool = False,
) -> dict[str, Any]:
    """The ``engine`` and ``nats`` sections most tests run with: the tiny engine (when a model
    is given) and a test's NATS server; JetStream under ``stream_name``, else core NATS.
    ``short_captions``: 64 tokens, one attempt (the tiny model writes random text, so most
    fail): for tests of what happens around captions, a few seconds less per keyframe."""
    nats: dict[str, Any] = {"url": nats_url, "subject_prefix": prefix}
    nats.update({"stream_name": stream_name} if stream_name else {"jetstream": False})
    sections: dict[str, Any] = {"nats": nats}
    if model is not None:
        sections["engine"] = tiny_engine_config(model).model_dump(mode="json")
        if short_captions:
            sections["engine"].update(max_tokens=64, max_attempts=1)
    return sections


@pytest.fixture(scope="session")
async def vllm_engine(tiny_model: Path) -> AsyncIterator[VllmEngine]:
    """The real vLLM engine (CPU) with the tiny model; shared, since it takes ~40 s to start."""
    engine = start_vllm_engine(tiny_engine_config(tiny_model))
    freeze_long_lived()  # as vidcap does after start_engine: no 0.7 s full GC passes in tests
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
    peers: list[RtspPeer] = []

    def serve(path: Path) -> str:
        peers.append(RtspPeer.for_file(path))
        return peers[-1].start()

    yield serve
    for peer in peers:
        peer.kill()


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants. vLLM's engine and worker processes outlive
    a killed parent; left behind they hold ~2 GB each and later engines fail to start (seen)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]  # the root first: it dies as killed
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    # Not the root: it may be our child, and its exit status is its Popen's to collect.
    psutil.wait_procs(family[1:], timeout=10)


SERVER_START_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `vllm serve` (vLLM's OpenAI API server, CPU, tiny model): the OpenAI engine's
    peer, and the engine behind the workers and the SIGTERM run, so the suite starts it once."""
    port = free_port()
    log = (tmp_path_factory.mktemp("vllm-serve") / "server.log").open("w")
    structured = {"backend": "xgrammar", "disable_any_whitespace": True}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_model),
            "--served-model-name",
            "tiny-gemma3",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "8",
            "--seed",
            "0",
            "--enforce-eager",  # no torch.compile warm-up for the tiny model (as conftest)
            "--gpu-memory-utilization",
            "0.1",
            "--mm-processor-cache-gb",
            "0",
            "--structured-outputs-config",
            json.dumps(structured),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, process, log.name)
        yield base + "/v1"
    finally:
        kill_tree(process.pid)
        process.wait()
        log.close()


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"vllm serve not healthy after {SERVER_START_TIMEOUT_S} s; see {log}")

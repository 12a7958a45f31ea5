"""The README's exit statuses of `vidcap run`: 0 after a clean run; 1 when the engine died or
events could not be delivered to NATS within ``nats.flush_timeout_s``; 2 for bad configuration
or arguments. (1 for a failed camera: tests/test_bug_failed_camera_exit_status.py.)

Runs use a scripted engine: these tests are about the runner's verdict, and engine death or
a NATS outage at a chosen moment cannot be produced on demand with the real CPU engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.base import Generation
from engine.errors import EngineDeadError
from stream.cli import main
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import engine_and_nats
from tests.test_sequencer import GOOD

SPEC = ClipSpec(shots=3, shot_frames=12, fps=25)


class GoodEngine:
    model_id = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.calls += 1
        return Generation(GOOD, "stop", 10, 10, 0.01)

    async def close(self) -> None:
        pass


class DeadEngine(GoodEngine):
    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        self.calls += 1
        raise EngineDeadError("engine process exited")


class OutageEngine(GoodEngine):
    """Answers, but stops the NATS server at its first request: nothing after gets acked."""

    def __init__(self, server: EmbeddedNatsServer) -> None:
        super().__init__()
        self.server = server

    async def generate(
        self, image: object, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        if self.calls == 0:
            await asyncio.to_thread(self.server.stop)
        return await super().generate(image, request_id, max_tokens)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("exit") / "clip.mp4", SPEC)


async def test_a_clean_run_exits_0(clip: Path, nats_server: EmbeddedNatsServer) -> None:
    config = parse_config(
        {"streams": [{"id": "ok", "url": str(clip)}], **engine_and_nats(nats_server.url, "x0")}
    )
    engine = GoodEngine()
    assert await asyncio.wait_for(Runner(config).run(nats_server.url, engine=engine), 60) == 0
    assert engine.calls == SPEC.shots


async def test_engine_death_exits_1(
    clip: Path, nats_server: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(
        {"streams": [{"id": "ok", "url": str(clip)}], **engine_and_nats(nats_server.url, "x2")}
    )
    errors: list[str] = []
    runner = Runner(config, lambda e: errors.append((e.get("error") or {}).get("reason", "")))
    status = await asyncio.wait_for(runner.run(nats_server.url, engine=DeadEngine()), 60)
    assert "engine_dead" in errors
    assert status == 1
    assert "the engine died; stopping all streams" in caplog.text
    caplog.clear()  # the ERROR log is expected here


async def test_undelivered_events_exit_1(
    clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    try:
        sections = engine_and_nats(server.url, "x3", stream_name="X3")
        sections["nats"].update(flush_timeout_s=1.0, ack_timeout_s=0.5)
        config = parse_config({"streams": [{"id": "ok", "url": str(clip)}], **sections})
        engine = OutageEngine(server)
        status = await asyncio.wait_for(Runner(config).run(server.url, engine=engine), 60)
    finally:
        server.stop()
    assert engine.calls == SPEC.shots  # captioning went on without NATS
    assert status == 1
    assert "could not be delivered to NATS" in caplog.text
    caplog.clear()  # the ERROR log is expected here


def test_bad_configuration_or_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams: [{id: 'a b', url: x}]\n")
    assert main(["run", "--config", str(bad)]) == 2
    assert "streams.0.id" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["run"]) == 2  # neither --config nor a source
    capsys.readouterr()
    # A typo in the quick form fails at once (it was said after the engine had loaded).
    assert main(["run", str(tmp_path / "typo.mp4")]) == 2
    assert capsys.readouterr().err == f"vidcap: {tmp_path}/typo.mp4: no such file\n"
    assert main(["run", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (text := tmp_path / "notes.mp4").write_text("not a video")  # waited 73 s for the engine
    assert main(["run", str(text)]) == 2
    assert "notes.mp4: not a video FFmpeg can read" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--no-such-option"])
    assert exit_.value.code == 2

"""While vLLM loads (tens of seconds; minutes for the real model) vidcap answers /healthz,
says in /readyz that the engine is loading, and a signal stops it within 2 s, leaving no
vLLM process behind. A real `vidcap run` with the tiny model on the CPU."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psutil

from stream.delivery.nats_server import EmbeddedNatsServer
from tests.conftest import kill_tree, tiny_engine_config

SIGNAL_ACTS_WITHIN_S = 2.0


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_signal_during_the_engine_load_stops_vidcap_at_once(
    tmp_path: Path, nats_server: EmbeddedNatsServer, tiny_model: Path, sample_clip: Path
) -> None:
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": "cam", "url": str(sample_clip)}],
        "engine": tiny_engine_config(tiny_model).model_dump(mode="json"),
        "nats": {"url": nats_server.url},
    }
    config.write_bytes(orjson.dumps(settings))
    process = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.extend(stdout), daemon=True).start()
    try:
        base = _http_base(lines)
        deadline = time.monotonic() + 120
        family: list[psutil.Process] = []
        while len(family) < 2:  # the reaper and vLLM's engine process: the load is under way
            assert time.monotonic() < deadline and process.poll() is None, lines
            family = psutil.Process(process.pid).children(recursive=True)
            time.sleep(0.1)
        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 503 and "the engine is loading" in orjson.loads(body)["reasons"]
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        exit_status = process.wait(timeout=60)
        took = time.monotonic() - sent
        _, alive = psutil.wait_procs(family, timeout=15)
    finally:
        kill_tree(process.pid)
    text = "".join(lines)
    assert exit_status == 130 and took < SIGNAL_ACTS_WITHIN_S, (exit_status, took, text)
    assert "stopped before start-up finished" in text and "Traceback" not in text
    assert alive == [], f"left behind: {[p.name() for p in alive]}"


def _http_base(lines: list[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in lines:
            found = re.search(r"HTTP at (http://\S+)", line)
            if found:
                return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no HTTP line in {lines}")

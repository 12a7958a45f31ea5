"""Debian's Prometheus scrapes a running vidcap's /metrics; a PromQL query over what it stored
counts the captions vidcap published. Real prometheus, vidcap, vLLM (tiny model, CPU) and
nats-server, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from tests.conftest import engine_and_nats, free_port

TOKEN = "api-token-0123456789"


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = "prometheus is not installed (scripts/install-system.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; in CI this test must run, not skip")
        pytest.skip(reason)
    return found


def start_prometheus(binary: str, target: str, directory: Path) -> Iterator[str]:
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: vidcap\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_counts_the_captions_vidcap_published(
    tmp_path: Path,
    prometheus_binary: str,
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    sample_clip: Path,
) -> None:
    events: list[dict[str, Any]] = []
    config = parse_config(
        {
            "streams": [{"id": "clip", "url": str(sample_clip)}],
            "http": {"listen": "127.0.0.1:0", "token": TOKEN},  # runs until stopped
            **engine_and_nats(nats_server.url, "prom", tiny_model, short_captions=True),
        }
    )
    runner = Runner(config, events.append)
    task = asyncio.create_task(runner.run(nats_server.url, vllm_engine))
    async with asyncio.timeout(120):
        while not any(e.get("state") == "ended" for e in events):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    captions = sum(e["type"] == "caption" for e in events)
    target = runner.http_url.removeprefix("http://")
    prometheus = start_prometheus(prometheus_binary, target, tmp_path)
    base = next(prometheus)
    try:
        async with aiohttp.ClientSession() as http:
            total: list[dict[str, Any]] = []
            async with asyncio.timeout(60):
                while not total:
                    await asyncio.sleep(0.5)
                    try:
                        total = await query(http, base, "sum(vidcap_captions_total)")
                    except aiohttp.ClientConnectionError:
                        pass  # prometheus is still starting
            assert float(total[0]["value"][1]) == captions > 0
            up = await query(http, base, 'up{job="vidcap"}')
            assert [sample["value"][1] for sample in up] == ["1"]
            engine = await query(http, base, "vllm:prompt_tokens_total")
            assert engine and float(engine[0]["value"][1]) > 0  # vLLM's own, same scrape
    finally:
        next(prometheus, None)
        runner.request_stop()
        assert await task == 0

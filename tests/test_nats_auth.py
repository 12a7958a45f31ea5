"""NATS credentials and retention settings reach a real nats-server: user/password and token
against a server that requires them (started with an authorization block), and max_age,
max_bytes and duplicate_window in the JetStream stream vidcap creates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.config import NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, NatsRefusedError, connect

USER, PASSWORD, TOKEN = "vidcap", "pw-0123456789", "tok-0123456789abcdef"


def auth_server(tmp_path: Path, authorization: str) -> Iterator[EmbeddedNatsServer]:
    config_file = tmp_path / "auth.conf"
    config_file.write_text(f"authorization {{ {authorization} }}\n")
    server = EmbeddedNatsServer(tmp_path / "nats", config_file=config_file)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    yield from auth_server(tmp_path, f'user: "{USER}", password: "{PASSWORD}"')


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    yield from auth_server(tmp_path, f'token: "{TOKEN}"')


async def publish_one(config: NatsConfig, url: str) -> None:
    publisher = EventPublisher(await connect(config, url), config)
    await publisher.ensure_stream()
    await publisher.publish(Envelope("cam", "s1", 0), StatusEvent("live", "auth", time.time()))
    assert await publisher.flush(10)
    assert await publisher.close() == 0


async def refused(config: NatsConfig, url: str) -> None:
    """The server enforces the credentials, and vidcap says so at once (no retrying)."""
    with pytest.raises(NatsRefusedError, match="refused the credentials"):
        await asyncio.wait_for(connect(config, url), 5)


async def test_user_and_password(password_server: EmbeddedNatsServer) -> None:
    url = password_server.url
    await publish_one(NatsConfig(url=url, user=USER, password=PASSWORD, stream_name="A"), url)
    await refused(NatsConfig(url=url, user=USER, password="wrong", connect_timeout_s=2), url)


async def test_token(token_server: EmbeddedNatsServer) -> None:
    url = token_server.url
    await publish_one(NatsConfig(url=url, token=TOKEN, stream_name="T"), url)
    await refused(NatsConfig(url=url, connect_timeout_s=2), url)


async def test_credentials_come_from_the_config_file_environment(
    password_server: EmbeddedNatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream.config import load_config

    monkeypatch.setenv("NATS_PASSWORD", PASSWORD)
    path = tmp_path / "c.yaml"
    path.write_text(
        "streams: [{id: cam, url: x.mp4}]\n"
        f"nats: {{url: '{password_server.url}', user: {USER}, password: '${{NATS_PASSWORD}}'}}\n"
    )
    config = load_config(path).nats
    await publish_one(config, password_server.url)


async def test_retention_settings_reach_the_stream_vidcap_creates(
    nats_server: EmbeddedNatsServer,
) -> None:
    settings: dict[str, Any] = {"max_age_s": 3600.0, "max_bytes": 1 << 20}
    config = NatsConfig(url=nats_server.url, stream_name="RET", duplicate_window_s=42.0, **settings)
    client = await connect(config, nats_server.url)
    await EventPublisher(client, config).ensure_stream()
    info = await client.jetstream().stream_info("RET")
    assert info.config.subjects == ["vidcap.>"]
    assert info.config.max_age == 3600.0
    assert info.config.max_bytes == 1 << 20
    assert info.config.duplicate_window == 42.0
    await client.close()


async def test_default_retention_is_seven_days_and_no_size_limit(
    nats_server: EmbeddedNatsServer,
) -> None:
    config = NatsConfig(url=nats_server.url, stream_name="DEF")
    client = await connect(config, nats_server.url)
    await EventPublisher(client, config).ensure_stream()
    info = await client.jetstream().stream_info("DEF")
    assert info.config.max_age == 7 * 86400.0
    assert info.config.max_bytes == -1
    assert info.config.duplicate_window == 120.0
    await client.close()


async def test_an_existing_stream_is_used_as_it_is(nats_server: EmbeddedNatsServer) -> None:
    first = NatsConfig(url=nats_server.url, stream_name="KEEP", max_age_s=600.0)
    client = await connect(first, nats_server.url)
    await EventPublisher(client, first).ensure_stream()
    second = first.model_copy(update={"max_age_s": 7200.0})
    await EventPublisher(client, second).ensure_stream()
    info = await client.jetstream().stream_info("KEEP")
    assert info.config.max_age == 600.0  # README: manage an existing stream with nats stream edit
    await client.close()

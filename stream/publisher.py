"""Publishing events to NATS, per stream in order; JetStream de-duplicates by Nats-Msg-Id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js.api import StreamConfig as JsStreamConfig

from engine.errors import VidcapError
from stream.config import NatsConfig

logger = logging.getLogger(__name__)

PUBLISH_ATTEMPTS: Final = 8
RETRY_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 2.0, 2.0)


class PublishError(VidcapError):
    """An event could not be delivered after every retry."""

    def __init__(self, subject: str, msg_id: str, cause: BaseException) -> None:
        super().__init__(f"could not publish {msg_id} to {subject}: {cause!r}")
        self.subject = subject
        self.msg_id = msg_id


def event_subject(prefix: str, event: dict[str, Any]) -> str:
    return f"{prefix}.{event['stream']}.{event['type']}"


def event_msg_id(event: dict[str, Any]) -> str:
    """Unique per event and stable across retries: the JetStream de-duplication key."""
    return f"{event['stream']}:{event['session']}:{event['seq']}"


async def connect(config: NatsConfig, url: str) -> Client:
    client = Client()

    async def disconnected() -> None:
        # nats-py also calls this when we close the connection ourselves.
        if not (client.is_closed or client.is_draining):
            logger.warning("NATS disconnected from %s; reconnecting", url)

    options: dict[str, Any] = {
        "servers": [url],
        "name": "vidcap",
        "connect_timeout": config.connect_timeout_s,
        "max_reconnect_attempts": -1,  # a NATS restart must not end captioning
        "error_cb": _log_error,
        "disconnected_cb": disconnected,
        "reconnected_cb": _log_reconnected,
    }
    if config.user:
        options["user"] = config.user
    if config.password:
        options["password"] = config.password.get_secret_value()
    if config.token:
        options["token"] = config.token.get_secret_value()
    if config.creds_file:
        options["user_credentials"] = str(config.creds_file)
    await client.connect(**options)
    return client


class EventPublisher:
    """Publishes one event at a time per caller; callers keep per-stream order by awaiting."""

    def __init__(self, client: Client, config: NatsConfig) -> None:
        self._client = client
        self._config = config
        self._js = client.jetstream(timeout=config.ack_timeout_s) if config.jetstream else None
        self.duplicates = 0

    async def ensure_stream(self) -> None:
        """Create the JetStream stream over '<prefix>.>' unless it exists."""
        if self._js is None:
            return
        subjects = [f"{self._config.subject_prefix}.>"]
        try:
            info = await self._js.stream_info(self._config.stream_name)
            logger.info("JetStream stream %s exists (%s)", info.config.name, info.config.subjects)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(
                JsStreamConfig(
                    name=self._config.stream_name,
                    subjects=subjects,
                    duplicate_window=self._config.duplicate_window_s,
                )
            )
            logger.info("created JetStream stream %s for %s", self._config.stream_name, subjects)

    async def publish(self, event: dict[str, Any]) -> None:
        subject = event_subject(self._config.subject_prefix, event)
        payload = orjson.dumps(event)
        msg_id = event_msg_id(event)
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self._publish_once(subject, payload, msg_id)
                return
            except (TimeoutError, nats.errors.Error) as exc:
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise PublishError(subject, msg_id, exc) from exc
                logger.warning("publish %s failed (%r); retrying", msg_id, exc)
                await asyncio.sleep(RETRY_BACKOFF_S[attempt])

    async def _publish_once(self, subject: str, payload: bytes, msg_id: str) -> None:
        if self._js is None:
            await self._client.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            return
        ack = await self._js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        if ack.duplicate:
            # A retry whose first try was stored after all: stored once, as intended.
            self.duplicates += 1

    async def close(self) -> None:
        if not self._client.is_closed:
            await self._client.drain()


async def _log_error(exc: Exception) -> None:
    logger.warning("NATS error: %r", exc)


async def _log_reconnected() -> None:
    logger.info("NATS reconnected")

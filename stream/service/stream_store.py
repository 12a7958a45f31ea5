"""Streams added, removed or paused at run time, kept in a JetStream key-value bucket so that
a restart brings them back: one key per stream id, its value ``{"stream": <settings> | null,
"paused": bool, "removed": bool}``. ``stream`` is set for streams added at run time (they
win over a config-file stream of the same id); null for a config-file stream that was only
paused or removed.

The bucket holds stream URLs as given, credentials included: restrict who may read it
(``$KV.<bucket>.>``) as you restrict the config file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from engine.errors import VidcapError
from stream.config import ConfigError, StreamConfig, parse_section

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredStream:
    stream: StreamConfig | None
    """Settings of a stream added at run time; None: the config file's stream of that id."""
    paused: bool = False
    removed: bool = False


def bucket_name(stream_name: str) -> str:
    return f"{stream_name}_STREAMS"


class StreamStoreError(VidcapError):
    def __init__(self, bucket: str, cause: Exception) -> None:
        super().__init__(
            f"cannot use the key-value bucket {bucket} that keeps API stream changes "
            f"({type(cause).__name__}: {cause}); does the NATS user have the permissions "
            "in deploy/nats/vidcap-users.conf?"
        )


class StreamStore:
    def __init__(self, kv: KeyValue, bucket: str) -> None:
        self._kv = kv
        self._bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, replicas: int = 1) -> StreamStore:
        try:
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(bucket=bucket, history=1, replicas=replicas)
                logger.info("created key-value bucket %s for streams changed at run time", bucket)
        except nats.errors.Error as exc:
            raise StreamStoreError(bucket, exc) from None
        return cls(kv, bucket)

    async def load(self) -> dict[str, StoredStream]:
        """Every stored stream by id; a record that no longer validates is logged and skipped."""
        try:
            return await self._load()
        except nats.errors.Error as exc:
            raise StreamStoreError(self._bucket, exc) from None

    async def _load(self) -> dict[str, StoredStream]:
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        stored: dict[str, StoredStream] = {}
        for key in keys:
            entry = await self._kv.get(key)
            if entry.value is None:
                continue
            try:
                stored[key] = _decode(key, entry.value)
            except (ValueError, ConfigError) as exc:
                logger.error("stored stream %s is ignored: %s", key, exc)
        return stored

    async def put(self, stream_id: str, record: StoredStream) -> bool:
        """Keep a change; False (logged) when NATS refused it: it holds until vidcap stops."""
        settings = record.stream.model_dump(mode="json") if record.stream else None
        value = orjson.dumps(
            {"stream": settings, "paused": record.paused, "removed": record.removed}
        )
        try:
            await self._kv.put(stream_id, value)
        except nats.errors.Error as exc:
            logger.warning(
                "stream %s: the change was not kept in bucket %s (%s); it lasts until vidcap stops",
                stream_id,
                self._bucket,
                type(exc).__name__,
            )
            return False
        return True


def _decode(key: str, value: bytes) -> StoredStream:
    data: Any = orjson.loads(value)
    if not isinstance(data, dict):
        raise ValueError("not a stored stream record")
    paused, removed = data.get("paused", False), data.get("removed", False)
    if not isinstance(paused, bool) or not isinstance(removed, bool):
        raise ValueError("paused and removed must be true or false")
    settings = data.get("stream")
    if settings is None:
        return StoredStream(None, paused, removed)
    stream = parse_section(StreamConfig, settings, f"stored stream {key}")
    if stream.id != key:
        raise ValueError(f"its id {stream.id!r} is not its key")
    return StoredStream(stream, paused, removed)


def merge(
    configured: list[StreamConfig], stored: dict[str, StoredStream]
) -> list[tuple[StreamConfig, bool]]:
    """The streams to start, each with whether it starts paused: the config file's, changed
    by what was stored at run time."""
    merged = {stream.id: (stream, False) for stream in configured}
    for stream_id, record in stored.items():
        if record.removed:
            merged.pop(stream_id, None)
        elif record.stream is not None:
            merged[stream_id] = (record.stream, record.paused)
        elif stream_id in merged:
            merged[stream_id] = (merged[stream_id][0], record.paused)
    return list(merged.values())

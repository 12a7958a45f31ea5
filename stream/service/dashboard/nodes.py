"""Which vidcaps are alive, for the dashboard: the presence bucket (``<stream_name>_NODES``)
watched and pushed to browsers as ``node`` events.

A vidcap's entry is written every third of the TTL; when it stops cleanly it deletes its entry,
and when it is killed the entry expires a TTL after its last write, leaving a marker the watch
sees: either way the browsers get ``{"key", "gone": true}`` (the README states the bound).
Without a fleet (no presence bucket yet) it looks again now and then: one may come later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from stream.fleet.presence import presence_bucket

logger = logging.getLogger(__name__)

BUCKET_POLL_S: Final = 5.0
"""How often to look for the presence bucket while there is none (no fleet yet)."""
MAX_NODE_BYTES: Final = 64 * 1024
"""Larger entries are not vidcap's (a node's entry is a few hundred bytes)."""
_GONE: Final = ("DEL", "PURGE")

NodeCallback = Callable[[str, dict[str, Any] | None], None]
"""Called with a node's key and its entry, or None when it went away."""


async def watch_nodes(js: JetStreamContext, stream_name: str, on_node: NodeCallback) -> None:
    """Push every change of the presence bucket until cancelled."""
    bucket = presence_bucket(stream_name)
    while True:
        try:
            kv = await js.key_value(bucket)
            watcher = await kv.watchall()
            async for entry in watcher:
                if entry is not None:  # None: the current entries have all been sent
                    _deliver(entry.key, entry.operation, entry.value, on_node)
        except nats.js.errors.BucketNotFoundError:
            pass
        except (nats.errors.Error, TimeoutError) as exc:
            logger.info("dashboard: presence not readable now (%r); trying again", exc)
        await asyncio.sleep(BUCKET_POLL_S)


def _deliver(key: str, operation: str | None, value: bytes | None, on_node: NodeCallback) -> None:
    if operation in _GONE:
        on_node(key, None)
        return
    if value is None or len(value) > MAX_NODE_BYTES:
        return
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if isinstance(record, dict):
        on_node(key, _shown(record))


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    """What a browser gets of an entry: the fields the panel shows, as their types."""
    owned = record.get("owned")
    return {
        "host": str(record.get("host", ""))[:255],
        "pid": record.get("pid") if isinstance(record.get("pid"), int) else None,
        "session": str(record.get("session", ""))[:64],
        "owned": [str(stream)[:64] for stream in owned[:1000]] if isinstance(owned, list) else [],
        "at": record.get("at") if isinstance(record.get("at"), int | float) else None,
        "ttl_s": record.get("ttl_s") if isinstance(record.get("ttl_s"), int | float) else None,
    }

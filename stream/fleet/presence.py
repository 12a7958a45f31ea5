"""Presence: each vidcap announces itself in the key-value bucket ``<nats.stream_name>_NODES``.

The key names the vidcap's node (its machine and spool slot, so a vidcap restarted after a
kill replaces its dead predecessor's entry instead of being counted twice); the value says
where it runs and which streams it owns and stands by for. It is rewritten every third of
``leases.ttl_s`` and expires after the TTL, so a vidcap killed outright (SIGKILL, a lost
machine) disappears within the TTL; the bucket keeps a delete marker when a key expires, so
watchers (``nats kv watch VIDCAP_NODES``) see ``offline`` then as they see a clean stop's
delete. The number of live vidcaps sets each one's fair share of the streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Final

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from stream.fleet.buckets import KV_ERRORS, expiring_bucket

logger = logging.getLogger(__name__)

HEARTBEATS_PER_TTL: Final = 3
COUNT_CACHE_S: Final = 1.0


def presence_bucket(stream_name: str) -> str:
    return f"{stream_name}_NODES"


def node_key(node: str) -> str:
    """A key-value key for a node name: its host part, readable, and a digest of the rest."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", node.split(":", 1)[0])[:40]
    return f"{host}-{hashlib.sha256(node.encode()).hexdigest()[:12]}"


class Presence:
    """This vidcap's key in the presence bucket, and the count of live vidcaps."""

    def __init__(
        self,
        js: JetStreamContext,
        stream_name: str,
        ttl_s: float,
        node: str,
        session: str,
        describe: Callable[[], dict[str, Any]],
        replicas: int = 1,
    ) -> None:
        self._js = js
        self.key = node_key(node)
        self._bucket_name = presence_bucket(stream_name)
        self._ttl_s = ttl_s
        self._replicas = replicas
        self.session = session
        self._describe = describe
        self._started_at = time.time()
        self._kv: KeyValue | None = None
        self._count = 1
        self._counted_at = -COUNT_CACHE_S

    async def open(self) -> None:
        """Bind (or create) the bucket and announce this vidcap."""
        self._kv, self._ttl_s = await expiring_bucket(
            self._js, self._bucket_name, self._ttl_s, self._replicas, markers=True
        )
        await self.beat()

    async def beat(self) -> None:
        """Write this vidcap's entry now."""
        value = {
            "session": self.session,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": version("vidcap"),
            "started_at": self._started_at,
            "at": time.time(),
            "ttl_s": self._ttl_s,
            **self._describe(),
        }
        await self._bucket().put(self.key, orjson.dumps(value))

    async def live_count(self) -> int:
        """How many vidcaps are alive (this one included); cached for a second."""
        if time.monotonic() - self._counted_at < COUNT_CACHE_S:
            return self._count
        try:
            keys = await self._bucket().keys()
        except nats.js.errors.NoKeysError:
            keys = []
        except KV_ERRORS as exc:
            logger.warning("cannot count live vidcaps (%r); assuming %d", exc, self._count)
            return self._count
        self._count = max(1, len(set(keys) | {self.key}))
        self._counted_at = time.monotonic()
        return self._count

    async def leave(self) -> None:
        """Say this vidcap is going (its streams are about to be released)."""
        with contextlib.suppress(*KV_ERRORS):
            await self._bucket().delete(self.key)
        self._counted_at = -COUNT_CACHE_S

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Presence.open() first")
        return self._kv

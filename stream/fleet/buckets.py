"""The fleet's key-value buckets: one entry per key, expiring a TTL after its last write."""

from __future__ import annotations

import logging
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

logger = logging.getLogger(__name__)

KV_ERRORS: Final = (TimeoutError, nats.errors.Error)
"""What a key-value call raises when NATS does not answer or refuses."""


async def expiring_bucket(
    js: JetStreamContext, name: str, ttl_s: float, replicas: int, *, markers: bool = False
) -> tuple[KeyValue, float]:
    """Bind the bucket, creating it if missing; returns it and its TTL (fixed at creation:
    an existing bucket's holds). ``markers``: an expired key leaves a delete marker, so
    watchers see it go."""
    try:
        kv = await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        config = KeyValueConfig(bucket=name, history=1, ttl=ttl_s, replicas=replicas)
        if markers:
            config.limit_marker_ttl = ttl_s
        logger.info("creating bucket %s (TTL %g s, %d replica(s))", name, ttl_s, replicas)
        return await js.create_key_value(config), ttl_s
    ttl = (await kv.status()).ttl
    if ttl and abs(ttl - ttl_s) > 0.01:
        logger.warning("bucket %s has a TTL of %g s, not %g s; its TTL holds", name, ttl, ttl_s)
        return kv, ttl
    return kv, ttl_s

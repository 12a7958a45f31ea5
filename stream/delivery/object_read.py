"""One object read whole from a JetStream Object Store, or None when it is gone.

nats-py's ``ObjectStore.get`` reads the object's description, then waits for its chunks with
no deadline. With a bucket TTL the chunks, written first, expire first: for a moment the
description is there and the data is not, and that wait never ends (a snapshot at the end of
its ``max_age_s``). Here the chunks are read on a subscription of our own, a silence checks
whether they still exist, and the subscription is always closed.
"""

from __future__ import annotations

import base64
import hashlib

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

CHUNK_WAIT_S = 2.0
"""Longest silence between two chunks before asking whether the rest still exists."""
_DIGEST_PREFIX = "sha-256="


class ObjectCorrupt(nats.js.errors.Error):
    """The data read does not match the digest in the object's description."""


class ObjectTooLarge(Exception):
    """The object is larger than the reader accepts (nothing of it was read)."""


async def read_object(
    js: JetStreamContext, bucket: str, name: str, max_bytes: int | None = None
) -> bytes | None:
    store = await js.object_store(bucket)
    try:
        info = await store.get_info(name)
    except nats.js.errors.ObjectNotFoundError:
        return None
    if max_bytes is not None and (info.size or 0) > max_bytes:
        raise ObjectTooLarge(f"object {name!r} has {info.size} bytes, more than {max_bytes}")
    if not info.size:
        return b""
    chunks = f"$O.{bucket}.C.{info.nuid}"
    if not await _exists(js, bucket, chunks):
        return None
    data = bytearray()
    subscription = await js.subscribe(chunks, ordered_consumer=True)
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=CHUNK_WAIT_S)
            except nats.errors.TimeoutError:
                if await _exists(js, bucket, chunks):
                    raise  # slow, not gone
                return None
            data += message.data
            if message.metadata.num_pending == 0:
                break
    finally:
        await subscription.unsubscribe()
    _check_digest(bytes(data), info.digest or "", name)
    return bytes(data)


async def _exists(js: JetStreamContext, bucket: str, chunks: str) -> bool:
    try:
        await js.get_last_msg(f"OBJ_{bucket}", chunks)
    except nats.js.errors.NotFoundError:
        return False
    return True


def _check_digest(data: bytes, digest: str, name: str) -> None:
    if not digest.lower().startswith(_DIGEST_PREFIX):
        raise ObjectCorrupt(f"object {name!r} has no SHA-256 digest")
    expected = base64.urlsafe_b64decode(digest[len(_DIGEST_PREFIX) :])
    if hashlib.sha256(data).digest() != expected:
        raise ObjectCorrupt(f"object {name!r}: its data does not match its digest")

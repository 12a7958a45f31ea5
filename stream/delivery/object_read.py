"""One object read whole from a JetStream Object Store, or None when it is gone.

nats-py's ``ObjectStore.get`` reads the object's description, then waits for its chunks with
no deadline. With a bucket TTL the chunks, written first, expire first: for a moment the
description is there and the data is not, and that wait never ends (a snapshot at the end of
its ``max_age_s``). Here the description is read straight from the bucket's stream (no
stream info first); an object of one chunk, as a snapshot mostly is, with one more request;
a larger one on a consumer of our own, always closed, that asks after a silence whether the
chunks still exist. Two JetStream requests for a snapshot, where nats-py makes four.
"""

from __future__ import annotations

import base64
import hashlib

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo

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
    """A missing bucket reads as a missing object: both are gone for the reader."""
    stream = f"OBJ_{bucket}"
    info = await _description(js, stream, bucket, name)
    if info is None:
        return None
    if max_bytes is not None and (info.size or 0) > max_bytes:
        raise ObjectTooLarge(f"object {name!r} has {info.size} bytes, more than {max_bytes}")
    if not info.size:
        return b""
    chunks = f"$O.{bucket}.C.{info.nuid}"
    if info.chunks == 1:
        data = await _last_message(js, stream, chunks)
    else:
        data = await _all_chunks(js, stream, chunks)
    if data is None:
        return None
    _check_digest(data, info.digest or "", name)
    return data


async def _description(
    js: JetStreamContext, stream: str, bucket: str, name: str
) -> ObjectInfo | None:
    encoded = base64.urlsafe_b64encode(name.encode()).decode()  # padded, as nats-py writes it
    data = await _last_message(js, stream, f"$O.{bucket}.M.{encoded}")
    if data is None:
        return None
    try:
        info = ObjectInfo.from_response(orjson.loads(data))
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise ObjectCorrupt(f"object {name!r} has an unreadable description: {exc}") from None
    return None if info.deleted else info


async def _last_message(js: JetStreamContext, stream: str, subject: str) -> bytes | None:
    try:
        message = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return None
    return message.data or b""


async def _all_chunks(js: JetStreamContext, stream: str, chunks: str) -> bytes | None:
    data = bytearray()
    subscription = await js.subscribe(chunks, stream=stream, ordered_consumer=True)
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=CHUNK_WAIT_S)
            except nats.errors.TimeoutError:
                if await _last_message(js, stream, chunks) is not None:
                    raise  # slow, not gone
                return None
            data += message.data
            if message.metadata.num_pending == 0:
                return bytes(data)
    finally:
        await subscription.unsubscribe()


def _check_digest(data: bytes, digest: str, name: str) -> None:
    if not digest.lower().startswith(_DIGEST_PREFIX):
        raise ObjectCorrupt(f"object {name!r} has no SHA-256 digest")
    expected = base64.urlsafe_b64decode(digest[len(_DIGEST_PREFIX) :])
    if hashlib.sha256(data).digest() != expected:
        raise ObjectCorrupt(f"object {name!r}: its data does not match its digest")

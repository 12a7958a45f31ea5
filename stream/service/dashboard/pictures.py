"""Snapshot JPEGs read from their JetStream Object Store bucket for the browser.

Only names vidcap writes are read (``<stream>/<session>/<number>``, checked by the route),
only objects up to ``MAX_PICTURE_BYTES``, only JPEGs, and at most ``MAX_CONCURRENT_READS``
at once: a page of thumbnails cannot make vidcap hold many large objects in memory."""

from __future__ import annotations

import asyncio
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from stream.delivery.object_read import ObjectTooLarge, read_object

MAX_PICTURE_BYTES: Final = 4 * 1024 * 1024
MAX_CONCURRENT_READS: Final = 8
READ_TIMEOUT_S: Final = 5.0
_JPEG_START: Final = b"\xff\xd8\xff"

NAME_ROUTE: Final = r"{stream:[A-Za-z0-9_-]{1,64}}/{session:[0-9a-f]{1,32}}/{number:[0-9]{1,12}}"
"""The snapshot names vidcap writes, as an aiohttp route pattern."""


class PictureMissing(Exception):
    """No such snapshot (or not one vidcap would have written)."""


class PictureUnavailable(Exception):
    """The store did not answer; the message says why."""


class Pictures:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def read(self, js: JetStreamContext, name: str) -> bytes:
        async with self._slots:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    data = await read_object(js, self._bucket, name, MAX_PICTURE_BYTES)
            except (nats.js.errors.NotFoundError, ObjectTooLarge):
                raise PictureMissing(name) from None
            except (nats.errors.Error, TimeoutError) as exc:
                raise PictureUnavailable(f"the snapshot store did not answer: {exc!r}") from None
        if data is None or not data.startswith(_JPEG_START):
            raise PictureMissing(name)
        return data

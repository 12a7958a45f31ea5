"""Keyframe snapshots: the picture the model was sent, as a JPEG in a JetStream Object Store
bucket, named by the caption event it belongs to.

A snapshot is stored while the model works on its keyframe. Its event waits for it at most
``snapshots.wait_s`` after the caption is done; a slow, full or failing store never holds an
event back longer, never reorders events, and the event says why it has no snapshot.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
import simplejpeg
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig
from nats.js.object_store import ObjectStore
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Histogram

from engine.metrics import LATENCY_BUCKETS
from stream.config import NatsConfig, SnapshotsConfig
from stream.delivery.object_read import read_object
from stream.delivery.story import find_event
from stream.sources.frames import YuvPlanes

logger = logging.getLogger(__name__)

SnapshotError = Literal["disabled", "slow", "full", "failed"]
"""Why an event has no snapshot: snapshots off; not stored within ``wait_s``; the bucket (or
the server's JetStream storage) is full; the store refused or NATS did not answer."""

NAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}/[0-9a-f]{1,32}/[0-9]{1,12}$"
"""Every name vidcap writes: ``<stream>/<session>/<keyframe request number>``."""

_STORE_ERRORS: Final = (nats.errors.Error, TimeoutError, OSError)
"""What NATS raises when it refuses or does not answer."""

_OUT_OF_ROOM_CODES: Final = frozenset({10023, 10047})
"""JetStream's "insufficient resources" and "storage resources exceeded": the server is full.
A full bucket answers 10077 (store failed) with "maximum bytes exceeded"."""


def snapshot_bucket(stream_name: str) -> str:
    return f"{stream_name}_SNAPSHOTS"


def snapshot_name(stream: str, session: str, number: int) -> str:
    return f"{stream}/{session}/{number}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a stored snapshot is, and what it is."""

    bucket: str
    name: str
    bytes: int
    width: int
    height: int

    def wire(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "name": self.name,
            "bytes": self.bytes,
            "width": self.width,
            "height": self.height,
        }


@dataclass(frozen=True, slots=True)
class SnapshotOutcome:
    """A snapshot, or why there is none. Never both."""

    stored: Snapshot | None
    error: SnapshotError | None


DISABLED: Final = SnapshotOutcome(None, "disabled")


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.outcomes = Counter(
            "vidcap_snapshots",
            "Keyframe snapshots by outcome (stored, or why not)",
            ["result"],
            registry=r,
        )
        self.bytes = Counter("vidcap_snapshot_bytes", "JPEG bytes stored as snapshots", registry=r)
        self.store_seconds = Histogram(
            "vidcap_snapshot_store_seconds",
            "JPEG encoding and Object Store put, per snapshot",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


class PendingSnapshot:
    """A snapshot being stored; ``settle`` gives its outcome, waiting at most ``wait_s``."""

    def __init__(self, task: asyncio.Task[Snapshot] | None, wait_s: float, store: SnapshotStore):
        self._task = task
        self._wait_s = wait_s
        self._store = store

    async def settle(self) -> SnapshotOutcome:
        task = self._task
        if task is None:
            return self._store.off
        done, _ = await asyncio.wait({task}, timeout=self._wait_s)
        if not done:
            task.cancel()  # its chunks, if any landed, age out with the bucket's TTL
            return self._store.failed("slow", None)
        if (exc := task.exception()) is not None:
            if not isinstance(exc, _STORE_ERRORS):  # a bug of ours: loud, but no stream stops
                logger.error("storing a snapshot failed", exc_info=exc)
            return self._store.failed(_error_kind(exc), exc)
        self._store.metrics.outcomes.labels("stored").inc()
        return SnapshotOutcome(task.result(), None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class SnapshotStore:
    """Stores keyframe pictures in one Object Store bucket (or, disabled, stores nothing)."""

    def __init__(
        self,
        bucket: ObjectStore | None,
        name: str,
        config: SnapshotsConfig,
        metrics: SnapshotMetrics | None = None,
        js: JetStreamContext | None = None,
    ) -> None:
        self._bucket = bucket
        self._js = js  # for reads
        self.name = name
        self._config = config
        self.metrics = metrics or SnapshotMetrics()
        self._warned: set[SnapshotError] = set()
        self.off = DISABLED
        """What events say while there is no bucket."""

    @classmethod
    def disabled(cls) -> SnapshotStore:
        return cls(None, "", SnapshotsConfig(enabled=False))

    @classmethod
    def unavailable(cls, name: str, metrics: SnapshotMetrics | None = None) -> SnapshotStore:
        """No bucket to store in (it could not be opened): every event says ``failed``."""
        store = cls(None, name, SnapshotsConfig(), metrics)
        store.off = SnapshotOutcome(None, "failed")
        return store

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        config: SnapshotsConfig,
        nats_config: NatsConfig,
        metrics: SnapshotMetrics | None = None,
    ) -> SnapshotStore:
        """Bind the bucket, creating it if missing (its TTL and size are fixed then). If NATS
        refuses (no rights, no room), snapshots are off for this run: said once, and in each
        event's ``snapshot_error``."""
        name = snapshot_bucket(nats_config.stream_name)
        try:
            bucket = await _bind_or_create(js, name, config, nats_config)
        except _STORE_ERRORS as exc:
            logger.error(
                "object store %s cannot be opened (%s: %s): events go out without snapshots",
                name,
                type(exc).__name__,
                exc,
            )
            return cls.unavailable(name, metrics)
        return cls(bucket, name, config, metrics, js)

    @property
    def enabled(self) -> bool:
        return self._bucket is not None

    def start(
        self, name: str, image: Image.Image, planes: YuvPlanes | None = None
    ) -> PendingSnapshot:
        """Begin storing ``image`` (encoded from ``planes`` if given) under ``name``; the
        caller settles it with its event."""
        if self._bucket is None:
            return PendingSnapshot(None, 0.0, self)
        store = self._store(self._bucket, name, image, planes)
        task = asyncio.get_running_loop().create_task(store)
        return PendingSnapshot(task, self._config.wait_s, self)

    async def _store(
        self, bucket: ObjectStore, name: str, image: Image.Image, planes: YuvPlanes | None
    ) -> Snapshot:
        started = time.perf_counter()
        jpeg = await asyncio.to_thread(encode_jpeg, image, self._config.quality, planes)
        await bucket.put(name, jpeg)
        self.metrics.store_seconds.observe(time.perf_counter() - started)
        self.metrics.bytes.inc(len(jpeg))
        return Snapshot(self.name, name, len(jpeg), image.width, image.height)

    def failed(self, kind: SnapshotError, exc: BaseException | None) -> SnapshotOutcome:
        """Count it; say it once per kind at WARNING (it is then in every event's field)."""
        self.metrics.outcomes.labels(kind).inc()
        if kind not in self._warned:
            self._warned.add(kind)
            why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
            logger.warning(
                "snapshot not stored (%s)%s; events go on without theirs and say why "
                "(snapshot_error), this is said once per kind",
                kind,
                why,
            )
        return SnapshotOutcome(None, kind)

    async def get(self, name: str) -> bytes | None:
        """A stored snapshot's JPEG, or None if there is none by that name."""
        if self._js is None:
            return None
        return await read_object(self._js, self.name, name)


async def _bind_or_create(
    js: JetStreamContext, name: str, config: SnapshotsConfig, nats_config: NatsConfig
) -> ObjectStore:
    try:
        return await js.object_store(name)
    except nats.js.errors.NotFoundError:
        settings = ObjectStoreConfig(
            bucket=name,
            description="vidcap keyframe snapshots",
            ttl=config.max_age_s,
            max_bytes=config.max_bytes,
            replicas=nats_config.replicas,
        )
        logger.info(
            "creating object store %s (max age %g s, %d MiB)",
            name,
            config.max_age_s,
            config.max_bytes >> 20,
        )
        return await js.create_object_store(name, settings)


def encode_jpeg(image: Image.Image, quality: int, planes: YuvPlanes | None = None) -> bytes:
    """``image`` as a JPEG; from ``planes``, the same picture in a JPEG's own YUV, if given."""
    if planes is not None:
        jpeg: bytes = simplejpeg.encode_jpeg_yuv_planes(*planes, quality=quality)
        return jpeg
    buffer = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # no copy of what is RGB
    rgb.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _error_kind(exc: BaseException) -> SnapshotError:
    if isinstance(exc, nats.js.errors.APIError) and (
        exc.err_code in _OUT_OF_ROOM_CODES or "maximum" in (exc.description or "")
    ):
        return "full"
    return "failed"


class SnapshotNotFound(LookupError):
    """No snapshot for that event; the message says why (no event, none taken, aged out)."""


async def read_snapshot(
    js: JetStreamContext, nats_config: NatsConfig, stream: str, seq: int
) -> tuple[bytes, dict[str, Any]]:
    """The JPEG of the caption event ``seq`` of ``stream``, and the event's snapshot field."""
    prefix, stream_name = nats_config.subject_prefix, nats_config.stream_name
    event = await find_event(js, stream_name, prefix, stream, seq)
    if event is None:
        raise SnapshotNotFound(f"JetStream {stream_name} holds no event {stream} #{seq}")
    if event.get("type") != "caption":
        raise SnapshotNotFound(f"{stream} #{seq} is a {event.get('type')} event, not a caption")
    reference = event.get("snapshot")
    if not isinstance(reference, dict):
        why = event.get("snapshot_error") or "its event predates snapshots"
        raise SnapshotNotFound(f"{stream} #{seq} has no snapshot ({why})")
    try:
        data = await read_object(js, reference["bucket"], reference["name"])
    except nats.js.errors.NotFoundError:
        data = None  # the whole bucket
    if data is None:
        raise SnapshotNotFound(
            f"{stream} #{seq}: {reference['bucket']}/{reference['name']} is gone "
            "(removed after snapshots.max_age_s?)"
        )
    return data, reference

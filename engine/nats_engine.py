"""Scale-out over NATS: `vidcap worker` serves an engine in a queue group; `vidcap run`
sends keyframes to it as requests and keeps per-stream order itself (its sequencer).

A request is a size-bounded JPEG with the request id and token budget in headers; the reply
is the raw completion, which the requesting side's guard judges. A worker that dies
mid-request simply never answers: the request times out after ``attempt_timeout_s`` and is
sent again, to whichever worker the queue group picks. A worker whose engine died answers
what it took with error code 503 and leaves; those requests are sent again at once. Each try
has its own reply inbox, so a late answer to an abandoned try is dropped, never published
twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import itertools
import logging
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import ERROR_CODE_HEADER
from nats.micro.service import EndpointInfo
from PIL import Image, UnidentifiedImageError

from engine.base import CaptionEngine, Generation
from engine.errors import (
    EngineAbsentError,
    EngineDeadError,
    EngineError,
    MalformedReplyError,
    VidcapError,
)
from engine.guard import printable
from engine.worker_service import (
    ENDPOINT_NAME,
    FAILED_CODE,
    REFUSED_CODE,
    SERVICE_NAME,
    UNAVAILABLE_CODE,
    EndpointCounters,
    WorkerService,
    error_headers,
)

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES: Final = 900_000  # under NATS's default 1 MiB max_payload
JPEG_QUALITIES: Final = (90, 80, 70, 55, 40)
QUEUE_GROUP: Final = "vidcap-workers"
DEFAULT_MAX_TOKENS: Final = 512
PRIORITY_HEADER: Final = "Vidcap-Priority"
MAX_PRIORITY: Final = 100
NO_WORKER_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)
PROBE_HEADER: Final = "Vidcap-Probe"
PROBE_TIMEOUT_S: Final = 1.0
WATCH_S: Final = 2.0


def engine_subject(prefix: str) -> str:
    # Not under "<prefix>.>": the JetStream stream that stores events would capture the
    # requests and answer them with its own acks.
    return f"{prefix}_engine.caption"


def encode_jpeg(image: Image.Image, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The best JPEG quality that fits; halve the size if even the lowest does not."""
    picture = image.convert("RGB")
    while True:
        for quality in JPEG_QUALITIES:
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=quality)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        picture = picture.resize((max(1, picture.width // 2), max(1, picture.height // 2)))


class NatsEngine:
    """The requesting side: a CaptionEngine whose work is done by `vidcap worker`s."""

    def __init__(
        self, client: Client, subject: str, model_id: str, attempt_timeout_s: float, attempts: int
    ) -> None:
        self._client = client
        self._subject = subject
        self.model_id = model_id
        self._attempt_timeout_s = attempt_timeout_s
        self._attempts = attempts
        self._serving = asyncio.Event()  # a worker was there; cleared when none answers
        self._looking = asyncio.Lock()  # one looks for a worker, the other requests wait
        self._said_absent = False
        self._watching: asyncio.Task[None] | None = None

    @property
    def absent(self) -> str | None:
        """Why no request can be served now (for readiness); None while a worker is known."""
        return None if self._serving.is_set() else f"no vidcap worker is serving {self._subject}"

    async def until_serving(self) -> None:
        """Return once a worker serves the subject; while none does, look again with backoff
        (said once in the log, and again when one comes). From the first call on, a worker
        leaving or coming is also seen with no request asking (see ``_watch``)."""
        if self._watching is None:
            self._watching = asyncio.create_task(self._watch(), name="engine-worker-watch")
        async with self._looking:
            for attempt in itertools.count():
                if self._serving.is_set():
                    return
                if await self._worker_answers():
                    self._found()
                    return
                self._lost()
                await asyncio.sleep(NO_WORKER_BACKOFF_S[min(attempt, len(NO_WORKER_BACKOFF_S) - 1)])

    async def _watch(self) -> None:
        """Ask every WATCH_S whether a worker serves, so that readiness and the log follow the
        workers while no keyframe asks (a quiet camera's vidcap said ready with none left)."""
        while True:
            await asyncio.sleep(WATCH_S)
            answered = await self._worker_answers()
            if answered:
                self._found()
            elif answered is not None:
                self._lost()

    def _found(self) -> None:
        self._serving.set()
        if self._said_absent:
            logger.warning("a vidcap worker serves %s: keyframes go on", self._subject)
        self._said_absent = False

    def _lost(self) -> None:
        self._serving.clear()
        if not self._said_absent:
            self._said_absent = True
            logger.warning("no vidcap worker is serving %s; keyframes wait for one", self._subject)

    async def _worker_answers(self) -> bool | None:
        """Whether a worker is there; None when NATS itself is away (nobody can tell)."""
        try:
            await self._client.request(
                self._subject, b"", timeout=PROBE_TIMEOUT_S, headers={PROBE_HEADER: "1"}
            )
        except nats.errors.NoRespondersError:
            return False
        except nats.errors.TimeoutError:
            return True  # it reached a subscriber (a worker from before probes answers late)
        except nats.errors.Error:
            return None
        return True

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        payload = await asyncio.to_thread(encode_jpeg, image)
        headers = {"Vidcap-Request-Id": request_id, "Vidcap-Max-Tokens": str(max_tokens)}
        if priority:
            headers[PRIORITY_HEADER] = str(priority)
        last_error = "no attempt"
        for attempt in range(1, self._attempts + 1):
            try:
                reply = await self._client.request(
                    self._subject, payload, timeout=self._attempt_timeout_s, headers=headers
                )
                return parse_reply(reply.data, reply.headers)
            except nats.errors.NoRespondersError:
                self._lost()
                raise EngineAbsentError(f"no vidcap worker is serving {self._subject}") from None
            except nats.errors.TimeoutError:
                last_error = f"no reply within {self._attempt_timeout_s:g} s (worker lost?)"
            except WorkerUnavailableError as exc:
                last_error = str(exc)
            if attempt < self._attempts:
                logger.warning("request %s try %d: %s; retrying", request_id, attempt, last_error)
        raise EngineError(f"{request_id}: {last_error} after {self._attempts} tries")

    async def close(self) -> None:
        """Stop watching for workers; the NATS client belongs to the caller (it also
        publishes the events)."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching


def parse_reply(data: bytes, headers: Mapping[str, str] | None) -> Generation:
    """A worker's reply as a Generation; MalformedReplyError for anything else."""
    if headers and headers.get(ERROR_CODE_HEADER) == UNAVAILABLE_CODE:
        raise WorkerUnavailableError(f"worker unavailable: {headers.get('Vidcap-Error', '')[:500]}")
    if headers and headers.get("Vidcap-Error"):
        raise EngineError(f"worker failed: {headers['Vidcap-Error'][:500]}")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedReplyError(f"worker reply is not JSON: {data[:200]!r}") from None
    if not isinstance(body, dict):
        raise MalformedReplyError(f"worker reply is not an object: {data[:200]!r}")
    field: dict[str, Any] = collections.defaultdict(lambda: None, body)
    return Generation(  # type-checked by Generation
        text=field["text"],
        finish_reason=field["finish_reason"],
        prompt_tokens=field["prompt_tokens"],
        output_tokens=field["output_tokens"],
        first_token_s=field["first_token_s"],
    )


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a worker accepts from anyone on the bus (see WorkerConfig for the defaults' why)."""

    max_image_bytes: int = 1 << 20
    max_image_pixels: int = 4096 * 4096
    max_tokens: int = 4096


class WorkerUnavailableError(EngineError):
    """The worker that got the request cannot serve any (its engine died); another can."""


class RequestRefused(VidcapError):
    """A caption request the worker will not serve; the message says why."""


def decode_request_image(data: bytes, limits: RequestLimits) -> Image.Image:
    """The request's JPEG, decoded, or RequestRefused. Blocking: run it off the event loop."""
    if len(data) > limits.max_image_bytes:
        raise RequestRefused(f"image of {len(data)} bytes exceeds {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():  # our own pixel limit below judges, not PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG"])  # reads the header only
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise RequestRefused(f"not a JPEG image ({type(exc).__name__})") from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise RequestRefused(
            f"image of {width}x{height} pixels exceeds {limits.max_image_pixels} pixels"
        )
    image.load()
    return image


def granted_tokens(requested: str | None, limits: RequestLimits) -> int:
    """The requested token budget, clamped to the worker's maximum."""
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, limits.max_tokens)
    if not (requested.isascii() and requested.isdigit()) or int(requested) < 1:
        raise RequestRefused(f"Vidcap-Max-Tokens {requested[:20]!r} is not a positive integer")
    return min(int(requested), limits.max_tokens)


def granted_priority(requested: str | None) -> int:
    """The request's priority (higher first), within -MAX_PRIORITY..MAX_PRIORITY."""
    if requested is None:
        return 0
    try:
        priority = int(requested[:8])
    except ValueError:
        raise RequestRefused(f"{PRIORITY_HEADER} {requested[:20]!r} is not an integer") from None
    return max(-MAX_PRIORITY, min(MAX_PRIORITY, priority))


class Worker:
    """The serving side: answers caption requests with a local engine, many at once, and is
    discoverable as the NATS micro service ``vidcap-worker`` (engine/worker_service.py)."""

    def __init__(
        self,
        client: Client,
        engine: CaptionEngine,
        subject: str,
        concurrency: int,
        limits: RequestLimits | None = None,
    ):
        self._client = client
        self._engine = engine
        self._subject = subject
        self._limits = limits or RequestLimits()
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._engine_died = asyncio.Event()
        self.engine_error: EngineDeadError | None = None
        self.counters = EndpointCounters()
        self.served = 0

    async def serve(
        self, stop: asyncio.Event, on_ready: Callable[[str], None] = logger.info
    ) -> None:
        """Answer requests until ``stop`` is set or the engine dies (then ``engine_error`` says
        why: a worker that can serve nothing must leave the queue group, and its supervisor
        restart it); ``on_ready`` hears once requests can arrive."""
        subscription = await self._client.subscribe(
            self._subject, queue=QUEUE_GROUP, cb=self._on_request
        )
        service = WorkerService(self._client, self._endpoint(), self.counters, self._metadata())
        await service.start()  # flushes: both subscriptions are in place
        on_ready(
            f"serving {self._subject} (queue group {QUEUE_GROUP}) as NATS service "
            f"{SERVICE_NAME} {service.id}"
        )
        try:
            await _first_set(stop, self._engine_died)
            await subscription.drain()  # take no more; finish what is in flight
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await service.stop()  # listed until its last answer

    def _endpoint(self) -> EndpointInfo:
        limits = {name: str(value) for name, value in asdict(self._limits).items()}
        return EndpointInfo(ENDPOINT_NAME, self._subject, QUEUE_GROUP, limits)

    def _metadata(self) -> dict[str, str]:
        return {
            "model_id": self._engine.model_id,
            "concurrency": str(self._concurrency),
            "host": socket.gethostname(),
        }

    async def _on_request(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(PROBE_HEADER) and msg.reply:
            await msg.respond(b"")  # "is a worker there?": yes, whatever its load
            return
        started_ns = self.counters.start()
        await self._slots.acquire()  # backpressure: NATS buffers the rest for this worker
        task = asyncio.create_task(self._answer(msg, started_ns))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg, started_ns: int) -> None:
        headers = msg.headers or {}
        request_id = headers.get("Vidcap-Request-Id", "unnamed")
        error: str | None = None
        try:
            if not msg.reply:
                raise RequestRefused("a request without a reply subject")
            max_tokens = granted_tokens(headers.get("Vidcap-Max-Tokens"), self._limits)
            image = await asyncio.to_thread(decode_request_image, msg.data, self._limits)
            priority = granted_priority(headers.get(PRIORITY_HEADER))
            generation = await self._engine.generate(image, request_id, max_tokens, priority)
            await msg.respond(orjson.dumps(_as_dict(generation)))
            self.served += 1
        except Exception as exc:  # answer every request, even a bad one
            if isinstance(exc, EngineDeadError) and self.engine_error is None:
                self.engine_error = exc
                self._engine_died.set()
            refused = isinstance(exc, RequestRefused)
            error = printable((str(exc) if refused else repr(exc))[:500])  # one header line
            logger.warning("request %s failed: %s", printable(request_id[:100]), error)
            if msg.reply:
                answer = error_headers(error, _error_code(exc))
                await self._client.publish(msg.reply, b"", headers=answer)
        finally:
            self._slots.release()
            self.counters.finish(started_ns, error)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, RequestRefused):
        return REFUSED_CODE
    return UNAVAILABLE_CODE if isinstance(exc, EngineDeadError) else FAILED_CODE


async def _first_set(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _as_dict(generation: Generation) -> dict[str, Any]:
    return {
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "output_tokens": generation.output_tokens,
        "first_token_s": generation.first_token_s,
    }

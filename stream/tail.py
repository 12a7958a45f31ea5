"""`vidcap tail`: print events readably (or raw with --json), live or replayed from JetStream.

Live: a core NATS subscription (what is published from now on). Replay (``--since`` or
``--from-seq``): an ordered JetStream consumer from that point, then on into live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from engine.errors import VidcapError
from engine.guard import printable
from stream.config import NatsConfig
from stream.console import print_line
from stream.redact import redact

_SUMMARY_CHARS = 100
ENDED_CHECK_S: Final = 0.5
CLOSE_TIMEOUT_S: Final = 5.0
# Characters JSON may carry raw that a terminal would act on (orjson escapes C0 already):
# DEL, C1 controls (U+009B is CSI), bidi controls. Raw lines get them as \u escapes.
_JSON_ESCAPES = {
    c: f"\\u{c:04x}"
    for c in (0x7F, *range(0x80, 0xA0), 0x61C, 0x200E, 0x200F, *range(0x202A, 0x202F))
}
_JSON_ESCAPES.update({c: f"\\u{c:04x}" for c in range(0x2066, 0x206A)})


def raw_line(data: bytes) -> str:
    """An event's JSON as one line safe for a terminal, still the same JSON."""
    return data.decode(errors="replace").translate(_JSON_ESCAPES)


def format_event(event: dict[str, Any]) -> str:
    """One readable line; every control or bidi character the event carries is escaped.
    Anyone who may publish on the subjects can send anything: what is not a well-formed
    event gets a line saying so, never a traceback that ends the tail."""
    try:
        return printable(_readable(event))
    except (KeyError, TypeError, ValueError, AttributeError):
        head = f"{event.get('stream')} #{event.get('seq')} {event.get('type')}"
        return printable(f"{head} (not a well-formed vidcap event)")


def _readable(event: dict[str, Any]) -> str:
    head = f"{event.get('stream')} #{event.get('seq')}"
    if event.get("type") == "status":
        return f"{head} status  {event.get('state')}: {event.get('detail')}"
    if event.get("type") == "logo":
        return (
            f"{head} logo    {event.get('alert')}: {event.get('brand')} ({event.get('matched')!r})"
        )
    if event.get("type") != "caption":
        return f"{head} {event.get('type')}"
    frame, selection = event["frame"], event["selection"]
    where = f"kf {event['keyframe']} frame {frame['index']} t={frame['time_s']:.2f}s"
    why = f"{selection['reason']}({selection['score']:.1f})"
    took = f"{event['timing']['engine_s']:.2f}s"
    if event["status"] == "ok":
        summary = event["caption"]["summary"] or event["caption"]["description"]
        text = summary if len(summary) <= _SUMMARY_CHARS else summary[: _SUMMARY_CHARS - 1] + "…"
        return f"{head} caption {where} {why} ok {took}: {text!r}"
    error = event["error"]
    return f"{head} caption {where} {why} FAILED {took}: {error['reason']} ({error['detail']})"


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a duration back from now: 90s, 10m, 2h, 1d."""
    if match := _RELATIVE.match(text.strip()):
        amount, unit = float(match[1]), _UNITS[match[2]]
        try:
            return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
        except OverflowError:
            raise ValueError(f"--since {text!r}: before the year 1") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: use an ISO time or 90s / 10m / 2h / 1d") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class TailError(VidcapError):
    """What `vidcap tail` cannot do; the message says why."""


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What `vidcap tail` prints; ``since``/``from_seq`` replay from JetStream first."""

    config: NatsConfig
    stream: str | None = None
    raw: bool = False
    kinds: list[str] | None = None
    since: datetime | None = None
    from_seq: int | None = None

    def live(self) -> TailOptions:
        return replace(self, since=None, from_seq=None)


async def print_events(
    client: Client, url: str, options: TailOptions, ended: Callable[[], bool] | None = None
) -> None:
    """Print the events ``client`` receives until cancelled, or until ``ended()`` (asked
    twice a second) says their source is gone; the client is closed either way."""
    queue: asyncio.Queue[tuple[bytes, int | None]] = asyncio.Queue(maxsize=10_000)
    try:
        subject, where = await _subscribe(client, url, options, queue)
        await client.flush()  # the subscription is live on the server before we say so
        print(
            f"vidcap tail: listening on {subject} at {redact(url)} ({where})",
            file=sys.stderr,
            flush=True,
        )
        while ended is None or not ended():
            with contextlib.suppress(TimeoutError):
                data, position = await asyncio.wait_for(queue.get(), ENDED_CHECK_S)
                _print_event(data, position, options)
        while not queue.empty():  # what arrived before the end
            _print_event(*queue.get_nowait(), options)
    finally:
        await _close(client)


async def _subscribe(
    client: Client,
    url: str,
    options: TailOptions,
    queue: asyncio.Queue[tuple[bytes, int | None]],
) -> tuple[str, str]:
    config = options.config
    kinds = options.kinds
    kind = kinds[0] if kinds and len(kinds) == 1 else "*"
    subject = f"{config.subject_prefix}.{options.stream or '*'}.{kind}"

    async def on_live(msg: Any) -> None:
        # A JetStream publish carries a reply subject too (its ack inbox): never metadata here.
        await queue.put((msg.data, None))

    async def on_replayed(msg: Any) -> None:
        await queue.put((msg.data, msg.metadata.sequence.stream))

    if options.since is None and options.from_seq is None:
        await client.subscribe(subject, cb=on_live)
        return subject, "live"
    start = (
        ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=options.since)
        if options.since is not None
        else ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=options.from_seq
        )
    )
    try:
        await client.jetstream().subscribe(
            subject, cb=on_replayed, ordered_consumer=True, config=start, stream=config.stream_name
        )
    except nats.js.errors.NotFoundError:
        raise TailError(
            f"no JetStream stream {config.stream_name} at {redact(url)}: nothing to replay "
            "(vidcap makes it once its engine has loaded; --stream-name names another)"
        ) from None
    where = f"JetStream {config.stream_name} from " + (
        options.since.isoformat()
        if options.since is not None
        else f"stream sequence {options.from_seq}"
    )
    return subject, where


def _print_event(data: bytes, position: int | None, options: TailOptions) -> None:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        print_line(f"(a message of {len(data)} bytes that is no JSON object: not an event)")
        return
    if options.kinds and event.get("type") not in options.kinds:
        return
    line = raw_line(data) if options.raw else format_event(event)
    if position is not None and not options.raw:
        line += f"  [js {position}]"
    print_line(line)


async def _close(client: Client) -> None:
    # Drained when connected (what is buffered still arrives); closed when its server is gone.
    with contextlib.suppress(Exception):
        if client.is_connected:
            await asyncio.wait_for(client.drain(), CLOSE_TIMEOUT_S)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)

"""`vidcap tail`: subscribe to events and print them readably (or raw with --json)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from stream.config import NatsConfig
from stream.publisher import connect

_SUMMARY_CHARS = 100


def format_event(event: dict[str, Any]) -> str:
    head = f"{event.get('stream')} #{event.get('seq')}"
    if event.get("type") == "status":
        return f"{head} status  {event.get('state')}: {event.get('detail')}"
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


async def tail(url: str, config: NatsConfig, stream: str | None, raw: bool) -> None:
    """Print events until cancelled."""
    client = await connect(config, url)
    subject = f"{config.subject_prefix}.{stream or '*'}.>"
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

    async def on_message(msg: Any) -> None:
        await queue.put(msg.data)

    await client.subscribe(subject, cb=on_message)
    await client.flush()  # the subscription is live on the server before we say so
    print(f"vidcap tail: listening on {subject} at {url}", flush=True)
    try:
        while True:
            data = await queue.get()
            print(data.decode() if raw else format_event(orjson.loads(data)), flush=True)
    finally:
        await client.drain()

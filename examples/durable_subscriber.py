"""A durable JetStream subscriber for vidcap events: acknowledges each event after handling it,
and after a crash or restart resumes with the first event it had not acknowledged.

    python examples/durable_subscriber.py --nats nats://127.0.0.1:4222 --durable archive \\
        [--subject 'vidcap.*.caption'] [--stream VIDCAP]

The consumer's position lives in the NATS server (a durable pull consumer), so any number of
restarts continue where the last run stopped. Events of one vidcap stream arrive in `seq`
order, one sequence per stream across vidcap's runs (a `resumed` status event marks where a
new run took over); this example checks that and reports a gap (none is expected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

BATCH = 64


def handle(event: dict, last_seq: dict[str, int]) -> None:
    """Your code goes here. This one prints the event and checks per-stream order."""
    stream = event["stream"]
    expected = last_seq.get(stream, -1) + 1
    if event["seq"] != expected and stream in last_seq:
        print(f"GAP in {stream}: expected seq {expected}, got {event['seq']}", flush=True)
    if event.get("state") == "resumed" and event["previous_end"] == "interrupted":
        print(f"{stream}: session {event['previous_session']} died; a new run goes on", flush=True)
    last_seq[stream] = event["seq"]
    print(json.dumps(event, separators=(",", ":")), flush=True)


async def run(url: str, stream: str, durable: str, subject: str, stop: asyncio.Event) -> None:
    client = await nats.connect(url, max_reconnect_attempts=-1)
    js = client.jetstream()
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                filter_subject=subject,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
            ),
        )
    subscription = await js.pull_subscribe_bind(durable, stream)
    last_seq: dict[str, int] = {}
    while not stop.is_set():
        try:
            messages = await subscription.fetch(BATCH, timeout=1)
        except TimeoutError:  # nats-py raises its own or asyncio's, both TimeoutErrors
            continue
        for message in messages:
            handle(json.loads(message.data), last_seq)
            await message.ack()  # only now: a crash before this re-delivers the event
    await client.flush()  # the last acks reach the server before we go
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="VIDCAP", help="JetStream stream (nats.stream_name)")
    parser.add_argument("--durable", default="vidcap-example", help="consumer name to resume")
    parser.add_argument("--subject", default="vidcap.>", help="e.g. 'vidcap.lobby.>'")
    args = parser.parse_args()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run(args.nats, args.stream, args.durable, args.subject, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


if __name__ == "__main__":
    main()

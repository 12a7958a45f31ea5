"""Forward vidcap logo alerts to a webhook: each `logo` event is POSTed as JSON, and
acknowledged in JetStream only once the webhook answered 2xx (otherwise it is retried later).

    python examples/logo_webhook.py --nats nats://127.0.0.1:4222 \\
        --webhook https://alerts.example/hooks/vidcap [--brand Nike --brand Adidas]

Uses a durable consumer on `<prefix>.*.logo`, so alerts raised while this forwarder was down
are delivered when it comes back, in order; a POST that fails is retried after
RETRY_DELAY_S without holding up the alerts behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

import aiohttp
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

RETRY_DELAY_S = 5


def message_for(alert: dict) -> dict:
    """The webhook body: the alert plus a one-line text for chat tools."""
    verb = "appeared on" if alert["alert"] == "appeared" else "left"
    first = alert["keyframes"][0]
    text = (
        f"{alert['brand']} {verb} {alert['stream']} at {first['captured_at']}: {alert['matched']}"
    )
    return {"text": text, "alert": alert}


async def forward(
    url: str,
    webhook: str,
    prefix: str,
    stream: str,
    durable: str,
    brands: set[str],
    stop: asyncio.Event,
) -> None:
    client = await nats.connect(url, max_reconnect_attempts=-1)
    js = client.jetstream()
    try:
        await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                filter_subject=f"{prefix}.*.logo",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=60,
            ),
        )
    subscription = await js.pull_subscribe_bind(durable, stream)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(16, timeout=1)
            except TimeoutError:  # nats-py raises its own or asyncio's, both TimeoutErrors
                continue
            for message in messages:
                alert = json.loads(message.data)
                if brands and alert["brand"].lower() not in brands:
                    await message.ack()
                    continue
                try:
                    async with http.post(webhook, json=message_for(alert)) as response:
                        delivered = 200 <= response.status < 300
                except aiohttp.ClientError:
                    delivered = False
                if delivered:
                    await message.ack()
                else:
                    await message.nak(delay=RETRY_DELAY_S)
    await client.flush()  # the last acks reach the server before we go
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--webhook", required=True)
    parser.add_argument("--prefix", default="vidcap")
    parser.add_argument("--stream", default="VIDCAP")
    parser.add_argument("--durable", default="vidcap-logo-webhook")
    parser.add_argument("--brand", action="append", default=[], help="only these brands")
    args = parser.parse_args()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        brands = {b.lower() for b in args.brand}
        await forward(args.nats, args.webhook, args.prefix, args.stream, args.durable, brands, stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


if __name__ == "__main__":
    main()

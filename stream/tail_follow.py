"""Which NATS `vidcap tail` listens to: the one given; else the embedded server of the vidcap
running here and, when that vidcap stops, the next one started (each run's server has a new
port); else a NATS at the default address. It waits, saying so once, while there is none."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final
from urllib.parse import urlsplit

from nats.aio.client import Client

from stream.console import say_to
from stream.delivery import embedded_address
from stream.delivery.publisher import connect
from stream.tail import TailOptions, print_events

LOOK_AGAIN_S: Final = 0.5
PROBE_TIMEOUT_S: Final = 1.0


say = say_to("vidcap tail")


async def tail(url: str | None, options: TailOptions) -> None:
    """Print events until cancelled."""
    if url is not None:
        await print_events(await connect(options.config, url, say), url, options)
        return
    said_waiting = False
    while True:
        found = embedded_address.running_vidcap()
        if found is not None:
            await _follow_vidcap(*found, options)
            # The next run's stream is a new one: its events from the start, as they come.
            options = options.live()
            said_waiting = True
        elif await _nats_answers(embedded_address.DEFAULT_URL):
            default = embedded_address.DEFAULT_URL
            await print_events(await connect(options.config, default, say), default, options)
            return
        elif not said_waiting:
            say(
                "no vidcap is running here and no NATS answers at "
                f"{embedded_address.DEFAULT_URL}; waiting for either (Ctrl-C to quit; "
                "--nats URL to listen elsewhere)"
            )
            said_waiting = True
        await asyncio.sleep(LOOK_AGAIN_S)


async def _follow_vidcap(url: str, pid: int, options: TailOptions) -> None:
    say(f"the embedded nats-server of vidcap (pid {pid}) at {url}")
    client = await _connect_while_running(url, pid, options)
    if client is not None:
        await print_events(client, url, options, ended=lambda: _gone(client, pid))
    say(f"vidcap (pid {pid}) has stopped; waiting for the next vidcap here (Ctrl-C to quit)")


async def _connect_while_running(url: str, pid: int, options: TailOptions) -> Client | None:
    """Connected, or None once that vidcap has stopped (it may stop before we are in)."""
    connecting = asyncio.ensure_future(connect(options.config, url, say))
    while not connecting.done():
        await asyncio.wait({connecting}, timeout=LOOK_AGAIN_S)
        if not connecting.done() and not embedded_address.is_running(pid):
            connecting.cancel()
            await asyncio.wait({connecting})
            if not connecting.cancelled() and connecting.exception() is None:
                await connecting.result().close()  # it got in just then
            return None
    return connecting.result()


def _gone(client: Client, pid: int) -> bool:
    # Its server stops before the process ends: both, so a NATS hiccup alone is not an end.
    return not client.is_connected and not embedded_address.is_running(pid)


async def _nats_answers(url: str) -> bool:
    """Whether a NATS server greets at ``url`` (one quiet try: a refusal is not news)."""
    address = urlsplit(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address.hostname, address.port), PROBE_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return greeting.startswith(b"INFO ")

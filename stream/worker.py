"""`vidcap worker`: a GPU host's engine, served to every `vidcap run` on the same NATS."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from engine.factory import start_engine
from engine.nats_engine import RequestLimits, Worker, engine_subject
from stream.config import WorkerConfig
from stream.delivery.publisher import close_client, connect

logger = logging.getLogger(__name__)


async def run_worker(config: WorkerConfig, announce: Callable[[str], None] = logger.info) -> int:
    assert config.nats.url is not None
    engine = await start_engine(config.engine)
    client = await connect(config.nats, config.nats.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():  # said at once: the answers in flight can take a while
            announce("stopping: taking no more requests, answering those in flight")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    limits = RequestLimits(config.max_image_bytes, config.max_image_pixels, config.max_tokens)
    subject = engine_subject(config.nats.subject_prefix)
    worker = Worker(client, engine, subject, config.concurrency, limits)
    try:
        await worker.serve(stop, announce)  # SIGTERM: stop taking, answer those in flight
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await close_client(client)  # drained, or closed if NATS is away
        await engine.close()
    if worker.engine_error is not None:  # a non-zero exit: the supervisor restarts it
        announce(f"engine died after serving {worker.served} requests: {worker.engine_error}")
        return 1
    announce(f"stopped after serving {worker.served} requests")
    return 0

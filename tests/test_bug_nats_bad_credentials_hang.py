"""A product bug found for issue 13, now fixed: refused credentials fail at once.

With wrong NATS credentials, ``stream.delivery.publisher.connect`` never returns: nats-py
retries the "Authorization Violation" for ever (``max_reconnect_attempts=-1`` also governs the
first connect), logging a warning each time, so ``vidcap run`` hangs at start instead of
failing with a message.
"""

from __future__ import annotations

import asyncio

import pytest

from stream.config import NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import NatsRefusedError, connect
from tests.test_nats_auth import USER, password_server

__all__ = ["password_server"]  # the fixture, shared


async def test_wrong_credentials_fail_within_the_connect_timeout(
    password_server: EmbeddedNatsServer,
) -> None:
    url = password_server.url
    config = NatsConfig(url=url, user=USER, password="wrong", connect_timeout_s=2)
    with pytest.raises(NatsRefusedError):
        # Generous: a few connect timeouts; the bug is that it never ends.
        await asyncio.wait_for(connect(config, url), 30)

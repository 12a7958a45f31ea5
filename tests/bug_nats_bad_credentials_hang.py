"""A product bug found for issue 13, kept out of collection so main stays green: rename to
``test_bug_nats_bad_credentials_hang.py`` once fixed.

With wrong NATS credentials, ``stream.delivery.publisher.connect`` never returns: nats-py
retries the "Authorization Violation" for ever (``max_reconnect_attempts=-1`` also governs the
first connect), logging a warning each time, so ``vidcap run`` hangs at start instead of
failing with a message.
"""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from stream.config import NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import connect
from tests.test_nats_auth import USER, password_server

__all__ = ["password_server"]  # the fixture, shared


async def test_wrong_credentials_fail_within_the_connect_timeout(
    password_server: EmbeddedNatsServer,
) -> None:
    url = password_server.url
    config = NatsConfig(url=url, user=USER, password="wrong", connect_timeout_s=2)
    with pytest.raises(nats.errors.Error):
        # Generous: a few connect timeouts; the bug is that it never ends.
        await asyncio.wait_for(connect(config, url), 30)

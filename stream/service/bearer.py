"""Bearer tokens, checked in constant time (WHIP publishers, the stream API)."""

from __future__ import annotations

import hashlib
import hmac


class BearerToken:
    def __init__(self, token: str) -> None:
        self._expected = _digest(token)

    def matches(self, authorization: str) -> bool:
        """The scheme in any case (RFC 9110: case-insensitive); the token compared as SHA-256
        digests, constant time in its content and length."""
        scheme, _, token = authorization.partition(" ")
        matched = hmac.compare_digest(_digest(token.lstrip(" ")), self._expected)
        return matched and scheme.lower() == "bearer"


def _digest(text: str) -> bytes:
    # aiohttp decodes header bytes as UTF-8 with surrogate escapes; they must still hash.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()

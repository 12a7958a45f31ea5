"""The bearer token check: the scheme is case-insensitive (RFC 9110 11.1), the token is not."""

from __future__ import annotations

import pytest

from stream.service.bearer import BearerToken

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}"]
)
def test_the_right_token_under_any_spelling_of_the_scheme(authorization: str) -> None:
    assert BearerToken(TOKEN).matches(authorization)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        TOKEN,
        f"Bearer{TOKEN}",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN.upper()}",
        f"Bearer {TOKEN} ",
        f"Bearer {TOKEN}x",
        "Bearer \udcff",  # undecodable header bytes, as aiohttp hands them over
    ],
)
def test_anything_else_is_refused(authorization: str) -> None:
    assert not BearerToken(TOKEN).matches(authorization)

"""A remote OpenAI-compatible server (`vllm serve`, or any chat-completions endpoint).

The same canonical prompts (fixed text, then the image), the caption JSON schema as
``response_format``, stop strings, one pooled HTTP session, a connect timeout, and retries
with backoff for transport failures and 429/5xx answers. The per-request deadline is the
Captioner's: cancelling a call closes its connection, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson
from PIL import Image

from engine.base import Generation
from engine.errors import EngineError, MalformedReplyError
from engine.prompts import SYSTEM_PROMPT, USER_PROMPT
from engine.schema import CAPTION_SCHEMA

logger = logging.getLogger(__name__)

JPEG_QUALITY: Final = 90
CONNECT_TIMEOUT_S: Final = 5.0
TRANSPORT_ATTEMPTS: Final = 4
BACKOFF_S: Final = (0.2, 0.5, 1.0)
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_REPLY_BYTES: Final = 1 << 20  # a caption is a few kB; anything bigger is not one


def jpeg_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class OpenAIEngine:
    """CaptionEngine over HTTP. Create it inside the event loop that will use it."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.1,
        stop: list[str] | None = None,
        max_connections: int = 64,
        model_id: str | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._shown_url = _without_credentials(self._url)
        self._model = model
        self.model_id = model_id or model.rstrip("/").rsplit("/", 1)[-1]
        self._temperature = temperature
        self._stop = list(stop or [])
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S),
        )

    def request_body(self, image: Image.Image, max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": USER_PROMPT},
                        {"type": "image_url", "image_url": {"url": jpeg_data_url(image)}},
                    ],
                },
            ],
            "temperature": self._temperature,
            "max_tokens": max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "caption", "schema": CAPTION_SCHEMA, "strict": True},
            },
        }
        if self._stop:
            body["stop"] = self._stop
            body["include_stop_str_in_output"] = True  # vLLM: keep "}\n" for the guard
        return body

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        """``priority`` is not sent: OpenAI-compatible servers differ on it (vidcap's own
        admission still orders the requests it lets through)."""
        body = self.request_body(image, max_tokens)
        for attempt in range(TRANSPORT_ATTEMPTS):
            try:
                return parse_reply(await self._post(body, request_id))
            except _Retryable as exc:
                if attempt == TRANSPORT_ATTEMPTS - 1:
                    raise EngineError(
                        f"{self._shown_url}: {exc} (after {attempt + 1} tries)"
                    ) from exc
                logger.warning("request %s: %s; retrying", request_id, exc)
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        raise AssertionError("unreachable")

    async def _post(self, body: dict[str, Any], request_id: str) -> bytes:
        try:
            async with self._session.post(
                self._url, json=body, headers={"X-Request-Id": request_id}
            ) as response:
                if response.status in RETRY_STATUSES:
                    raise _Retryable(f"HTTP {response.status}: {await _excerpt(response)}")
                if response.status != 200:
                    text = await _excerpt(response)
                    raise EngineError(f"{self._shown_url}: HTTP {response.status}: {text}")
                return await _read_bounded(response)
        except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._session.close()


class _Retryable(Exception):
    pass


def parse_reply(data: bytes) -> Generation:
    """A chat-completions response body as a Generation; MalformedReplyError for anything
    else (an HTML error page, invalid JSON, a list ``content``, missing fields)."""
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedReplyError(f"reply is not JSON: {data[:200]!r}") from None
    if not isinstance(reply, dict):
        raise MalformedReplyError(f"reply is not an object: {data[:200]!r}")
    choices = reply.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    usage = reply.get("usage") or {}
    if not isinstance(choice, dict) or not isinstance(message, dict) or not isinstance(usage, dict):
        raise MalformedReplyError(f"not a chat completion: {data[:200]!r}")
    content = message.get("content")
    return Generation(  # type-checked by Generation
        text="" if content is None else content,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
        first_token_s=None,  # not streamed: the server reports no first-token time
    )


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            raise MalformedReplyError(f"reply larger than {MAX_REPLY_BYTES} bytes")
    return bytes(body)


async def _excerpt(response: aiohttp.ClientResponse) -> str:
    return (await _read_bounded(response))[:300].decode(errors="replace")


def _without_credentials(url: str) -> str:
    """The URL as error messages show it: no user-info, no query."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"

"""Fuzz over engine replies: random JSON and non-JSON through the NATS and OpenAI reply parsers
and the Captioner. Every case is a Generation or an EngineError at the parser, and a
CaptionOutcome (a schema-valid caption or a failure with a known reason) at the Captioner.

In the suite: 2,000 cases. By hand:
    VIDCAP_FUZZ_CASES=20000 pytest -s tests/test_security_engine_fuzz.py
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any, get_args

import orjson
from PIL import Image

from engine import nats_engine, openai_engine
from engine.base import Generation
from engine.captioner import Captioner
from engine.errors import EngineError, FailureReason
from engine.schema import validate_caption

CASES = int(os.environ.get("VIDCAP_FUZZ_CASES", "2000"))
CAPTION = {
    "description": "A red square.",
    "objects": ["red square"],
    "actions": [],
    "environment": "plain",
    "content_type": "CGI",
    "specific_style": "test card",
    "production_quality": "synthetic",
    "summary": "A red square.",
    "logos": [],
}
KEYS = ["text", "finish_reason", "prompt_tokens", "output_tokens", "first_token_s", "choices",
        "message", "content", "usage", "completion_tokens", *CAPTION]  # fmt: skip
STRINGS = ["", "stop", "length", "\x00", "\x1b[2J", "\u202e", "<html>", "{", "\\ud800", "x" * 5000]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63 - 1, rng.randint(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, float(rng.random())])
    if kind in (4, 5):
        return rng.choice([*STRINGS, orjson.dumps(CAPTION).decode()])
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def plausible(rng: random.Random) -> dict[str, Any]:
    caption = dict(CAPTION)
    if rng.random() < 0.5:
        caption[rng.choice(list(CAPTION))] = random_value(rng, 2)
    text = orjson.dumps(caption).decode()
    if rng.random() < 0.3:
        text = text[: rng.randrange(len(text) + 1)]
    worker = {"text": text, "finish_reason": "stop", "prompt_tokens": 5, "output_tokens": 5,
              "first_token_s": 0.1}  # fmt: skip
    if rng.random() < 0.5:
        worker[rng.choice(list(worker))] = random_value(rng, 1)
    return worker


def random_reply(rng: random.Random) -> tuple[bytes, bytes]:
    """(worker reply, chat-completions reply)."""
    kind = rng.randrange(5)
    if kind == 0:
        junk = rng.randbytes(rng.randrange(64))
        return junk, junk
    if kind == 1:
        value = orjson.dumps(random_value(rng))
        return value, value
    worker = plausible(rng)
    message: dict[str, Any] = {"role": "assistant", "content": worker["text"]}
    choice: dict[str, Any] = {"message": message, "finish_reason": worker["finish_reason"]}
    usage = {"prompt_tokens": worker["prompt_tokens"], "completion_tokens": worker["output_tokens"]}
    chat: dict[str, Any] = {"choices": [choice], "usage": usage}
    if kind == 3:
        target = rng.choice([chat, choice, message, usage])
        target[rng.choice(KEYS)] = random_value(rng, 1)
    data = orjson.dumps(worker), orjson.dumps(chat)
    if kind == 4:
        cut = rng.randrange(len(data[1]) + 1)
        return data[0][: rng.randrange(len(data[0]) + 1)], data[1][:cut]
    return data


class ReplayEngine:
    """Feeds each reply through a real parser, as the engine would on receiving it."""

    model_id = "fuzz"

    def __init__(self) -> None:
        self.replies: list[Any] = []

    async def generate(
        self, image: Image.Image, request_id: str, max_tokens: int, priority: int = 0
    ) -> Generation:
        parse = self.replies.pop()
        return parse()  # type: ignore[no-any-return]

    async def close(self) -> None:
        pass


async def test_engine_replies_fuzz() -> None:
    rng = random.Random(14)
    engine = ReplayEngine()
    captioner = Captioner(engine, max_attempts=1, timeout_s=5)
    image = Image.new("RGB", (8, 8))
    reasons = set(get_args(FailureReason))
    seen: dict[str, int] = {}
    for _ in range(CASES):
        worker_reply, chat_reply = random_reply(rng)
        parsers = [
            functools.partial(nats_engine.parse_reply, worker_reply, None),
            functools.partial(openai_engine.parse_reply, chat_reply),
        ]
        for parse in parsers:
            try:
                assert isinstance(parse(), Generation)
            except EngineError:
                pass
            engine.replies.append(parse)
            outcome = await captioner.caption(image, "f")
            if outcome.ok:
                assert outcome.caption is not None
                validate_caption(outcome.caption)
                key = "ok"
            else:
                assert outcome.error is not None and outcome.error["reason"] in reasons
                key = outcome.error["reason"]
                assert outcome.error["detail"].isprintable()
                assert outcome.error["excerpt"].isprintable()
            seen[key] = seen.get(key, 0) + 1
    print(f"{CASES} cases x 2 parsers: {seen}")
    assert sum(seen.values()) == 2 * CASES
    assert {"ok", "engine_error", "invalid_json", "schema"} <= set(seen)

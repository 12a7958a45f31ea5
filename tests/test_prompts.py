import re
from pathlib import Path

import pytest

from engine.prompts import SYSTEM_PROMPT, USER_PROMPT

MODEL_CARD = Path(__file__).parents[2] / "shared" / "seed" / "wynd-vidcap-12b-model-card.md"


def canonical_blocks() -> list[str]:
    if not MODEL_CARD.exists():
        pytest.fail(f"model card not found at {MODEL_CARD} (../shared must sit beside the repo)")
    section = MODEL_CARD.read_text().split("## Canonical prompts (use verbatim)")[1]
    return re.findall(r"```\n(.*?)\n```", section, re.S)


def test_prompts_are_verbatim_from_the_model_card() -> None:
    system, user = canonical_blocks()[:2]
    assert SYSTEM_PROMPT == system
    assert USER_PROMPT == user


def test_rendered_prompt_puts_fixed_text_before_the_image(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from engine.vllm_engine import render_prompt

    prompt = render_prompt(AutoTokenizer.from_pretrained(tiny_model), str(tiny_model))
    assert not prompt.startswith("<bos>"), "vLLM adds BOS itself"
    assert (
        prompt.index(SYSTEM_PROMPT) < prompt.index(USER_PROMPT) < prompt.index("<start_of_image>")
    )
    assert prompt.endswith("<start_of_turn>model\n")

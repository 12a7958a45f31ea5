"""Build a tiny, random-weight Gemma 3 checkpoint that the real vLLM engine can serve on a CPU.

It exists so that the demo and the tests run the whole real path (AsyncLLM, image input,
structured output, stop strings, abort) on machines with no GPU and no model download. Its
captions are meaningless. The pitfalls it avoids are listed in the vLLM-on-CPU notes: Gemma's
newline tokens, a SentencePiece-style byte-fallback tokenizer (so xgrammar recognises it), the
image special tokens, and the published weight layout (no vision head).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

SPECIAL_TOKENS: Final = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
)
NEWLINE_TOKENS: Final = ("\n", "\n\n", "\n\n\n", "\n\n\n\n")
# Printable ASCII ("▁" stands for space, SentencePiece style); all else falls back to bytes.
CHAR_TOKENS: Final = tuple(chr(c) for c in range(33, 127)) + ("▁",)
IMAGE_SIZE: Final = 224
TOKENS_PER_IMAGE: Final = 16
BUILD_VERSION: Final = "2"  # bump when the checkpoint changes, to rebuild caches

CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = (message['content'] if message['content'] is string "
    "else message['content'][0]['text']) + '\n\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' }}"
    "{%- if message['role'] == 'user' -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def vocabulary() -> dict[str, int]:
    pieces = [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256)), *NEWLINE_TOKENS, *CHAR_TOKENS]
    return {piece: index for index, piece in enumerate(pieces)}


def build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(BPE(vocab=vocabulary(), merges=[], byte_fallback=True, unk_token="<unk>"))
    core.normalizer = normalizers.Replace(" ", "▁")
    core.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
            "sot_token": "<start_of_turn>",
            "eot_token": "<end_of_turn>",
        },
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab: dict[str, int]):  # -> transformers.Gemma3Config
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=8192,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<eos>"],
        bos_token_id=vocab["<bos>"],
    )
    # Both configs take these as keyword arguments their stubs do not declare.
    vision = SiglipVisionConfig(  # type: ignore[call-arg]
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=14,
        vision_use_head=False,
    )
    return Gemma3Config(  # type: ignore[call-arg]
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=vocab["<start_of_image>"],
        eoi_token_index=vocab["<end_of_image>"],
        image_token_index=vocab["<image_soft_token>"],
        eos_token_id=[vocab["<eos>"], vocab["<end_of_turn>"]],
    )


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write the checkpoint into ``directory`` (idempotent: reuses a complete earlier build)."""
    marker = directory / "vidcap-tiny.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return directory
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = build_config(vocabulary())
    config.architectures = ["Gemma3ForConditionalGeneration"]
    model = Gemma3ForConditionalGeneration(config).eval()
    _steer_towards_short_strings(model, vocabulary())
    # Stored in bfloat16, the dtype vLLM runs it in: float32 weights made vLLM warn once per
    # tensor at every start (about 40 lines before the first event); the values it runs
    # with are the same either way.
    model.config.dtype = torch.bfloat16
    model.config.save_pretrained(directory)
    weights = {k: v.to(torch.bfloat16) for k, v in _published_layout(model.state_dict()).items()}
    save_file(weights, directory / "model.safetensors")
    image_processor = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=TOKENS_PER_IMAGE,
    )
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    marker.write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
    logger.info("built tiny random-weight Gemma 3 checkpoint in %s", directory)
    return directory


# Output preference of the random model, by token: closing a string or a list is likelier than
# another character, so captions stay short enough for a CPU. Every other choice stays random.
_PREFERENCE: Final = {'"': 1.0, "]": 0.9, "}": 0.9, ",": 0.7, "<eos>": 1.0, "<end_of_turn>": 1.0}
_LETTER_PREFERENCE: Final = 0.6
_STEERING_SCALE: Final = 0.6


def _steer_towards_short_strings(model, vocab: dict[str, int]) -> None:
    """Make logits depend on one hidden dimension that carries a per-token preference.

    With purely random weights, grammar-constrained strings run until max_tokens (seen here).
    The final norm keeps only dimension 0, and every embedding row gets a large shared value
    there plus its preference, so logit(token) ~ scale * preference(token).
    """
    import torch

    text_model = model.model.language_model
    embed = text_model.embed_tokens.weight
    preference = torch.zeros(embed.shape[0])
    for piece, index in vocab.items():
        if len(piece) == 1 and (piece.isalnum() or piece == "▁"):
            preference[index] = _LETTER_PREFERENCE
        preference[index] = _PREFERENCE.get(piece, preference[index])
    hidden = embed.shape[1]
    with torch.no_grad():
        embed[:, 0] = 3.0 + preference
        # Gemma's RMSNorm scales by (1 + weight): -1 silences a dimension.
        text_model.norm.weight.fill_(-1.0)
        text_model.norm.weight[0] = _STEERING_SCALE / hidden**0.5 - 1.0


def _published_layout(state: dict) -> dict:
    """Rename weights to the layout of published Gemma 3 checkpoints, which vLLM expects."""
    renamed = {}
    for name, tensor in state.items():
        if name.startswith("model."):
            name = name[len("model.") :]
        if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
            name = "vision_tower.vision_model." + name[len("vision_tower.") :]
        if name.startswith("language_model.") and not name.startswith("language_model.model."):
            name = "language_model.model." + name[len("language_model.") :]
        if ".head." in name or name == "lm_head.weight":
            continue  # published Gemma 3 has no vision head; the LM head is tied
        renamed[name] = tensor.contiguous().clone()
    return renamed

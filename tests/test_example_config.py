"""configs/example.yaml lists every configuration key (commented-out ones count) and parses."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from stream.config import Config, load_config

EXAMPLE = Path(__file__).parents[1] / "configs" / "example.yaml"
_COMMENTED_KEY = re.compile(r"^(\s*)# ?(\s*(?:- )?[A-Za-z_][A-Za-z0-9_]*:.*)$")


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for inner in (field.annotation, *_nested(field.annotation)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                keys |= model_keys(inner, f"{prefix}{name}.")
    return keys


def _nested(annotation: Any) -> list[Any]:
    args = list(typing.get_args(annotation))
    return args + [inner for arg in args for inner in _nested(arg)]


def example_keys(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, list):
        return {key for item in node for key in example_keys(item, prefix)}
    if not isinstance(node, dict):
        return set()
    return {prefix + k for k in node} | {
        key for k, v in node.items() for key in example_keys(v, f"{prefix}{k}.")
    }


def test_example_lists_every_key_of_the_config_model() -> None:
    uncommented = [
        (m[1] + m[2]) if (m := _COMMENTED_KEY.match(line)) else line
        for line in EXAMPLE.read_text().splitlines()
    ]
    listed = example_keys(yaml.safe_load("\n".join(uncommented)))
    assert model_keys(Config) - listed == set(), "keys missing from configs/example.yaml"
    assert listed - model_keys(Config) == set(), "keys in the example that do not exist"


def test_example_parses_as_it_is() -> None:
    load_config(EXAMPLE)

"""Architecture families as data, one small module each, and the registry that finds them.

`get(name)`, `for_model_type(model_type)` and `SUPPORTED` are what the estimator, the
rules and the stages use instead of `family == "llama"`. Adding a family is one module
here, its entry in `_MODULES`, and its published shape in `published.py` (the tests cut it to a
fixture in tests/families/conftest.py).
"""

from __future__ import annotations

from typing import Any, Mapping

from . import gemma3, llama, mistral, phi3, qwen2, qwen3
from .spec import Family, LoraTargets
from .unsupported import refusal

_MODULES = (llama, qwen2, qwen3, gemma3, phi3, mistral)

FAMILIES: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in _MODULES}
"""slmc family name -> Family, in the order messages list them."""

_BY_MODEL_TYPE: dict[str, Family] = {mt: f for f in FAMILIES.values() for mt in f.model_types}

SUPPORTED: tuple[str, ...] = tuple(FAMILIES)


class UnsupportedArchitecture(ValueError):
    """A config.json whose architecture no family implements (message says which and why)."""


def get(name: str) -> Family:
    """The family called `name` (slmc's family name); KeyError naming the supported ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; supported: {supported_text()}") from None


def for_model_type(model_type: Any) -> Family | None:
    """The family whose transformers class reads this config.json `model_type`, or None."""
    return _BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None


def for_config(config: Mapping[str, Any]) -> Family:
    """The family of a Hugging Face config.json dict, or UnsupportedArchitecture saying why not.

    A supported `model_type` carrying experts, an encoder or a vision tower is refused too:
    the family's decoder would silently drop them.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a config.json must be a JSON object, not {type(config).__name__}")
    model_type = config.get("model_type")
    why = refusal(config)
    family = for_model_type(model_type)
    if family is not None and not why:
        return family
    if not model_type:
        raise UnsupportedArchitecture("config.json has no model_type, so its architecture is unknown")
    raise UnsupportedArchitecture(
        f"model_type {model_type!r} is {why or 'not a supported architecture'}; slmc compiles {supported_text()}"
    )


def supported_text() -> str:
    """The supported families with their model_types, for messages."""
    return ", ".join(
        f.name if f.model_types == (f.name,) else f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values()
    )


__all__ = [
    "FAMILIES", "SUPPORTED", "Family", "LoraTargets", "UnsupportedArchitecture", "for_config", "for_model_type",
    "get", "supported_text",
]

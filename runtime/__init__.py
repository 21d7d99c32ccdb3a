"""slmc.runtime: load a verified bundle and generate text with ONNX Runtime.

Imports neither torch, transformers, hydra nor jinja2: a device gets only
onnxruntime, numpy and tokenizers (a test enforces this boundary).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names resolve on first use (PEP 562), so `import slmc.runtime.manifest` (the compiler's
# package stage) does not pay for importing onnxruntime and tokenizers.
_EXPORTS = {
    "Bundle": "bundle",
    "load_bundle": "bundle",
    "BundleError": "errors",
    "GenerationError": "errors",
    "GenerationWarning": "errors",
    "IncompatibleBundle": "errors",
    "SlmcRuntimeError": "errors",
    "ChatTemplate": "chat",
    "Completion": "generate",
    "Manifest": "manifest",
    "hash_folder": "manifest",
    "with_hashes": "manifest",
    "SamplingParams": "sampling",
    "verify_bundle": "verify",
    "evaluate_bundle": "tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'slmc.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f"slmc.runtime.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:
    from slmc.runtime.bundle import Bundle, load_bundle
    from slmc.runtime.chat import ChatTemplate
    from slmc.runtime.errors import (
        BundleError,
        GenerationError,
        GenerationWarning,
        IncompatibleBundle,
        SlmcRuntimeError,
    )
    from slmc.runtime.generate import Completion
    from slmc.runtime.manifest import Manifest, hash_folder, with_hashes
    from slmc.runtime.sampling import SamplingParams
    from slmc.runtime.tasks import evaluate_bundle
    from slmc.runtime.verify import verify_bundle

"""trl-gta: Guess-Think-Answer (GTA) training for LLM text classifiers, as a TRL add-on.

Names are imported lazily, so that `import trl_gta` (and the `trl-gta` command line) stays fast until a name that
needs torch or TRL is used.
"""

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "GTAConfig": "config",
    "GTATrainer": "trainer",
    "GTACollator": "collator",
    "GTAPromptTemplate": "prompts",
    "GTAOutput": "parsing",
    "parse_gta": "parsing",
    "normalize_label": "parsing",
    "build_gta_dataset": "data",
    "guess_span_mask": "spans",
    "guess_token_span": "spans",
    "combine_gradients": "losses",
    "guess_cross_entropy": "losses",
    "GTAClassifier": "classifier",
    "GTAPrediction": "classifier",
    "load_classification_dataset": "registry",
    "format_warmup": "warmup",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in ("rewards", "registry", "evaluation", "cli"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""trl-gta: Guess-Think-Answer (GTA) training for LLM text classifiers, as a TRL add-on.

Names are imported lazily, so that `import trl_gta` (and the `trl-gta` command line) stays fast until a name that
needs torch or TRL is used; type checkers and editors see them through the `TYPE_CHECKING` imports below.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "GTAConfig": "config",
    "GTATrainer": "trainer",
    "GTACollator": "collator",
    "GTAPromptTemplate": "prompts",
    "GTACheckpointMetadata": "checkpoint",
    "GTAOutput": "reply_format",
    "parse_gta": "reply_format",
    "normalize_label": "reply_format",
    "build_gta_dataset": "dataset",
    "guess_span_mask": "spans",
    "guess_token_span": "spans",
    "combine_gradients": "losses",
    "guess_cross_entropy": "losses",
    "GTAClassifier": "classifier",
    "GTAPrediction": "classifier",
    "evaluate_classifier": "evaluation",
    "predict_file": "predict_files",
    "load_classification_dataset": "registry",
    "format_warmup": "warmup",
}
_MODULES = ("rewards", "registry", "evaluation", "cli")

if TYPE_CHECKING:
    from . import cli, evaluation, registry, rewards
    from .checkpoint import GTACheckpointMetadata
    from .classifier import GTAClassifier, GTAPrediction
    from .collator import GTACollator
    from .config import GTAConfig
    from .dataset import build_gta_dataset
    from .evaluation import evaluate_classifier
    from .losses import combine_gradients, guess_cross_entropy
    from .predict_files import predict_file
    from .prompts import GTAPromptTemplate
    from .registry import load_classification_dataset
    from .reply_format import GTAOutput, normalize_label, parse_gta
    from .spans import guess_span_mask, guess_token_span
    from .trainer import GTATrainer
    from .warmup import format_warmup

__all__ = [
    "__version__",
    "GTAConfig",
    "GTATrainer",
    "GTACollator",
    "GTAPromptTemplate",
    "GTACheckpointMetadata",
    "GTAOutput",
    "parse_gta",
    "normalize_label",
    "build_gta_dataset",
    "guess_span_mask",
    "guess_token_span",
    "combine_gradients",
    "guess_cross_entropy",
    "GTAClassifier",
    "GTAPrediction",
    "evaluate_classifier",
    "predict_file",
    "load_classification_dataset",
    "format_warmup",
    "rewards",
    "registry",
    "evaluation",
    "cli",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

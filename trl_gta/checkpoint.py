"""A GTA checkpoint's metadata (`gta_config.json`), read and written in one place.

A trained model needs more than its weights to be asked the question it was trained on: the label set, the prompt
template (instructions, tags, response prefix, chat-template arguments) and the generation budget. The trainer writes
this file next to the weights; the classifier, `trl-gta eval`/`predict` and `export` read it.
"""

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from .prompts import GTAPromptTemplate
from .reply_format import check_label_set

GTA_CONFIG_FILE = "gta_config.json"


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on, recorded with checkpoints and results."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for name in ("trl-gta", "trl", "transformers", "torch", "peft", "datasets", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class GTACheckpointMetadata:
    """What a GTA checkpoint carries beyond its weights.

    Args:
        labels: The label set, in the order the prompt lists it; None when training knew none (GRPO with rewards of
            its own), and the classifier is then given one.
        prompt_template: The template the model was trained with (its `chat_template_kwargs` included).
        max_completion_length: The generation budget of training; the classifier's default `max_new_tokens`, so a
            reply as long as those seen in training keeps its answer.
        settings: The training settings shown on the model card (GTA weights, conflict rule, GRPO settings).
        versions: Library versions at save time.
    """

    labels: list[str] | None
    prompt_template: GTAPromptTemplate = field(default_factory=GTAPromptTemplate)
    max_completion_length: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = check_label_set(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "prompt_template": self.prompt_template.to_dict(),
            "max_completion_length": self.max_completion_length,
            "settings": self.settings,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GTACheckpointMetadata":
        """Read the current layout and the flat one of trl-gta 0.1 (settings beside the labels)."""
        known = {"labels", "prompt_template", "max_completion_length", "settings", "versions"}
        return cls(
            labels=list(data["labels"]) if data.get("labels") is not None else None,
            prompt_template=GTAPromptTemplate.from_dict(data.get("prompt_template") or {}),
            max_completion_length=data.get("max_completion_length"),
            settings={**{k: v for k, v in data.items() if k not in known}, **data.get("settings", {})},
            versions=dict(data.get("versions") or {}),
        )

    def save(self, folder: str) -> str:
        """Write `gta_config.json` into `folder` atomically (a crash never leaves half a file); returns its path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, GTA_CONFIG_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump({**self.to_dict(), "versions": self.versions or library_versions()}, f, indent=2)
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, folder: str) -> "GTACheckpointMetadata | None":
        """The metadata of a checkpoint folder, or None when it has no `gta_config.json` (a plain model)."""
        path = os.path.join(folder, GTA_CONFIG_FILE)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (json.JSONDecodeError, ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a valid GTA checkpoint description: {error}") from error

"""A checkpoint's metadata (`gta_config.json`), read and written in one place.

A trained model needs more than its weights to be asked the question it was trained on: the label set, the prompt
template (instructions, the reply format's tags, response prefix, chat-template arguments) and the reply budget.
Every trainer of `trl-gta train` (GTA, and the GRPO and SFT baselines) writes this file next to the weights of every
checkpoint it saves (`SavesCheckpointMetadata`); the classifier, `trl-gta eval`/`predict` and `export` read it, and
refuse a folder without it rather than guess its format.
"""

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from .prompts import GTAPromptTemplate
from .reply_format import check_label_set

GTA_CONFIG_FILE = "gta_config.json"
HOW_TO_DESCRIBE = (
    f"write its {GTA_CONFIG_FILE}, saying the format it was trained to reply in: GTACheckpointMetadata(labels=[...], "
    'prompt_template=GTAPromptTemplate.for_format("gta", "think_answer" or "answer")).save(folder)'
)
"""How to give a model folder without metadata the format it replies in (said by every door that refuses one)."""


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


class SavesCheckpointMetadata:
    """A trainer mixin: every checkpoint the trainer saves (`checkpoint-N` folders and the final one) carries the
    metadata of `checkpoint_metadata()` and trl-gta's model card, whatever the method.

    The trainer provides `checkpoint_metadata()`, and may set `eval_results` (run name -> metrics) and
    `dataset_names` for the card.
    """

    eval_results: dict[str, dict]
    dataset_names: list[str]

    def _model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        from .model_card import GTA_CITATION, gta_model_card

        base = self.model.config._name_or_path if hasattr(self.model, "config") else None
        if hasattr(self.model, "peft_config"):
            base = next(iter(self.model.peft_config.values())).base_model_name_or_path
        name = model_name or os.path.basename(os.path.normpath(self.args.output_dir))
        names = getattr(self, "dataset_names", [])
        datasets = list(dict.fromkeys([*names, *([dataset_name] if dataset_name else [])]))
        extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
        return gta_model_card(
            model_name=name,
            metadata=self.checkpoint_metadata(),
            base_model=base if base and not os.path.isdir(base) else None,
            hub_model_id=self.args.hub_model_id or name,
            datasets=datasets,
            eval_results=getattr(self, "eval_results", {}),
            citation=GTA_CITATION,
            tags=extra_tags,
        )

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None):
        """trl-gta's own card (TRL's template lookup only searches TRL's package), with the dataset and tags that
        `push_to_hub` passes."""
        if self.is_world_process_zero():
            self._model_card(model_name, dataset_name, tags).save(os.path.join(self.args.output_dir, "README.md"))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save the weights, then the checkpoint metadata and model card the classifier needs."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.checkpoint_metadata().save(output_dir)
            self._model_card().save(os.path.join(output_dir, "README.md"))

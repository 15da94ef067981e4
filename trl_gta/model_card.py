"""Model cards for GTA checkpoints, from trl-gta's own template through `huggingface_hub.ModelCard`."""

import json
import textwrap
from importlib.resources import files

from huggingface_hub import ModelCard, ModelCardData

from .checkpoint import GTACheckpointMetadata

TAGS = ["trl", "gta", "text-classification"]
GTA_CITATION = textwrap.dedent("""\
    @inproceedings{zeng-etal-2025-gta,
        title     = {{GTA}: Supervised-Guided Reinforcement Learning for Text Classification with Large Language
                     Models},
        author    = {Zeng, Min and Sun, Jingfei and Luo, Xueyou and Zhang, Shiqi and Xie, Li and Liu, Caiquan and
                     Chen, Xiaoxin},
        booktitle = {Findings of the Association for Computational Linguistics: EMNLP 2025},
        year      = {2025},
        pages     = {1050--1060},
        url       = {https://aclanthology.org/2025.findings-emnlp.56/},
        eprint    = {2509.12108},
    }""")


METHODS = {
    "gta": "**GTA** (Guess-Think-Answer, [arXiv 2509.12108](https://arxiv.org/abs/2509.12108))",
    "grpo": "GRPO, the reinforcement-learning baseline of GTA ([arXiv 2509.12108](https://arxiv.org/abs/2509.12108))",
    "sft": "supervised fine-tuning on the answer alone, the SFT baseline of GTA "
    "([arXiv 2509.12108](https://arxiv.org/abs/2509.12108))",
}
"""How the card names each training method of `trl-gta train`."""


def gta_model_card(
    model_name: str,
    metadata: GTACheckpointMetadata,
    base_model: str | None = None,
    hub_model_id: str | None = None,
    datasets: list[str] | None = None,
    eval_results: dict[str, dict] | None = None,
    citation: str = "",
    tags: list[str] | None = None,
) -> ModelCard:
    """Render the card of a checkpoint.

    Args:
        model_name: The card's title.
        metadata: The checkpoint's metadata (labels, prompt template, settings, library versions).
        base_model: The Hub id of the base model, when there is one.
        hub_model_id: The id shown in the usage example.
        datasets: Training dataset names.
        eval_results: Run name (e.g. `"test / answer"`) -> metrics dict from `trl_gta.evaluation`; its
            `answer_decoding` is shown beside each figure.
        citation: BibTeX of the method.
        tags: Tags beside trl-gta's own.

    Returns:
        A `huggingface_hub.ModelCard`.
    """
    card_data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys([*TAGS, *(tags or [])])),
        datasets=datasets or None,
        license=None,
    )
    rows = [
        {
            "name": name,
            "decoding": metrics.get("answer_decoding") or "none (guess)",
            "metric": metric,
            "value": f"{metrics[metric]:.4f}",
        }
        for name, metrics in (eval_results or {}).items()
        for metric in ("accuracy", "weighted_f1", "macro_f1", "format_rate", "guess_accuracy")
        if metrics.get(metric) is not None
    ]
    hyperparameters = {**metadata.settings, "max_completion_length": metadata.max_completion_length}
    template = (files("trl_gta") / "templates" / "gta_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        base_model=base_model,
        hub_model_id=hub_model_id or model_name,
        method=METHODS[metadata.settings.get("method", "gta")],
        reply_format=metadata.prompt_template.format_spec(),
        labels=metadata.labels or [],
        prompt_template=json.dumps(metadata.prompt_template.to_dict(), indent=2),
        hyperparameters=hyperparameters,
        datasets=datasets or [],
        eval_results=rows,
        gta_citation=citation,
        versions=metadata.versions,
    )

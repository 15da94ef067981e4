"""Model cards for GTA checkpoints, from trl-gta's own template through `huggingface_hub.ModelCard`."""

import json
from importlib.resources import files

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["trl", "gta", "text-classification"]


def gta_model_card(
    model_name: str,
    metadata: dict,
    base_model: str | None = None,
    hub_model_id: str | None = None,
    datasets: list[str] | None = None,
    eval_results: dict[str, dict] | None = None,
    citation: str = "",
    versions: dict[str, str] | None = None,
) -> ModelCard:
    """Render the card. `metadata` is what `GTATrainer.gta_metadata()` returns (labels, template, settings);
    `eval_results` maps a run name (e.g. "test / answer") to a metrics dict from `trl_gta.evaluation`."""
    card_data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=list(TAGS),
        datasets=datasets or None,
        license=None,
    )
    rows = [
        {"name": name, "metric": metric, "value": f"{metrics[metric]:.4f}"}
        for name, metrics in (eval_results or {}).items()
        for metric in ("accuracy", "weighted_f1", "macro_f1", "format_rate", "guess_accuracy")
        if metrics.get(metric) is not None
    ]
    hyperparameters = {k: v for k, v in metadata.items() if k not in ("labels", "prompt_template")}
    template = (files("trl_gta") / "templates" / "gta_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=model_name,
        base_model=base_model,
        hub_model_id=hub_model_id or model_name,
        labels=metadata["labels"],
        prompt_template=json.dumps(metadata["prompt_template"], indent=2),
        hyperparameters=hyperparameters,
        datasets=datasets or [],
        eval_results=rows,
        gta_citation=citation,
        versions=versions or {},
    )

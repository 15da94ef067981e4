"""Format warm-up: a fair start for RL from a model that never writes the asked-for format.

A few supervised steps on replies in the method's own format (`<guess>..</guess><think>..</think><answer>..</answer>`
for GTA, `<think>..</think><answer>..</answer>` for GRPO). The warm-up must not teach the task, so what fills the
label slots is the choice:

- `labels="random"` (the default): every reply names one label drawn at random from the label set, independently of
  the text, in its guess and answer slots; its think sentence is one of several neutral templates that name no
  label. The model learns to answer with *a* label of the set, not *which* one, so the answers of a group differ and
  the accuracy reward can tell them apart from the first RL step on. The varied think text leaves no fixed sentence
  for the policy to collapse onto.
- `labels="masked"`: the gold labels fill the slots but are masked out of the loss, and the think sentence is fixed.
  The model learns the tags, not to put a label in them: measured on SmolLM2 (`benchmarks/warmup.py`), its answers
  then hold no label at all, every completion of a group earns the same reward and RL sees no accuracy signal.

The same warm-up serves every RL method alike: only the tags of the format differ.
"""

import random
import re
from collections.abc import Sequence
from typing import Any

from trl import SFTConfig, SFTTrainer

from .collator import GTACollator
from .dataset import build_gta_dataset, dataset_label_set
from .prompts import GTAPromptTemplate
from .shared_prefix import SharedPrefixModel

WARMUP_LABELS = ("random", "masked")
FORMAT_EXAMPLE_THINK = "The text is about {label}."
# Neutral think sentences of the random-label warm-up: none names a label, and no single one dominates the targets.
THINK_TEMPLATES = (
    "I compare the text with each label and pick the closest one.",
    "The wording of the text points to one of the labels.",
    "Key words in the text decide the label.",
    "The main subject of the text fits one label best.",
    "I weigh the request against the label set.",
    "One label matches what the text asks for.",
    "The intent behind the text decides it.",
    "Reading the text once, one label stands out.",
)


def format_example(tags: tuple[str, ...]) -> str:
    """A reply template in the format of `tags`, with `{label}` where label names go (the masked warm-up's target)."""
    contents = {"guess": "{label}", "think": FORMAT_EXAMPLE_THINK, "answer": "{label}"}
    return "".join(f"<{tag}>{contents.get(tag, '{label}')}</{tag}>" for tag in tags)


def neutral_thinks(labels: Sequence[str], templates: Sequence[str] = THINK_TEMPLATES) -> list[str]:
    """The think templates that name no label of the set (as a whole word, case-insensitively).

    A template naming a label would put that label into every warm-up reply, and with it a constant the answer slot
    could learn to copy.

    Args:
        labels: The label set.
        templates: Candidate think sentences.

    Returns:
        The templates free of label names, in their order.

    Raises:
        ValueError: When every template names a label.

    Example:
        >>> neutral_thinks(["sport", "tech"], ["Sport news.", "A guess."])
        ['A guess.']
    """
    patterns = [re.compile(rf"(?<!\w){re.escape(label.casefold())}(?!\w)") for label in labels]
    kept = [t for t in templates if not any(p.search(t.casefold()) for p in patterns)]
    if not kept:
        raise ValueError(f"Every think template names a label of {list(labels)}; pass other templates.")
    return kept


def random_label_replies(
    tags: tuple[str, ...], labels: Sequence[str], count: int, seed: int = 0, templates: Sequence[str] = THINK_TEMPLATES
) -> list[str]:
    """`count` replies in the format of `tags`, each with a label drawn at random from `labels` and a neutral think.

    The draws are balanced: the labels come in shuffled rounds of the whole set, so every label fills as many replies
    as any other (give or take one) and no label is favoured by the luck of the draw (independent draws leave some
    labels several times as frequent as others in a warm-up of 64 replies). The drawn label fills
    every non-think slot (guess and answer): the reply is consistent, as a model's own would be, and it says nothing
    about the text it follows.

    Args:
        tags: The format's tags, e.g. `("guess", "think", "answer")`.
        labels: The label set to draw from.
        count: Number of replies.
        seed: Seed of the draws (labels and think sentences).
        templates: Candidate think sentences; those naming a label are left out (`neutral_thinks`).

    Returns:
        The replies, tags included.

    Example:
        >>> random_label_replies(("think", "answer"), ["sport"], 1, templates=["Hm."])
        ['<think>Hm.</think><answer>sport</answer>']
    """
    neutral, rng = neutral_thinks(labels, templates), random.Random(seed)
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += rng.sample(list(labels), len(labels))
    thinks = [rng.choice(neutral) for _ in range(count)]
    return [
        "".join(f"<{tag}>{think if tag == 'think' else label}</{tag}>" for tag in tags)
        for label, think in zip(drawn[:count], thinks, strict=True)
    ]


def format_warmup(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    template: GTAPromptTemplate,
    output_dir: str,
    max_steps: int = 8,
    batch_size: int = 8,
    learning_rate: float = 5e-4,
    seed: int = 0,
    labels: str = "random",
    peft_config: Any = None,
    max_prompt_tokens: int | None = None,
    share_prompt_prefix: bool = False,
    **sft_kwargs: Any,
) -> Any:
    """Train `model` for `max_steps` supervised steps on replies in `template`'s format that carry no task signal.

    `labels` picks what fills the label slots: `"random"` (labels drawn independently of the text, balanced over the
    set, supervised) or `"masked"` (the gold labels, masked out of the loss); see the module docstring. The warm-up
    takes the first `max_steps * batch_size` texts of `train_dataset`. A PeftModel is trained in place;
    with `peft_config` the model is wrapped first (as `SFTTrainer` does), so that the RL trainer can continue the same
    adapter. `max_prompt_tokens` cuts texts as `build_gta_dataset` does for the RL run. The model's gradient
    checkpointing is left as it was found (the warm-up's `SFTConfig` turns it on by default, and an RL config that
    leaves it off would not turn it off again). `share_prompt_prefix` computes the prompt prefix every row shares
    once per step (`shared_prefix.py`; without activation checkpointing, which it then leaves off). `sft_kwargs`
    override `SFTConfig` fields.

    Returns:
        The warmed-up model (the PeftModel when `peft_config` was given).
    """
    import torch
    from datasets import Dataset

    if labels not in WARMUP_LABELS:
        raise ValueError(f"labels must be one of {WARMUP_LABELS}, got {labels!r}.")
    if not isinstance(train_dataset, Dataset):
        raise TypeError(
            f"format_warmup needs a map-style datasets.Dataset (it draws one reply per text), got "
            f"{type(train_dataset).__name__}; e.g. Dataset.from_list(list(iterable.take({max_steps * batch_size})))."
        )
    if len(train_dataset) > max_steps * batch_size:  # the texts one process consumes, so its draws stay balanced
        train_dataset = train_dataset.select(range(max_steps * batch_size))
    rows = build_gta_dataset(
        train_dataset, template=template, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens
    )
    if labels == "random":
        replies = random_label_replies(template.tags, dataset_label_set(rows), len(rows), seed)
        # each row's `label` becomes its whole drawn reply, and the collator's target template is the identity
        rows = rows.remove_columns("label").add_column("label", replies)
        collator = GTACollator(
            tokenizer, "{label}", append_eos=True, chat_template_kwargs=template.chat_template_kwargs
        )
    else:
        collator = GTACollator(
            tokenizer,
            format_example(template.tags),
            append_eos=True,
            chat_template_kwargs=template.chat_template_kwargs,
            supervise_labels=False,
        )
    checkpointing = _checkpointing(model)
    config = {
        "output_dir": output_dir,
        "max_steps": max_steps,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "seed": seed,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": False,
        **({"gradient_checkpointing": False} if share_prompt_prefix else {}),
        **sft_kwargs,
    }
    if share_prompt_prefix and config.get("gradient_checkpointing"):
        raise ValueError("share_prompt_prefix does not work with activation checkpointing; set it to False.")
    trainer = (_SharedPrefixSFTTrainer if share_prompt_prefix else SFTTrainer)(
        model=model,
        args=SFTConfig(**config),
        train_dataset=rows,
        processing_class=tokenizer,
        data_collator=collator,
        peft_config=peft_config,
    )
    trainer.train()
    warmed = trainer.model
    if not checkpointing and _checkpointing(warmed):
        disable = getattr(warmed, "activation_checkpointing_disable", None) or warmed.gradient_checkpointing_disable
        disable()
    return warmed


class _SharedPrefixSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose forward computes the rows' common prompt prefix once (the labels keep the reply whole)."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        return super().compute_loss(SharedPrefixModel(model), inputs, *args, **kwargs)


def _checkpointing(model: Any) -> bool:
    """Whether the model recomputes activations in backward (transformers 5 renamed the property)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)

"""Format warm-up: a fair start for RL from a model that never writes the asked-for format.

A few supervised steps on replies in the method's own format, with the label names masked out of the loss: the model
learns the tags and the layout (`<guess>..</guess><think>..</think><answer>..</answer>`), not which label is right,
so every RL method can start from the same warmed-up model without having been taught the task.
"""

from typing import Any

from .collator import GTACollator
from .dataset import build_gta_dataset
from .prompts import GTAPromptTemplate

FORMAT_EXAMPLE_THINK = "The text is about {label}."


def format_example(tags: tuple[str, ...]) -> str:
    """A reply template in the format of `tags`, with `{label}` where label names go."""
    contents = {"guess": "{label}", "think": FORMAT_EXAMPLE_THINK, "answer": "{label}"}
    return "".join(f"<{tag}>{contents.get(tag, '{label}')}</{tag}>" for tag in tags)


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
    **sft_kwargs: Any,
) -> Any:
    """Train `model` (e.g. a PeftModel, trained in place) for `max_steps` on label-free format targets; return it."""
    import torch
    from trl import SFTConfig, SFTTrainer

    rows = build_gta_dataset(train_dataset, template=template, tokenizer=tokenizer)
    collator = GTACollator(
        tokenizer,
        format_example(template.tags),
        append_eos=True,
        chat_template_kwargs=template.chat_template_kwargs,
        supervise_labels=False,
    )
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        **sft_kwargs,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()
    return trainer.model

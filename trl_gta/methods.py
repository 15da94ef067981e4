"""GTA and its baselines (GRPO, SFT) built the same way, from the same data and prompt template.

`build_trainer` is the plain-Python face of `trl-gta train`: the method decides the config class (`GTAConfig` for
gta and grpo, `trl.SFTConfig` for sft), the prompt format, the rewards and the collator.
"""

import os
from dataclasses import dataclass, field
from typing import Any

import trl

from .checkpoint import GTACheckpointMetadata, SavesCheckpointMetadata, library_versions
from .collator import GTACollator
from .config import GTAConfig
from .dataset import build_gta_dataset, dataset_label_set
from .prompts import GTAPromptTemplate
from .reply_format import ANSWER_TARGET
from .rewards import answer_accuracy_reward, format_reward_for, make_partial_format_reward, make_valid_label_reward
from .warmup import WARMUP_LABELS, format_warmup

METHODS = ("gta", "grpo", "sft")
DEFAULT_PROMPT_FORMAT = {"gta": "gta", "grpo": "think_answer", "sft": "answer"}


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """What `trl-gta train` needs beyond the trainer config and TRL's `ModelConfig`: TRL's script arguments (the
    dataset name and splits), and GTA's."""

    method: str = field(default="gta", metadata={"help": "Training method.", "choices": list(METHODS)})
    dataset_name: str = field(
        default="hwu64-scenario",
        metadata={
            "help": "A registered dataset name, a local folder or .jsonl/.csv/.parquet file, or a Hub dataset id "
            "(see trl_gta.registry)."
        },
    )
    text_column: str | None = field(
        default=None, metadata={"help": "Column of the texts (default: the registered dataset's, else text)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column of the labels (default: the registered dataset's, else label)."}
    )
    dataset_label_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label set in id order: names integer labels, orders string labels (default: the registry's, "
            "labels.txt, the ClassLabel's, else the sorted labels of all splits)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the training split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the test split."})
    prompt_format: str | None = field(
        default=None,
        metadata={
            "help": "Asked-for output format: gta, think_answer or answer (default: by method).",
            "choices": [None, "gta", "think_answer", "answer"],
        },
    )
    response_prefix: str = field(
        default="", metadata={"help": "Start of the reply opened by the prompt, e.g. <guess>."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message of every prompt."})
    max_prompt_tokens: int | None = field(
        default=512, metadata={"help": "Texts are cut so each prompt fits; the instructions and label list never are."}
    )
    partial_format_reward: bool = field(
        default=False,
        metadata={"help": "Fair start for RL: add a reward crediting each well-placed block of the format."},
    )
    valid_label_reward: bool = field(
        default=False,
        metadata={"help": "Fair start for RL: add a reward of 1 for an answer that is a label of the set (any one)."},
    )
    format_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Fair start for RL (gta, grpo): supervised steps on replies in the method's format before RL, "
            "carrying no task signal (see format_warmup_labels); for a model that never writes the format. 0: none. "
            "Skipped when resuming from a checkpoint, which holds the warmed-up weights."
        },
    )
    format_warmup_labels: str = field(
        default="random",
        metadata={
            "help": "What fills the warm-up's label slots: random (labels drawn independently of the text; the model "
            "learns to answer with a label of the set) or masked (gold labels masked out of the loss; the model "
            "learns the tags only).",
            "choices": list(WARMUP_LABELS),
        },
    )
    format_warmup_batch_size: int = field(default=8, metadata={"help": "Rows per format warm-up step."})
    format_warmup_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the format warm-up (default: the run's learning_rate)."}
    )
    accelerate_config: str | None = field(
        default=None, metadata={"help": "The accelerate config the recipe is meant for (checked by --dry_run)."}
    )
    gpu_memory_gib: float | None = field(
        default=None,
        metadata={
            "help": "Memory of each GPU the recipe is written for, in GiB (H100: 80, H200: 141): --dry_run refuses a "
            "full fine-tune whose weights, gradients, optimizer states, GTA buffers and reference model exceed it."
        },
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Validate the configuration and exit without loading weights."}
    )


class AnswerSFTTrainer(SavesCheckpointMetadata, trl.SFTTrainer):
    """TRL's `SFTTrainer` for the SFT baseline, whose checkpoints carry what the classifier needs to ask the question
    it was trained with (label set, the answer-only prompt template, a reply budget) like GTA's do."""

    def __init__(self, *args: Any, labels: list[str], prompt_template: GTAPromptTemplate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels, self.prompt_template = list(labels), prompt_template
        self.eval_results: dict[str, dict] = {}
        self.dataset_names: list[str] = []

    def checkpoint_metadata(self) -> GTACheckpointMetadata:
        """The label set, the template, and a reply budget that fits the longest answer and its end of sequence."""
        tokenizer = self.processing_class
        longest = max(
            len(tokenizer(ANSWER_TARGET.format(label=label), add_special_tokens=False)["input_ids"])
            for label in self.labels
        )
        return GTACheckpointMetadata(
            labels=self.labels,
            prompt_template=self.prompt_template,
            max_completion_length=longest + 1,
            settings={"method": "sft"},
            versions=library_versions(),
        )


def fair_start_options(script_args: ScriptArguments) -> dict[str, Any]:
    """The fair-start keyword arguments of `build_trainer` that `trl-gta train` takes from its script arguments."""
    return {
        "valid_label_reward": script_args.valid_label_reward,
        "format_warmup_steps": script_args.format_warmup_steps,
        "format_warmup_labels": script_args.format_warmup_labels,
        "format_warmup_batch_size": script_args.format_warmup_batch_size,
        "format_warmup_learning_rate": script_args.format_warmup_learning_rate,
    }


def dataset_options(script_args: ScriptArguments) -> dict[str, Any]:
    """The keyword arguments of `load_classification_dataset` that `trl-gta train` takes from its script arguments."""
    return {
        "config": script_args.dataset_config,
        "text_column": script_args.text_column,
        "label_column": script_args.label_column,
        "label_names": script_args.dataset_label_names,
    }


def prompt_template(script_args: ScriptArguments, chat_template_kwargs: dict | None = None) -> GTAPromptTemplate:
    """The template of a run: the method's format unless the recipe names another."""
    return GTAPromptTemplate.for_format(
        script_args.prompt_format or DEFAULT_PROMPT_FORMAT[script_args.method],
        response_prefix=script_args.response_prefix,
        system_prompt=script_args.system_prompt,
        chat_template_kwargs=dict(chat_template_kwargs or {}),
    )


def default_lora_config(r: int = 16):
    """The LoRA setup of the quickstart and benchmarks: rank `r`, alpha `2r`, every linear layer."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")


def grpo_baseline(config: GTAConfig) -> GTAConfig:
    """Plain GRPO through the GTA harness: no supervised guess term, nothing masked."""
    config.sft_weight, config.mask_guess_in_rl = 0.0, False
    return config


def build_trainer(
    method: str,
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    args: Any,
    template: GTAPromptTemplate,
    peft_config: Any = None,
    max_prompt_tokens: int | None = None,
    partial_format_reward: bool = False,
    valid_label_reward: bool = False,
    format_warmup_steps: int = 0,
    format_warmup_labels: str = "random",
    format_warmup_batch_size: int = 8,
    format_warmup_learning_rate: float | None = None,
):
    """A trainer for `method` on a raw (`text`, `label`) dataset, with prompts from `template`.

    The fair-start options of the RL methods (gta, grpo) apply to both alike: `partial_format_reward` and
    `valid_label_reward` add shaping rewards, and `format_warmup_steps > 0` runs `format_warmup` on the same data and
    template before the trainer is built (with `peft_config`, on the adapter the trainer then continues; skipped when
    `args.resume_from_checkpoint` is set, since the checkpoint holds the warmed-up weights).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method == "sft" and (format_warmup_steps or valid_label_reward):
        raise ValueError("format_warmup_steps and valid_label_reward are fair-start options of the RL methods.")
    rows = build_gta_dataset(
        train_dataset, template=template, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens
    )
    if method == "sft":
        if template.tags != ("answer",):
            raise ValueError("The SFT baseline trains the direct answer: use prompt_format 'answer'.")
        labels = dataset_label_set(rows)
        if labels is None:
            raise ValueError("The SFT baseline needs the label set: give the dataset a ClassLabel `label` column.")
        args.remove_unused_columns = False  # the collator needs `prompt` and `label`
        args.dataset_kwargs = {"skip_prepare_dataset": True}
        collator = GTACollator(
            tokenizer, ANSWER_TARGET, append_eos=True, chat_template_kwargs=template.chat_template_kwargs
        )
        return AnswerSFTTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            data_collator=collator,
            peft_config=peft_config,
            labels=labels,
            prompt_template=template,
        )
    from .trainer import GTATrainer

    if not isinstance(args, GTAConfig):
        raise TypeError(f"method {method!r} needs a GTAConfig, got {type(args).__name__}.")
    if method == "grpo":
        args = grpo_baseline(args)
    rewards = [format_reward_for(template.tags), answer_accuracy_reward]
    if partial_format_reward:
        rewards.append(make_partial_format_reward(template.tags))
    if valid_label_reward:
        rewards.append(make_valid_label_reward(args.labels or dataset_label_set(rows)))
    if format_warmup_steps and not args.resume_from_checkpoint:
        model = format_warmup(
            model,
            tokenizer,
            train_dataset,
            template,
            os.path.join(args.output_dir, "format_warmup"),
            max_steps=format_warmup_steps,
            batch_size=format_warmup_batch_size,
            learning_rate=format_warmup_learning_rate or args.learning_rate,
            seed=args.seed,
            labels=format_warmup_labels,
            peft_config=peft_config,
            max_prompt_tokens=max_prompt_tokens,
            bf16=args.bf16,
            use_cpu=args.use_cpu,
            gradient_checkpointing=args.gradient_checkpointing,
            share_prompt_prefix=args.share_prompt_prefix,
        )
        peft_config = None  # the warm-up wrapped the model; the trainer continues its adapter
    return GTATrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        prompt_template=template,
    )

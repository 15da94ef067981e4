"""GTA and its baselines (GRPO, SFT) built the same way, from the same data and prompt template.

`build_trainer` is the plain-Python face of `trl-gta train`: the method decides the config class (`GTAConfig` for
gta and grpo, `trl.SFTConfig` for sft), the prompt format, the rewards and the collator.
"""

from dataclasses import dataclass, field
from typing import Any

import trl

from .collator import GTACollator
from .config import GTAConfig
from .dataset import build_gta_dataset
from .prompts import GTAPromptTemplate
from .rewards import answer_accuracy_reward, format_reward_for, make_partial_format_reward

METHODS = ("gta", "grpo", "sft")
DEFAULT_PROMPT_FORMAT = {"gta": "gta", "grpo": "think_answer", "sft": "answer"}


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """What `trl-gta train` needs beyond the trainer config and TRL's `ModelConfig`: TRL's script arguments (the
    dataset name and splits), and GTA's."""

    method: str = field(default="gta", metadata={"help": "Training method.", "choices": list(METHODS)})
    dataset_name: str = field(
        default="hwu64-scenario",
        metadata={"help": "A registered dataset name or a local folder (see trl_gta.registry)."},
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
    accelerate_config: str | None = field(
        default=None, metadata={"help": "The accelerate config the recipe is meant for (checked by --dry_run)."}
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Validate the configuration and exit without loading weights."}
    )


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
):
    """A trainer for `method` on a raw (`text`, `label`) dataset, with prompts from `template`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    rows = build_gta_dataset(
        train_dataset, template=template, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens
    )
    if method == "sft":
        from trl import SFTTrainer

        if template.tags != ("answer",):
            raise ValueError("The SFT baseline trains the direct answer: use prompt_format 'answer'.")
        args.remove_unused_columns = False  # the collator needs `prompt` and `label`
        args.dataset_kwargs = {"skip_prepare_dataset": True}
        collator = GTACollator(
            tokenizer, "<answer>{label}</answer>", append_eos=True, chat_template_kwargs=template.chat_template_kwargs
        )
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            data_collator=collator,
            peft_config=peft_config,
        )
    from .trainer import GTATrainer

    if not isinstance(args, GTAConfig):
        raise TypeError(f"method {method!r} needs a GTAConfig, got {type(args).__name__}.")
    if method == "grpo":
        args = grpo_baseline(args)
    rewards = [format_reward_for(template.tags), answer_accuracy_reward]
    if partial_format_reward:
        rewards.append(make_partial_format_reward(template.tags))
    return GTATrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        prompt_template=template,
    )

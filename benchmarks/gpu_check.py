#!/usr/bin/env python
"""GPU check: GTA's step time and peak memory against GRPO, and the classifier's throughput, on random-weight models
of Qwen2.5-3B-Instruct's and Qwen3-4B's architectures in bf16, at the recipes' shapes, in one command with a deadline.

Made for a GPU machine that has torch, transformers, accelerate and peft, but neither network nor trl, datasets or
trl-gta. Where pip works, gather what it lacks beside this script (wheels and a tokenizer, in the git-ignored
`benchmarks/gpu_wheels/`, under 64 MiB):

    bash benchmarks/gpu_wheels.sh

Then on the GPU machine, from the repository root (the folder travels with the checkout), one command:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gta benchmarks/gpu_wheels/*.whl &&
        HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/gta python3 benchmarks/gpu_check.py --out benchmarks/results/gpu

What it runs, one case at a time (the case's trainer alone in memory), `gpu_check.json` rewritten after each case:

- training, per model (qwen2.5-3b-instruct, then qwen3-4b; configs in `model_configs.json`, token ids set to the
  tokenizer's) and setup (`lora`: LoRA r=16 on all linear layers; `full`: full fine-tune): stock `GRPOTrainer`,
  then `GTATrainer` with `conflict_strategy="drop"` at `conflict_scope` `step` and `micro_batch`. The recipes' shape:
  16 completions of one 512-token prompt per optimizer step, in micro-batches of 4 (the recipes'
  `per_device_train_batch_size`) accumulated 4 times (the recipes accumulate 16, i.e. 4 prompts), 256-token
  completions, non-reentrant gradient checkpointing, bf16; `beta=0`, as in `overhead.py`, whose trainers, replay,
  step recorder and memory probe this reuses. Prompts: consecutive `hwu64-scenario` texts joined and cut to fit 512
  tokens. Completions are scripted, not sampled (a random-weight model samples no reply format): well-formed replies
  `<guess>..</guess><think>..</think><answer>..</answer>` of exactly 256 tokens, guesses and answers drawn at random
  so the rewards differ and the advantages are not zero. Every trainer replays the same batches (asserted).
  Each trainer's first step is a warm-up that also measures the peak memory of the step (from `on_step_begin` to
  `on_pre_optimizer_step`, above the step's start; `torch.cuda.max_memory_allocated`); then `--steps` timed steps,
  their median reported. `peak_total` is the most memory allocated from the first step's start to the last step's
  end (weights, gradients, optimizer state, activations).
- classifier, at the 3B shape (after the 3B cases): `GTAClassifier` in answer mode and guess mode against
  `model.generate` on whole prompts (`classify.py`'s baseline and timing loop), 64 `hwu64-scenario` test texts,
  batches of 16. A random-weight model never closes `</answer>`, so answer mode and the baseline both write 64 tokens
  per text (the mean generated tokens of each are in the JSON): a fixed reply length. Answer mode's drafts come from
  earlier replies, and a random model repeats itself more than a trained one, so answer mode is also timed without
  drafts (one token per step, its worst case).
- deadline: `--deadline_s` (default 420 s; with the imports, under 8 minutes) counts from the start. A case is
  skipped when the time left is less than 1.3 times the longest case of its kind so far, scaled by the model's
  parameters. At the deadline, or on SIGTERM or SIGINT, the case in flight stops. A case that fails (out of memory,
  say) is recorded and the next one runs. The JSON says what was skipped, stopped or failed, and the summary of what
  was measured is printed.

The last lines printed are machine-readable, in `overhead.py`'s format with the model in the key
(`MODEL/SETUP/SCOPE/VARIANT`, scope `-` for GRPO): `overhead_ratio[..]=` (median step wall time over GRPO's),
`peak_memory_ratio[..]=` (step peak over GRPO's), `seconds_per_step[..]=`, `peak_step_GiB[..]=`,
`peak_total_GiB[..]=`, then `answer_no_drafts_speedup=`, `answer_labels_speedup=`, `answer_speedup=` and
`guess_speedup=` (texts per second over the baseline's; answer modes decode freely but `answer_labels`, which scores
the label set in the answer slot).

`--device cpu --tiny` runs the same code on tiny models of the same two architectures (the tests do).
"""

import argparse
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the GPU machine: never wait for the Hub

try:
    import datasets  # noqa: F401
    import trl  # noqa: F401

    import trl_gta  # noqa: F401
except ImportError as error:
    sys.exit(
        f"gpu_check: {error.name} is not installed. Run `bash benchmarks/gpu_wheels.sh` where pip works, then install "
        "benchmarks/gpu_wheels/*.whl as the top of benchmarks/gpu_check.py shows."
    )

import torch  # noqa: E402
from classify import generate_on_full_prompts, timed_rounds  # noqa: E402
from datasets import Dataset  # noqa: E402
from overhead import (  # noqa: E402
    RESPONSE_PREFIX,
    Runtime,
    Session,
    StepBatch,
    StepRecorder,
    StepShape,
    architecture_config,
    log,
    log_batches,
    median,
    quiet,
    release,
    step_prompts,
)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from trl_gta import GTAClassifier, GTAPromptTemplate, build_gta_dataset  # noqa: E402
from trl_gta.dataset import dataset_label_set  # noqa: E402
from trl_gta.prompts import ensure_pad_token  # noqa: E402
from trl_gta.registry import load_classification_dataset  # noqa: E402

MODELS = ("qwen2.5-3b-instruct", "qwen3-4b")
SETUPS = ("lora", "full")
CASES = (("-", "grpo"), ("step", "drop"), ("micro_batch", "drop"))  # (scope, variant): GRPO first, the ratios' base
CLASSIFIER_MODEL = "qwen2.5-3b-instruct"
GIB = 1024**3
SAFETY = 1.3
"""A case starts only if the time left is at least the longest case so far (scaled to the model's size) times this."""
PACKAGES = (
    "torch transformers trl peft accelerate datasets trl-gta tokenizers huggingface-hub pyarrow fsspec dill".split()
)
"""Versions written into the JSON: what ran, and what an import error would come from."""
DEFAULT_TOKENIZER = Path(__file__).with_name("gpu_wheels") / "tokenizer"
THINK_FILLER = " The text asks about one of the listed topics, and its words point to the label given below."
TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8
)


@dataclass(frozen=True)
class Plan:
    """The shapes of one run: the recipes' on a GPU, small ones for `--tiny`."""

    shape: StepShape
    prompt_tokens: int
    texts_joined: int  # training texts joined into one prompt's text, before it is cut to `prompt_tokens`
    classifier_texts: int
    classifier_batch: int
    max_new_tokens: int
    classifier_repeats: int


RECIPE = Plan(StepShape(16, 4, 4, 256), 512, 48, 64, 16, 64, 3)
TINY_PLAN = Plan(StepShape(4, 2, 2, 40), 320, 8, 8, 4, 8, 1)


class Stopped(BaseException):
    """The deadline passed or a signal asked to stop: the run ends after saving what it has (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it)."""


def stop_on(signum, frame) -> None:
    raise Stopped("deadline" if signum == signal.SIGALRM else signal.Signals(signum).name)


# ------------------------------------------------------------------------------------------------ data
def long_text_dataset(tokenizer, plan: Plan, seed: int) -> Dataset:
    """GTA rows whose prompts fill `plan.prompt_tokens`: each training text followed by the next ones, cut to fit."""
    raw = load_classification_dataset("hwu64-scenario", split="train", max_samples=64, seed=seed)
    texts = raw["text"]
    joined = [" ".join((texts[i:] + texts[:i])[: plan.texts_joined]) for i in range(len(texts))]
    long = Dataset.from_dict({"text": joined, "label": raw["label"]}, features=raw.features)
    template = GTAPromptTemplate(response_prefix=RESPONSE_PREFIX, system_prompt="You classify texts.")
    return build_gta_dataset(long, template=template, tokenizer=tokenizer, max_prompt_tokens=plan.prompt_tokens)


def scripted_batches(trainer, num_steps: int, seed: int) -> list[StepBatch]:
    """Well-formed GTA replies of exactly `max_completion_length` tokens for the dataloader's first step batches.

    A random-weight model samples no reply format; these replies give real rewards, advantages and guess spans.
    """
    tokenizer, length = trainer.processing_class, trainer.args.max_completion_length
    labels = dataset_label_set(trainer.train_dataset)
    rng = random.Random(seed)
    filler = tokenizer(THINK_FILLER, add_special_tokens=False)["input_ids"]
    batches = []
    for rows, prompt_ids in step_prompts(trainer, num_steps):
        completions = []
        for row in rows:
            answer = row["label"] if rng.random() < 0.5 else rng.choice(labels)
            head = tokenizer(f"{rng.choice(labels)}</guess><think>", add_special_tokens=False)["input_ids"]
            tail = tokenizer(f"</think><answer>{answer}</answer>", add_special_tokens=False)["input_ids"]
            room = length - len(head) - len(tail) - 1
            if room < 0:
                raise ValueError(f"max_completion_length={length} is too short for a whole reply.")
            think = (filler * (room // len(filler) + 1))[:room]
            completions.append(head + think + tail + [tokenizer.eos_token_id])
        batches.append(StepBatch(prompt_ids, completions, [row["label"] for row in rows]))
    log(f"scripted {sum(len(b.completion_ids) for b in batches)} replies of {length} tokens for {num_steps} step(s)")
    log_batches(batches, tokenizer)
    return batches


# ------------------------------------------------------------------------------------------------ run state
@dataclass
class Results:
    """Everything measured so far; written to `path` after every case, so a stop loses at most the case in flight."""

    path: Path
    header: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model -> token counts per step
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    classifier: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # case -> the error that ended it
    stopped: str | None = None

    def save(self) -> None:
        document = {
            **self.header,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "stopped": self.stopped,
            "skipped": self.skipped,
            "failed": self.failed,
            "batches": self.batches,
            "cases": self.cases,
            "classifier": self.classifier,
        }
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(document, indent=1))
        partial.replace(self.path)  # never a half-written file

    def lines(self) -> list[str]:
        """The machine-readable lines: ratios to GRPO of the same model and setup, then absolute figures."""
        out = []
        for key, case in self.cases.items():
            model, setup, _, variant = key.split("/")
            base = self.cases.get(f"{model}/{setup}/-/grpo")
            if variant != "grpo" and base is not None:
                out.append(f"overhead_ratio[{key}]={case['wall_median_s'] / base['wall_median_s']:.2f}")
                out.append(f"peak_memory_ratio[{key}]={case['peak_step_bytes'] / base['peak_step_bytes']:.3f}")
        for key, case in self.cases.items():
            out.append(f"seconds_per_step[{key}]={case['wall_median_s']:.3f}")
            out.append(f"peak_step_GiB[{key}]={case['peak_step_bytes'] / GIB:.2f}")
            if case["peak_total_bytes"] is not None:
                out.append(f"peak_total_GiB[{key}]={case['peak_total_bytes'] / GIB:.2f}")
        for key, reason in self.skipped.items():
            out.append(f"skipped[{key}]={reason}")
        for key, error in self.failed.items():
            out.append(f"failed[{key}]={error.splitlines()[0] if error else ''}")
        if self.classifier is not None:
            out.append(f"answer_no_drafts_speedup={self.classifier['answer_no_drafts']['speedup']:.2f}")
            out.append(f"answer_labels_speedup={self.classifier['answer_labels']['speedup']:.2f}")
            out.append(f"answer_speedup={self.classifier['answer']['speedup']:.2f}")
            out.append(f"guess_speedup={self.classifier['guess']['speedup']:.1f}")
        if self.stopped:
            out.append(f"stopped={self.stopped}")
        return out


class Budget:
    """When to skip a case: the time left against the longest case of its kind so far, per parameter of its model."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.longest_per_parameter: dict[str, float] = {}

    def left(self) -> float:
        return self.end - time.monotonic()

    def shortfall(self, kind: str, parameters: int) -> str | None:
        """Why a case of `kind` on a model of `parameters` parameters would not fit, or None when it may start."""
        needed = SAFETY * self.longest_per_parameter.get(kind, 0.0) * parameters
        left = self.left()
        return f"not started: {left:.0f} s left, {needed:.0f} s needed" if left < needed else None

    def record(self, kind: str, seconds: float, parameters: int) -> None:
        self.longest_per_parameter[kind] = max(self.longest_per_parameter.get(kind, 0.0), seconds / parameters)


# ------------------------------------------------------------------------------------------------ cases
def run_case(session: Session, model: str, setup: str, scope: str, variant: str, steps: int) -> dict[str, Any]:
    """One trainer: a warm-up step (memory measured), then `steps` timed steps on the same replayed batches."""
    key = (setup, scope, variant)
    cuda = session.runtime.cuda
    trainers = {key: session.trainer(*key, rounds=1)}
    replay, _ = session.replays[key]
    session.run(trainers[key], key, "warmup", 1, memory=True)
    replay.phase = "measure"
    session.run(trainers[key], key, "measure", steps, memory=False)
    peak_total = torch.cuda.max_memory_allocated() if cuda else None  # since the warm-up step's start
    release(trainers)
    expected = [b.key() for b in session.batches]
    assert replay.seen["warmup"] == [expected[0]], f"{key}: first-step prompts differ from the scripted order"
    assert replay.seen["measure"] == expected, f"{key}: prompts differ from the scripted order"
    records = [r for r in session.recorder.records if (r["setup"], r["scope"], r["variant"]) == key]
    measured = [r for r in records if r["phase"] == "measure"]
    pieces = sorted({name for r in measured for name in r["breakdown_s"]})
    metrics = session.metrics[key]
    cosines = [m["gta/grad_cosine"] for m in metrics if m.get("gta/grad_cosine") is not None]
    conflicts = [m["gta/conflict_rate"] for m in metrics if m.get("gta/conflict_rate") is not None]
    return {
        "model": model,
        "setup": setup,
        "scope": scope,
        "variant": variant,
        "wall_median_s": median([r["wall_s"] for r in measured]),
        "wall_all_s": [round(r["wall_s"], 4) for r in measured],
        "warmup_wall_s": next(r["wall_s"] for r in records if r["phase"] == "warmup"),
        "breakdown_median_s": {p: median([r["breakdown_s"].get(p, 0.0) for r in measured]) for p in pieces},
        "peak_step_bytes": next(r["peak_bytes"] for r in records if r["phase"] == "warmup"),
        "peak_total_bytes": peak_total,
        "allocated_after_release_bytes": torch.cuda.memory_allocated() if cuda else None,
        "gradient_buffer_bytes": session.buffer_bytes[setup],
        "grad_cosine_mean": statistics.mean(cosines) if cosines else None,
        "conflict_rate_mean": statistics.mean(conflicts) if conflicts else None,
        "losses": [m.get("loss") for m in metrics],
        "reward_std": [m.get("reward_std") for m in metrics],  # non-zero: real advantages, a real RL gradient
    }


def batch_counts(batch: StepBatch, tokenizer, shape: StepShape) -> dict[str, Any]:
    """A step batch's token counts, and the share of extra tokens the guess loss runs: each micro-batch runs one
    guess row per distinct prompt in it (here every micro-batch holds rows of the step's one prompt)."""
    counts = batch.token_counts(tokenizer)
    return {**counts, "guess_token_share": shape.accumulation * counts["sft_tokens"] / counts["rl_tokens"]}


def run_classifier(runtime: Runtime, tokenizer, labels: list[str], plan: Plan, seed: int) -> dict[str, Any]:
    """Answer mode (with and without drafts) and guess mode against `model.generate` on whole prompts, at a fixed
    reply length."""
    model = runtime.load_model(seed).eval()
    template = GTAPromptTemplate(response_prefix=RESPONSE_PREFIX, system_prompt="You classify texts.")
    classifier = GTAClassifier(model, tokenizer, labels, template, max_prompt_tokens=plan.prompt_tokens)
    # drafts come from earlier replies; a random model repeats itself more than a trained one, so its drafts are
    # accepted more often: without them, answer mode's figure is one token per step, what it is at worst
    no_drafts = GTAClassifier(model, tokenizer, labels, template, max_prompt_tokens=plan.prompt_tokens)
    no_drafts._remember = lambda reply: None
    texts = load_classification_dataset("hwu64-scenario", "test", plan.classifier_texts, seed=seed)["text"]
    batch, new = plan.classifier_batch, plan.max_new_tokens
    kwargs = dict(batch_size=batch, guess_batch_size=batch, max_new_tokens=new)
    free = dict(kwargs, answer_decoding="free")  # decodes the whole reply, as `model.generate` does

    def runs_on(chosen: list[str]) -> dict[str, Callable[[], list]]:
        return {
            "baseline": lambda: generate_on_full_prompts(classifier, chosen, batch, new),
            "answer": lambda: classifier.predict(chosen, mode="answer", **free),
            "answer_no_drafts": lambda: no_drafts.predict(chosen, mode="answer", **free),
            "answer_labels": lambda: classifier.predict(chosen, mode="answer", **kwargs),
            "guess": lambda: classifier.predict(chosen, mode="guess", **kwargs),
        }

    timed_rounds(runs_on(texts[:batch]), 1)  # warm-up: the kernels' first calls, the shared-prefix cache
    seconds, predictions = timed_rounds(runs_on(texts), plan.classifier_repeats)
    results: dict[str, Any] = {}
    for name, times in seconds.items():
        generated = [p.generated_tokens for p in predictions[name]]
        results[name] = {
            "seconds": times,
            "texts_per_second": len(texts) / statistics.median(times),
            "mean_generated_tokens": statistics.mean(generated),
        }
    for name in results:
        results[name]["speedup"] = results[name]["texts_per_second"] / results["baseline"]["texts_per_second"]
    baseline = [p.raw_output for p in predictions["baseline"]]
    equal = {
        f"{name}_replies_equal_to_baseline": sum(
            p.raw_output == b for p, b in zip(predictions[name], baseline, strict=True)
        )
        for name in ("answer", "answer_no_drafts")
    }
    distinct = statistics.mean(len(set(tokenizer(reply)["input_ids"])) for reply in baseline)
    return {
        **results,
        "texts": len(texts),
        "batch_size": batch,
        "max_new_tokens": new,
        "repeats": plan.classifier_repeats,
        **equal,
        "baseline_mean_distinct_tokens_per_reply": distinct,
    }


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for gpu_check.json (created)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    parser.add_argument("--tiny", action="store_true", help="tiny models and shapes (the tests' CPU run)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, among {MODELS}")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, among {SETUPS}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per trainer, after one warm-up step")
    parser.add_argument(
        "--deadline_s", type=float, default=420.0, help="seconds from the start to the last case's end"
    )
    parser.add_argument("--no_classifier", action="store_true", help="skip the classifier timing")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (default: benchmarks/gpu_wheels/tokenizer from gpu_wheels.sh, else SmolLM2's)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if not args.models or any(m not in MODELS for m in args.models):
        parser.error(f"--models must be among {MODELS}")
    if not args.setups or any(s not in SETUPS for s in args.setups):
        parser.error(f"--setups must be among {SETUPS}")
    if args.steps < 1 or args.deadline_s <= 0:
        parser.error("--steps must be >= 1 and --deadline_s > 0")
    return args


def load_tokenizer(path: str | None):
    if path is None:
        from trl_gta.assets import smollm2_path

        path = str(DEFAULT_TOKENIZER) if DEFAULT_TOKENIZER.is_dir() else smollm2_path()
    return path, ensure_pad_token(AutoTokenizer.from_pretrained(path))


def versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@dataclass(frozen=True)
class Item:
    """One planned measurement: a training case, or the classifier (`setup` None)."""

    model: str
    setup: str | None = None
    scope: str = ""
    variant: str = ""

    @property
    def name(self) -> str:
        return "classifier" if self.setup is None else f"{self.model}/{self.setup}/{self.scope}/{self.variant}"


def planned_items(args: argparse.Namespace) -> list[Item]:
    """The training cases in order, the classifier after the 3B cases (before the larger model's)."""
    items = [Item(m, s, scope, v) for m in args.models for s in args.setups for scope, v in CASES]
    if not args.no_classifier:
        items.insert(sum(item.model == CLASSIFIER_MODEL for item in items), Item(CLASSIFIER_MODEL))
    return items


@dataclass
class Check:
    """What the run's measurements share: the options, shapes, tokenizer, data, one session per model, results."""

    args: argparse.Namespace
    plan: Plan
    tokenizer: Any
    overrides: dict[str, Any]
    results: Results
    dataset: Dataset | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="gta-gpu-check-"))
    sessions: dict[str, Session] = field(default_factory=dict)
    parameter_counts: dict[str, int] = field(default_factory=dict)

    def runtime(self, model: str) -> Runtime:
        return Runtime(self.args.device, None, model, self.overrides)

    def parameters(self, model: str) -> int:
        if model not in self.parameter_counts:
            config = architecture_config(model, **self.overrides)
            with torch.device("meta"):  # shapes only, no memory
                model_shape = AutoModelForCausalLM.from_config(config)
            self.parameter_counts[model] = sum(p.numel() for p in model_shape.parameters())
        return self.parameter_counts[model]

    def measure(self, item: Item) -> None:
        """Run one item; its results go into `self.results`."""
        args, plan, runtime = self.args, self.plan, self.runtime(item.model)
        if self.dataset is None:
            self.dataset = long_text_dataset(self.tokenizer, plan, args.seed)
        if item.setup is None:
            log(f"classifier: {item.model} shape, {plan.classifier_texts} texts, {plan.max_new_tokens} new tokens")
            labels = dataset_label_set(self.dataset)
            self.results.classifier = run_classifier(runtime, self.tokenizer, labels, plan, args.seed)
            return
        if item.model not in self.sessions:
            self.sessions[item.model] = Session(
                runtime, self.tokenizer, self.dataset, f"{self.workdir}/{item.model}", args.seed, args.steps,
                StepRecorder(runtime), shape=plan.shape, sampler=scripted_batches,
            )  # fmt: skip
        session = self.sessions[item.model]
        case = run_case(session, item.model, item.setup, item.scope, item.variant, args.steps)
        self.results.cases[item.name] = case
        self.results.batches[item.model] = [batch_counts(b, self.tokenizer, plan.shape) for b in session.batches]
        log(f"{item.name}: {case['wall_median_s']:.3f} s/step, step peak {case['peak_step_bytes'] / GIB:.2f} GiB")


def header(args: argparse.Namespace, plan: Plan, tokenizer_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """What the JSON says about the run before any measurement: the machine, versions, options and shapes."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
            "cuda": torch.version.cuda,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "packages": versions(),
            "trl_gta_from": os.path.dirname(trl_gta.__file__),
        },
        "args": vars(args),
        "plan": {**vars(plan), "shape": vars(plan.shape)},
        "tokenizer": tokenizer_path,
        "architectures": {
            m: architecture_config(m, **overrides).to_diff_dict()
            for m in dict.fromkeys((*args.models, CLASSIFIER_MODEL))
        },
        "memory_tool": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "torch.profiler",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.deadline_s)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = TINY_PLAN if args.tiny else RECIPE
    tokenizer_path, tokenizer = load_tokenizer(args.tokenizer)
    overrides: dict[str, Any] = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if args.tiny:
        overrides |= dict(TINY, vocab_size=len(tokenizer))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "gpu_check.json", header(args, plan, tokenizer_path, overrides))
    check = Check(args, plan, tokenizer, overrides, results)
    log(
        f"gpu check: {args.models} x {args.setups} on {results.header['machine']['device']}, torch "
        f"{torch.__version__}, deadline {args.deadline_s:.0f} s{', tiny' if args.tiny else ''}"
    )
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, stop_on)
    signal.setitimer(signal.ITIMER_REAL, args.deadline_s)
    items = planned_items(args)
    in_flight = "nothing"
    try:
        for item in items:
            parameters = check.parameters(item.model)
            kind = "classifier" if item.setup is None else "training"
            reason = budget.shortfall(kind, parameters)
            if reason:
                results.skipped[item.name] = reason
                continue
            in_flight, start = item.name, time.monotonic()
            try:
                check.measure(item)
            except Exception as error:  # one failed case (out of GPU memory, say) must not cost the others
                traceback.print_exc()
                results.failed[item.name] = f"{type(error).__name__}: {error}"
            release({})  # the memory the item's trainer or model held
            seconds = time.monotonic() - start
            budget.record(kind, seconds, parameters)
            results.save()
            log(f"{item.name}: done in {seconds:.0f} s, {budget.left():.0f} s left")
        in_flight = "nothing"
    except Stopped as stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the results be saved
        results.stopped = f"{stop} during {in_flight}"
        log(f"stopped ({stop}) during {in_flight}: saving what was measured")
        done = {*results.cases, *results.skipped, *results.failed, *(["classifier"] if results.classifier else [])}
        for item in items:
            if item.name not in done:
                results.skipped[item.name] = "stopped in flight" if item.name == in_flight else f"not started: {stop}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        results.save()
    log(f"results written to {results.path}; total {time.monotonic() - results.started:.0f} s")
    for line in results.lines():
        log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""What GTA costs per optimizer step over stock GRPO, on identical batches.

`GTATrainer` runs TRL's GRPO loss plus a supervised cross-entropy on the gold guess (one extra forward/backward row
per distinct prompt) and combines the two gradients (two `torch.autograd.grad` calls, three dot products, one
surrogate backward). This script times it against stock `trl.GRPOTrainer`:

- model: SmolLM2-135M-Instruct (float32, CPU) + LoRA r=16 on all linear layers;
- data: the built-in `hwu64-scenario` train split, prompts pre-filled with `<guess>`;
- identical batches: completions are sampled ONCE per step batch (TRL's own `_generate_single_turn`), stored, and
  replayed in every trainer by replacing `_generate_single_turn`; the dataloader order is the same (same seed) and
  each step's prompt ids are checked to be equal across trainers;
- variants: `grpo` (stock GRPOTrainer) and GTATrainer with `conflict_strategy` `drop`, `project` and `none`;
- timing: wall and CPU time from `on_step_begin` to `on_step_end` (`training_step`, which includes scoring the
  replayed completions, + gradient clipping + optimizer step; logging is outside). Discarded warm-up steps come
  first (grpo and one GTA variant, or every variant with `--warmup all`); then rounds, each running every variant
  for `--steps` steps in rotating order, so machine noise hits all variants alike. Each round calls `train()`
  again, which restarts the dataloader: round k replays the same step batches as round 1.

The overhead floor is the share of extra tokens the supervised loss runs forward and backward, measured on the
batches: sum over the step's distinct prompts of (prompt + target tokens) / sum over its completions of
(prompt + completion tokens), without padding (the padded-width version is printed too).

    python benchmarks/overhead.py --quick     # 3 rounds x 1 step per variant (median of 3); ~6-8 min on 2 cores
    python benchmarks/overhead.py             # 4 rounds x 2 steps per variant
"""

import argparse
import ctypes
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

import trl_gta.trainer as gta_trainer_module
from trl_gta import GTAConfig, GTAPromptTemplate, GTATrainer, build_gta_dataset
from trl_gta.assets import smollm2_path
from trl_gta.collator import target_token_ids
from trl_gta.registry import load_classification_dataset
from trl_gta.rewards import answer_accuracy_reward, gta_format_reward, gta_partial_format_reward

VARIANTS = ("grpo", "drop", "project", "none")
GTA_STRATEGIES = VARIANTS[1:]
RESPONSE_PREFIX = "<guess>"
NUM_GENERATIONS = 8
BATCH_SIZE = 16  # 2 prompts x 8 generations: one micro-batch per optimizer step
MAX_COMPLETION_LENGTH = 48
TARGET_SLACK = 0.03
GIB = 1024**3
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Breakdown timers: wall seconds per named piece of the current step (a piece may run inside another one).
TIMERS: dict[str, float] = defaultdict(float)
_grad_calls = [0]


# ------------------------------------------------------------------------------------------------ memory
def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that RSS at a step's start is close to live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler(threading.Thread):
    """Samples RSS every `interval` seconds; `window_peak()` is the maximum since the last `reset()`."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = rss_bytes()
        self._stop_event = threading.Event()

    def reset(self) -> None:
        self.peak = rss_bytes()

    def window_peak(self) -> int:
        self.peak = max(self.peak, rss_bytes())
        return self.peak

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> None:
        self._stop_event.set()


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class StepBatch:
    """One optimizer step's rollouts, sampled once and replayed in every trainer."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    labels: list[str]

    def key(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(ids) for ids in self.prompt_ids)

    def token_counts(self, tokenizer) -> dict[str, int]:
        """Tokens run by the RL loss (all rows) and by the guess loss (one row per distinct prompt and target)."""
        distinct = {
            (tuple(p), tuple(target_token_ids(tokenizer, label, RESPONSE_PREFIX)))
            for p, label in zip(self.prompt_ids, self.labels, strict=True)
        }
        rl = sum(len(p) + len(c) for p, c in zip(self.prompt_ids, self.completion_ids, strict=True))
        sft = sum(len(p) + len(t) for p, t in distinct)
        # padded widths as run: TRL pads prompts and completions to the batch maxima; GTA's guess rows are cut to
        # the kept prompts' longest prompt plus the longest target
        rl_padded = len(self.prompt_ids) * (
            max(len(p) for p in self.prompt_ids) + max(len(c) for c in self.completion_ids)
        )
        sft_padded = len(distinct) * (max(len(p) for p, _ in distinct) + max(len(t) for _, t in distinct))
        return {
            "rl_tokens": rl,
            "sft_tokens": sft,
            "rl_tokens_padded": rl_padded,
            "sft_tokens_padded": sft_padded,
            "sft_rows": len(distinct),
            "rows": len(self.prompt_ids),
            "mean_prompt_tokens": round(statistics.mean(len(p) for p in self.prompt_ids), 1),
            "mean_completion_tokens": round(statistics.mean(len(c) for c in self.completion_ids), 1),
        }


class ReplayGenerator:
    """Stands in for `trainer._generate_single_turn`: returns the stored completions of the batch's prompt ids."""

    def __init__(self, batches: list[StepBatch]) -> None:
        self.by_prompts = {b.key(): b for b in batches}
        self.phase = "warmup"
        self.seen: dict[str, list[tuple[tuple[int, ...], ...]]] = defaultdict(list)

    def __call__(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        key = tuple(tuple(ids) for ids in prompt_ids)
        if key not in self.by_prompts:
            raise AssertionError("A trainer asked for completions of prompts that were never sampled.")
        self.seen[self.phase].append(key)
        return [list(ids) for ids in self.by_prompts[key].completion_ids], None


def sample_batches(trainer: GRPOTrainer, num_steps: int, seed: int) -> list[StepBatch]:
    """Sample the completions of the first `num_steps` step batches, in the trainer's dataloader order.

    TRL's own `_generate_single_turn` (its generation config: temperature 1, `max_completion_length` new tokens,
    cut after the first EOS) samples all the steps' rows in one call, which is cheaper than one call per step.
    """
    steps_rows: list[list[dict[str, Any]]] = []
    for rows in trainer.get_train_dataloader():
        if len(steps_rows) == num_steps:
            break
        steps_rows.append(list(rows))
    if len(steps_rows) < num_steps:
        raise ValueError(f"The dataset gives only {len(steps_rows)} step batches; raise --max_samples.")
    prompt_ids = []
    for rows in steps_rows:
        ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in rows])
        prompt_ids += [list(i) for i in ids]
    torch.manual_seed(seed)
    start = time.perf_counter()
    completion_ids, _ = trainer._generate_single_turn(prompt_ids, None, {}, NUM_GENERATIONS)
    batches = []
    for k, rows in enumerate(steps_rows):
        part = slice(k * BATCH_SIZE, (k + 1) * BATCH_SIZE)
        batches.append(
            StepBatch(prompt_ids[part], [list(c) for c in completion_ids[part]], [row["label"] for row in rows])
        )
    log(f"sampled {len(prompt_ids)} completions for {num_steps} step batch(es) in {time.perf_counter() - start:.1f} s")
    for k, batch in enumerate(batches):
        counts = batch.token_counts(trainer.processing_class)
        log(
            f"  batch {k}: mean prompt {counts['mean_prompt_tokens']} tokens, mean completion "
            f"{counts['mean_completion_tokens']} tokens"
        )
    return batches


# ------------------------------------------------------------------------------------------------ trainers
def make_config(variant: str, output_dir: str, seed: int) -> GRPOConfig:
    """The GRPO settings shared by every variant, plus GTA's knobs for the GTA variants."""
    common: dict[str, Any] = dict(
        output_dir=output_dir,
        num_generations=NUM_GENERATIONS,
        per_device_train_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=1,
        max_completion_length=MAX_COMPLETION_LENGTH,
        beta=0.0,
        gradient_checkpointing=True,  # non-reentrant: the transformers 5 default
        learning_rate=1e-5,
        lr_scheduler_type="constant",  # train() is called once per round; keep the same rate in every call
        max_steps=1,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        bf16=False,
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
    )
    if variant == "grpo":
        return GRPOConfig(**common)
    return GTAConfig(**common, sft_weight=1.0, rl_weight=1.0, conflict_strategy=variant, mask_guess_in_rl=True)


def build_trainer(variant: str, model_path: str, tokenizer, dataset, output_dir: str, seed: int) -> GRPOTrainer:
    """A fresh model + LoRA adapter and the variant's trainer (GRPOTrainer or GTATrainer)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    trainer_class = GRPOTrainer if variant == "grpo" else GTATrainer
    return trainer_class(
        model=model,
        # the partial format reward gives non-zero advantages, so the RL gradient is real and conflicts can occur
        reward_funcs=[gta_format_reward, answer_accuracy_reward, gta_partial_format_reward],
        args=make_config(variant, output_dir, seed),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )


def timed(name: str | Callable[[], str], fn: Callable) -> Callable:
    """Wrap `fn` so that its wall time is added to `TIMERS[name]` (`name` may be computed per call)."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMERS[name() if callable(name) else name] += time.perf_counter() - start

    return wrapper


def instrument_trainer(trainer: GRPOTrainer) -> None:
    """Time the pieces of a step on this trainer instance (thin wrappers; the code that runs is unchanged)."""
    trainer._generate_and_score_completions = timed("prepare", trainer._generate_and_score_completions)
    trainer.compute_loss = timed("compute_loss", trainer.compute_loss)
    trainer._compute_loss = timed("rl_forward", trainer._compute_loss)
    trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    if isinstance(trainer, GTATrainer):
        trainer._guess_loss = timed("sft_forward", trainer._guess_loss)


def instrument_gta_module() -> None:
    """Time GTA's module-level helpers (shared by all GTA trainers; only one trainer runs at a time)."""

    def grad_name() -> str:
        _grad_calls[0] += 1
        return "grad_sft" if _grad_calls[0] % 2 == 1 else "grad_rl"  # compute_loss takes the SFT gradient first

    m = gta_trainer_module
    m.guess_span_mask = timed("guess_span_mask", m.guess_span_mask)
    m._gradients = timed(grad_name, m._gradients)
    m.combine_gradients = timed("combine", m.combine_gradients)
    m.gradient_surrogate = timed("surrogate", m.gradient_surrogate)


class StepRecorder(TrainerCallback):
    """Records wall time, CPU time, RSS and the breakdown timers of each optimizer step."""

    # RSS is not trimmed between steps: returning freed memory to the OS would add page faults to every step

    def __init__(self, sampler: RssSampler) -> None:
        self.sampler = sampler
        self.records: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {}
        self._start: tuple[float, float] = (0.0, 0.0)
        self._optimizer_start = 0.0
        self._rss_begin = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._rss_begin = rss_bytes()
        self.sampler.reset()
        TIMERS.clear()
        _grad_calls[0] = 0
        self._start = (time.perf_counter(), time.process_time())

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        TIMERS["optimizer"] += time.perf_counter() - self._optimizer_start

    def on_step_end(self, args, state, control, **kwargs):
        wall = time.perf_counter() - self._start[0]
        cpu = time.process_time() - self._start[1]
        peak = self.sampler.window_peak()
        record = {
            **self.context,
            "step": state.global_step - 1,
            "wall_s": wall,
            "cpu_s": cpu,
            "rss_begin_bytes": self._rss_begin,
            "rss_peak_bytes": peak,
            "breakdown_s": dict(TIMERS),
        }
        self.records.append(record)
        log(
            f"  {record['variant']:>7} step {record['step']} ({record['phase']}): wall {wall:6.2f} s,"
            f" cpu {cpu:6.2f} s, peak RSS {peak / GIB:.2f} GiB"
        )


def train_steps(trainer: GRPOTrainer, num_steps: int) -> list[dict[str, Any]]:
    """Run `trainer.train()` for `num_steps` steps from the start of its dataloader; return its logged metrics."""
    trainer.args.max_steps = num_steps
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


# ------------------------------------------------------------------------------------------------ reporting
def log(message: str) -> None:
    print(message, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(records: list[dict[str, Any]], variants: list[str], baseline_rss: int) -> dict[str, dict[str, Any]]:
    """Per-variant medians of the measured steps, ratios to grpo and peak memory."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in variants:
        rows = [r for r in records if r["variant"] == variant and r["phase"] == "measure"]
        pieces = sorted({name for r in rows for name in r["breakdown_s"]})
        summary[variant] = {
            "steps": len(rows),
            "wall_median_s": median([r["wall_s"] for r in rows]),
            "cpu_median_s": median([r["cpu_s"] for r in rows]),
            "wall_all_s": [round(r["wall_s"], 3) for r in rows],
            "peak_rss_bytes": max(r["rss_peak_bytes"] for r in rows),
            "peak_over_baseline_bytes": max(r["rss_peak_bytes"] for r in rows) - baseline_rss,
            "step_rss_growth_bytes": max(r["rss_peak_bytes"] - r["rss_begin_bytes"] for r in rows),
            "breakdown_median_s": {p: median([r["breakdown_s"].get(p, 0.0) for r in rows]) for p in pieces},
        }
    base = summary["grpo"]
    for variant in variants:
        summary[variant]["wall_ratio"] = summary[variant]["wall_median_s"] / base["wall_median_s"]
        summary[variant]["cpu_ratio"] = summary[variant]["cpu_median_s"] / base["cpu_median_s"]
    return summary


def print_report(
    summary: dict[str, dict[str, Any]], floors: dict[str, float], baseline_rss: int, conflict: dict[str, float]
) -> None:
    """The results table, the breakdown, the target check and, as the last lines, the machine-readable results."""
    log("")
    log(f"RSS after loading all models and sampling: {baseline_rss / GIB:.2f} GiB (one process, all variants)")
    header = (
        f"{'variant':<8} {'steps':>5} {'wall s/step':>11} {'cpu s/step':>10} {'wall ratio':>10} {'cpu ratio':>9}"
        f" {'peak RSS GiB':>12} {'over baseline':>13} {'conflict rate':>13}"
    )
    log(header)
    log("-" * len(header))
    for variant, s in summary.items():
        rate = conflict.get(variant)
        log(
            f"{variant:<8} {s['steps']:>5} {s['wall_median_s']:>11.2f} {s['cpu_median_s']:>10.2f}"
            f" {s['wall_ratio']:>10.3f} {s['cpu_ratio']:>9.3f} {s['peak_rss_bytes'] / GIB:>12.2f}"
            f" {s['peak_over_baseline_bytes'] / GIB:>13.2f} {'-' if rate is None else f'{rate:.2f}':>13}"
        )
    log(
        "(medians of measured steps; ratios vs grpo; peak RSS: the process's (all trainers) during this variant's"
        " steps, sampled every 20 ms; freed memory other variants left in the heap counts too)"
    )
    log("")
    pieces = ["prepare", "guess_span_mask", "compute_loss", "rl_forward", "sft_forward", "grad_sft", "grad_rl"]
    pieces += ["combine", "surrogate", "backward", "optimizer"]
    log("breakdown, median wall s/step (prepare includes guess_span_mask; compute_loss includes rl_forward,")
    log("sft_forward, grad_sft, grad_rl, combine, surrogate; for GTA, backward is the surrogate's)")
    log(f"{'piece':<16}" + "".join(f"{v:>9}" for v in summary))
    for piece in pieces:
        values = [s["breakdown_median_s"].get(piece) for s in summary.values()]
        if any(v is not None for v in values):
            log(f"{piece:<16}" + "".join(f"{'-' if v is None else f'{v:.2f}':>9}" for v in values))
    log("")
    floor = floors["non_padded"]
    target = 1 + floor + TARGET_SLACK
    log(
        f"overhead floor (extra SFT tokens / RL tokens, non-padded): {floor:.3f}; with padded widths: "
        f"{floors['padded']:.3f}"
    )
    for strategy in GTA_STRATEGIES:
        if strategy in summary:
            log(f"cpu_ratio[{strategy}]={summary[strategy]['cpu_ratio']:.2f}")
    log(f"target: ratio <= 1 + floor + {TARGET_SLACK} = {target:.3f}")
    for strategy in GTA_STRATEGIES:
        if strategy in summary:
            ratio = summary[strategy]["wall_ratio"]
            log(f"  {strategy}: wall ratio {ratio:.3f} {'meets' if ratio <= target else 'MISSES'} the target")
    log(f"overhead_floor={floor:.3f}")
    for strategy in GTA_STRATEGIES:
        if strategy in summary:
            log(f"overhead_ratio[{strategy}]={summary[strategy]['wall_ratio']:.2f}")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds x 1 measured step per variant")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 4; 3 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per variant per round (2; 1 quick)")
    parser.add_argument(
        "--warmup",
        choices=("shared", "all"),
        default="shared",
        help="discarded first steps: 'shared' = grpo and one GTA variant (kernels and allocator warm up for the\n"
        "process; the shapes are the same for all GTA variants), 'all' = every variant",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--max_samples", type=int, default=64, help="training texts loaded (step batches come first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model_path", default=None, help="transformers folder (default: the cached SmolLM2-135M)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (grpo is needed)")
    parser.add_argument("--output", default="benchmarks/results/overhead.json", help="JSON of all raw timings")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 4)
    args.steps = args.steps or (1 if args.quick else 2)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "grpo" not in args.variants or any(v not in VARIANTS for v in args.variants):
        parser.error(f"--variants must include grpo and be among {VARIANTS}")
    return args


def quiet() -> None:
    """Keep TRL/transformers/datasets logging and warnings out of the output."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars
    datasets.disable_progress_bars()
    for name in ("trl", "transformers", "accelerate", "peft", "datasets", "trl_gta"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    log(
        f"overhead benchmark: variants {args.variants}, {args.rounds} rounds x {args.steps} step(s), warm-up "
        f"{args.warmup}, {args.threads} threads, torch {torch.__version__}"
    )

    model_path = args.model_path or smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    raw = load_classification_dataset("hwu64-scenario", split="train", max_samples=args.max_samples, seed=args.seed)
    template = GTAPromptTemplate(response_prefix=RESPONSE_PREFIX, system_prompt="You classify texts.")
    dataset = build_gta_dataset(raw, template=template, tokenizer=tokenizer)

    workdir = tempfile.mkdtemp(prefix="gta-overhead-")
    trainers: dict[str, GRPOTrainer] = {}
    for variant in args.variants:
        load_start = time.perf_counter()
        trainers[variant] = build_trainer(variant, model_path, tokenizer, dataset, f"{workdir}/{variant}", args.seed)
        log(f"built {variant} trainer in {time.perf_counter() - load_start:.1f} s")

    batches = sample_batches(trainers["grpo"], args.steps, args.seed)
    counts = [b.token_counts(tokenizer) for b in batches]
    floors = {
        "non_padded": statistics.mean(c["sft_tokens"] / c["rl_tokens"] for c in counts),
        "padded": statistics.mean(c["sft_tokens_padded"] / c["rl_tokens_padded"] for c in counts),
    }

    sampler = RssSampler()
    sampler.start()
    recorder = StepRecorder(sampler)
    replays: dict[str, ReplayGenerator] = {}
    instrument_gta_module()
    for variant, trainer in trainers.items():
        replays[variant] = ReplayGenerator(batches)
        trainer._generate_single_turn = replays[variant]
        trainer.add_callback(recorder)
        trainer.remove_callback(PrinterCallback)  # the per-step metric dicts; this script prints its own lines
        instrument_trainer(trainer)
    trim_heap()
    baseline_rss = rss_bytes()

    metrics: dict[str, list[dict[str, Any]]] = defaultdict(list)
    warmup = args.variants if args.warmup == "all" else ["grpo", next(v for v in args.variants if v != "grpo")]
    log(f"warm-up ({args.warmup}): one discarded step of {', '.join(warmup)}")
    for variant in warmup:
        recorder.context = {"variant": variant, "round": -1, "phase": "warmup"}
        metrics[variant] += train_steps(trainers[variant], 1)
    for replay in replays.values():
        replay.phase = "measure"
    for round_index in range(args.rounds):
        shift = round_index % len(args.variants)
        order = args.variants[shift:] + args.variants[:shift]
        log(f"round {round_index + 1}/{args.rounds}: {' -> '.join(order)}")
        for variant in order:
            recorder.context = {"variant": variant, "round": round_index, "phase": "measure"}
            metrics[variant] += train_steps(trainers[variant], args.steps)
    sampler.stop()

    # identical batches: every trainer asked for the same prompts at every step, in the dataloader's order
    expected = [b.key() for b in batches]
    for variant, replay in replays.items():
        assert replay.seen["measure"] == expected * args.rounds, f"{variant}: prompts differ from the sampled order"
        assert replay.seen["warmup"] == ([expected[0]] if variant in warmup else []), f"{variant}: warm-up prompts"

    summary = summarise(recorder.records, args.variants, baseline_rss)
    conflict = {
        v: statistics.mean(m["gta/conflict_rate"] for m in metrics[v] if m.get("gta/conflict_rate") is not None)
        for v in args.variants
        if any(m.get("gta/conflict_rate") is not None for m in metrics[v])
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "threads": args.threads,
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "torch": torch.__version__,
                },
                "args": {k: v for k, v in vars(args).items()},
                "batches": counts,
                "overhead_floor": floors,
                "baseline_rss_bytes": baseline_rss,
                "summary": summary,
                "conflict_rate": conflict,
                "steps": recorder.records,
                "logged_metrics": metrics,
                "batch_data": [asdict(b) for b in batches],
            },
            indent=1,
        )
    )
    log(f"raw timings written to {output}; total run time {time.perf_counter() - started:.0f} s")
    print_report(summary, floors, baseline_rss, conflict)
    return 0


if __name__ == "__main__":
    sys.exit(main())

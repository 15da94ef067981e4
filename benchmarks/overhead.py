#!/usr/bin/env python
"""What GTA costs per optimizer step over stock GRPO, in time and in peak memory, on identical batches.

`GTATrainer` runs TRL's GRPO loss plus a supervised cross-entropy on the gold guess (one extra forward/backward row
per distinct prompt) and combines the two gradients under a conflict rule. This script runs it against stock
`trl.GRPOTrainer`:

- models: on CPU, SmolLM2-135M-Instruct (float32); on CUDA, a random-weight model of Qwen2.5-3B's shape built from
  its config (`model_configs.json`), in bf16. Two setups each: `lora` (LoRA r=16 on all linear layers) and `full`
  (full fine-tune);
- data: the built-in `hwu64-scenario` train split, prompts pre-filled with `<guess>`;
- identical batches: completions are sampled ONCE per step batch (TRL's own `_generate_single_turn`), stored, and
  replayed in every trainer by replacing `_generate_single_turn`; the dataloader order is the same (same seed) and
  each step's prompt ids are checked to be equal across trainers;
- variants: `grpo` (stock GRPOTrainer) and GTATrainer with `conflict_strategy` `drop`, `project` and `none`, and
  `drop_pg` (`drop` with `conflict_signal="policy_gradient"`: the cosine on the policy term alone, which costs one
  more RL backward and gradient buffer when `--beta` > 0, nothing at β = 0), at `conflict_scope` `step` (the
  default) and, for memory, `micro_batch`;
- time (the timed setups: `lora` on CPU, both on CUDA; step scope): wall and CPU time from `on_step_begin` to
  `on_step_end` (`training_step`, which includes scoring the replayed completions, + gradient clipping + optimizer
  step; logging is outside). Each variant's first step is a discarded warm-up; then rounds, each running every
  variant for `--steps` steps in rotating order, so machine noise hits all variants alike. Each round calls
  `train()` again, which restarts the dataloader: round k replays the same step batches as round 1;
- memory: the peak of memory allocated from `on_step_begin` to `on_pre_optimizer_step` (the losses, the backward
  and GTA's combination, which happens before clipping) above what was allocated when the step began, in each
  trainer's first step. On CUDA from `torch.cuda.max_memory_allocated`; on CPU from the allocation and free events
  of torch's CPU allocator recorded by `torch.profiler` (`profile_memory=True`), summed in order (RSS would not do:
  freed heap memory stays resident). `peak_memory_ratio` is GTA's peak over GRPO's on the same batch.

The overhead floor is the share of extra tokens the supervised loss runs forward and backward, measured on the
batches: sum over the step's distinct prompts of (prompt + target tokens) / sum over its completions of
(prompt + completion tokens), without padding (the padded-width version is printed too).

    python benchmarks/overhead.py --quick     # 3 rounds x 1 timed step per variant (median of 3)
    python benchmarks/overhead.py             # 4 rounds x 2 timed steps per variant
"""

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PrinterCallback,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer

import trl_gta.trainer as gta_trainer_module
from trl_gta import GTAConfig, GTAPromptTemplate, GTATrainer, build_gta_dataset
from trl_gta.assets import smollm2_path
from trl_gta.collator import target_token_ids
from trl_gta.methods import default_lora_config
from trl_gta.prompts import ensure_pad_token
from trl_gta.registry import load_classification_dataset
from trl_gta.rewards import answer_accuracy_reward, gta_format_reward, gta_partial_format_reward

VARIANTS = ("grpo", "drop", "project", "none", "drop_pg")
SIGNALS = {"drop_pg": "policy_gradient"}  # the variants that take the cosine with the policy term alone
GTA_STRATEGIES = VARIANTS[1:]
SETUPS = ("lora", "full")
SCOPES = ("step", "micro_batch")
RESPONSE_PREFIX = "<guess>"
TARGET_SLACK = 0.03
MIB = 1024**2
MODEL_CONFIGS = Path(__file__).with_name("model_configs.json")
"""Released models' architectures (their config.json), for random-weight models: no download needed."""

# Breakdown timers: wall seconds per named piece of the current step (a piece may run inside another one).
TIMERS: dict[str, float] = defaultdict(float)


# ------------------------------------------------------------------------------------------------ runtime
def architecture_config(name: str, **overrides: Any) -> PretrainedConfig:
    """The transformers config of a released model's architecture from `model_configs.json`, fields overridden."""
    known = json.loads(MODEL_CONFIGS.read_text())
    if name not in known:
        raise ValueError(f"Unknown architecture {name!r}: choose one of {sorted(known)} ({MODEL_CONFIGS.name}).")
    return AutoConfig.for_model(**{**known[name]["config"], **overrides})


@dataclass(frozen=True)
class StepShape:
    """The rows of one optimizer step: `num_generations` completions per prompt, `micro_batch` rows per forward
    and backward, `accumulation` micro-batches per optimizer step, completions of at most `max_completion_length`
    tokens."""

    num_generations: int = 8
    micro_batch: int = 16  # 2 prompts x 8 generations: one micro-batch per optimizer step
    accumulation: int = 1
    max_completion_length: int = 48


@dataclass
class Runtime:
    """Where the benchmark runs: the device, the model's dtype and where its weights come from."""

    device: str
    model_path: str | None  # a transformers folder; None: a random-weight model of `architecture`
    architecture: str = "qwen2.5-3b-instruct"  # a name in model_configs.json
    config_overrides: dict[str, Any] = field(default_factory=dict)  # fields replacing the architecture's

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.cuda else torch.float32

    @property
    def model_name(self) -> str:
        return os.path.basename(self.model_path) if self.model_path else f"random-weight {self.architecture} shape"

    @property
    def memory_tool(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated (peak over the step) - torch.cuda.memory_allocated (at its start)"
        return (
            "torch.profiler CPU allocator events (profile_memory=True), allocations minus frees since the step began"
        )

    def load_model(self, seed: int):
        torch.manual_seed(seed)
        if self.model_path:
            return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        config = architecture_config(self.architecture, **self.config_overrides)
        with torch.device(self.device):  # initialised on the GPU: fast, and identical for a given seed
            return AutoModelForCausalLM.from_config(config, dtype=self.dtype)

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class MemoryProbe:
    """Peak memory allocated between `start()` and `stop()`, above what was allocated at `start()`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._base = 0
        self._profiler: torch.profiler.profile | None = None

    def start(self) -> None:
        if self.runtime.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._profiler = torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.start()

    def stop(self) -> int:
        if self.runtime.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self._base
        profiler, self._profiler = self._profiler, None
        profiler.stop()
        cpu = torch._C._autograd.DeviceType.CPU
        events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
        # frees of blocks allocated before start() are not reported: the level counts this window's blocks only
        level = peak = 0
        for event in sorted((e for e in events if e.device_type() == cpu), key=lambda e: e.start_ns()):
            level += event.nbytes()
            peak = max(peak, level)
        return peak


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


def step_prompts(trainer: GRPOTrainer, num_steps: int) -> list[tuple[list[dict[str, Any]], list[list[int]]]]:
    """The rows and prompt ids of the first `num_steps` step batches (generation batches), in dataloader order."""
    steps: list[tuple[list[dict[str, Any]], list[list[int]]]] = []
    for rows in trainer.get_train_dataloader():
        if len(steps) == num_steps:
            break
        ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in rows])
        steps.append((list(rows), [list(i) for i in ids]))
    if len(steps) < num_steps:
        raise ValueError(f"The dataset gives only {len(steps)} step batches; raise --max_samples.")
    return steps


def sample_batches(trainer: GRPOTrainer, num_steps: int, seed: int) -> list[StepBatch]:
    """Sample the completions of the first `num_steps` step batches, in the trainer's dataloader order.

    TRL's own `_generate_single_turn` (its generation config: temperature 1, `max_completion_length` new tokens,
    cut after the first EOS) samples all the steps' rows in one call, which is cheaper than one call per step.
    """
    steps = step_prompts(trainer, num_steps)
    prompt_ids = [ids for _, step_ids in steps for ids in step_ids]
    torch.manual_seed(seed)
    start = time.perf_counter()
    completion_ids, _ = trainer._generate_single_turn(prompt_ids, None, {}, trainer.args.num_generations)
    batches, offset = [], 0
    for rows, step_ids in steps:
        part = slice(offset, offset + len(step_ids))
        batches.append(StepBatch(step_ids, [list(c) for c in completion_ids[part]], [row["label"] for row in rows]))
        offset += len(step_ids)
    log(f"sampled {len(prompt_ids)} completions for {num_steps} step batch(es) in {time.perf_counter() - start:.1f} s")
    log_batches(batches, trainer.processing_class)
    return batches


def log_batches(batches: list[StepBatch], tokenizer) -> None:
    for k, batch in enumerate(batches):
        counts = batch.token_counts(tokenizer)
        log(
            f"  batch {k}: mean prompt {counts['mean_prompt_tokens']} tokens, mean completion "
            f"{counts['mean_completion_tokens']} tokens"
        )


# ------------------------------------------------------------------------------------------------ trainers
def make_config(
    variant: str,
    scope: str,
    output_dir: str,
    seed: int,
    runtime: Runtime,
    shape: StepShape = StepShape(),
    beta: float = 0.0,
) -> GRPOConfig:
    """The GRPO settings shared by every variant, plus GTA's knobs for the GTA variants."""
    common: dict[str, Any] = dict(
        output_dir=output_dir,
        num_generations=shape.num_generations,
        per_device_train_batch_size=shape.micro_batch,
        gradient_accumulation_steps=shape.accumulation,
        max_completion_length=shape.max_completion_length,
        beta=beta,
        gradient_checkpointing=True,  # non-reentrant: the transformers 5 default
        learning_rate=1e-5,
        lr_scheduler_type="constant",  # train() is called once per round; keep the same rate in every call
        max_steps=1,
        report_to="none",
        save_strategy="no",
        logging_steps=1,  # every step is a logging step: "none" measures its cosine on each
        bf16=runtime.cuda,
        use_cpu=not runtime.cuda,
        seed=seed,
        disable_tqdm=True,
    )
    if variant == "grpo":
        return GRPOConfig(**common)
    return GTAConfig(
        **common,
        sft_weight=1.0,
        rl_weight=1.0,
        conflict_strategy=variant.removesuffix("_pg"),
        conflict_signal=SIGNALS.get(variant, "rl_loss"),
        conflict_scope=scope,
        mask_guess_in_rl=True,
    )


def build_trainer(
    variant: str,
    scope: str,
    setup: str,
    runtime: Runtime,
    tokenizer,
    dataset,
    output_dir: str,
    seed: int,
    shape: StepShape = StepShape(),
    beta: float = 0.0,
) -> GRPOTrainer:
    """A fresh model (+ LoRA adapter for the `lora` setup) and the variant's trainer (GRPOTrainer or GTATrainer)."""
    trainer_class = GRPOTrainer if variant == "grpo" else GTATrainer
    lora = default_lora_config()
    return trainer_class(
        model=runtime.load_model(seed),
        # the partial format reward gives non-zero advantages, so the RL gradient is real and conflicts can occur
        reward_funcs=[gta_format_reward, answer_accuracy_reward, gta_partial_format_reward],
        args=make_config(variant, scope, output_dir, seed, runtime, shape, beta),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora if setup == "lora" else None,
    )


def gradient_buffer_bytes(trainer: GRPOTrainer) -> int:
    """Bytes of one gradient of every trainable parameter: the unit of GTA's extra memory."""
    return sum(p.numel() * p.element_size() for p in trainer.model.parameters() if p.requires_grad)


def timed(name: str, fn: Callable) -> Callable:
    """Wrap `fn` so that its wall time is added to `TIMERS[name]`."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMERS[name] += time.perf_counter() - start

    return wrapper


def instrument_trainer(trainer: GRPOTrainer) -> None:
    """Time the pieces of a step on this trainer instance (thin wrappers; the code that runs is unchanged)."""
    trainer._generate_and_score_completions = timed("prepare", trainer._generate_and_score_completions)
    trainer.compute_loss = timed("compute_loss", trainer.compute_loss)
    trainer._compute_loss = timed("rl_forward", trainer._compute_loss)
    trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    if isinstance(trainer, GTATrainer):
        trainer._guess_loss = timed("sft_forward", trainer._guess_loss)
        trainer._gradients = timed("signal_backward", trainer._gradients)  # step scope: the policy term's only
        trainer._combine_step_gradients = timed("combine", trainer._combine_step_gradients)


class StepRecorder(TrainerCallback):
    """Records wall time, CPU time, the breakdown timers and (when asked) the peak memory of each optimizer step."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.probe = MemoryProbe(runtime)
        self.records: list[dict[str, Any]] = []
        self.context: dict[str, Any] = {}
        self._start: tuple[float, float] = (0.0, 0.0)
        self._optimizer_start = 0.0
        self._peak: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        TIMERS.clear()
        self._peak = None
        if self.context["profile_memory"]:
            self.probe.start()
        self.runtime.synchronize()
        self._start = (time.perf_counter(), time.process_time())

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.context["profile_memory"]:
            self._peak = self.probe.stop()
        self._optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        TIMERS["optimizer"] += time.perf_counter() - self._optimizer_start

    def on_step_end(self, args, state, control, **kwargs):
        self.runtime.synchronize()
        wall = time.perf_counter() - self._start[0]
        cpu = time.process_time() - self._start[1]
        record = {
            **self.context,
            "step": state.global_step - 1,
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_bytes": self._peak,
            "breakdown_s": dict(TIMERS),
        }
        self.records.append(record)
        memory = "" if self._peak is None else f", peak memory above step start {self._peak / MIB:8.1f} MiB"
        log(
            f"  {record['setup']:>4} {record['scope']:>11} {record['variant']:>7} step {record['step']}"
            f" ({record['phase']}): wall {wall:6.2f} s, cpu {cpu:6.2f} s{memory}"
        )


def train_steps(trainer: GRPOTrainer, num_steps: int) -> list[dict[str, Any]]:
    """Run `trainer.train()` for `num_steps` steps from the start of its dataloader; return its logged metrics."""
    trainer.args.max_steps = num_steps
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def release(trainers: dict) -> None:
    """Drop the trainers (and their models) so that the next setup's fit in memory."""
    trainers.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Session:
    """What every trainer of the run shares: the data, the replayed batches and the recorder."""

    runtime: Runtime
    tokenizer: Any
    dataset: Any
    workdir: str
    seed: int
    num_steps: int
    recorder: StepRecorder
    beta: float = 0.0
    batches: list[StepBatch] | None = None
    shape: StepShape = StepShape()
    sampler: Callable[[GRPOTrainer, int, int], list[StepBatch]] = sample_batches  # makes the replayed batches

    def __post_init__(self) -> None:
        self.replays: dict[tuple[str, str, str], tuple[ReplayGenerator, int]] = {}  # key -> (replay, rounds)
        self.metrics: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        self.buffer_bytes: dict[str, int] = {}

    def trainer(self, setup: str, scope: str, variant: str, rounds: int) -> GRPOTrainer:
        """Build a trainer that replays the sampled batches (sampling them with the first trainer built)."""
        start = time.perf_counter()
        output_dir = f"{self.workdir}/{setup}-{scope}-{variant}"
        trainer = build_trainer(
            variant,
            scope,
            setup,
            self.runtime,
            self.tokenizer,
            self.dataset,
            output_dir,
            self.seed,
            self.shape,
            self.beta,
        )
        log(f"built {setup} {scope} {variant} trainer in {time.perf_counter() - start:.1f} s")
        if self.batches is None:
            self.batches = self.sampler(trainer, self.num_steps, self.seed)
        replay = ReplayGenerator(self.batches)
        trainer._generate_single_turn = replay
        trainer.add_callback(self.recorder)
        trainer.remove_callback(PrinterCallback)  # the per-step metric dicts; this script prints its own lines
        instrument_trainer(trainer)
        self.replays[(setup, scope, variant)] = (replay, rounds)
        self.buffer_bytes[setup] = gradient_buffer_bytes(trainer)
        return trainer

    def run(self, trainer: GRPOTrainer, key: tuple[str, str, str], phase: str, steps: int, memory: bool) -> None:
        setup, scope, variant = key
        self.recorder.context = {"setup": setup, "scope": scope, "variant": variant, "phase": phase}
        self.recorder.context["profile_memory"] = memory
        self.metrics[key] += train_steps(trainer, steps)


def scope_of(variant: str, scope: str) -> str:
    return "-" if variant == "grpo" else scope


def run_timed_setup(session: Session, setup: str, rounds: int, steps: int) -> None:
    """Step scope, all variants interleaved: each trainer's first step (warm-up) also measures its memory."""
    keys = [(setup, scope_of(v, "step"), v) for v in VARIANTS]
    trainers = {key: session.trainer(*key, rounds=rounds) for key in keys}
    log(f"{setup}: warm-up (memory measured), one discarded step of each variant")
    for key, trainer in trainers.items():
        session.run(trainer, key, "warmup", 1, memory=True)
    for replay, _ in (session.replays[key] for key in keys):
        replay.phase = "measure"
    for round_index in range(rounds):
        shift = round_index % len(keys)
        order = keys[shift:] + keys[:shift]
        log(f"{setup}: round {round_index + 1}/{rounds}: {' -> '.join(v for _, _, v in order)}")
        for key in order:
            session.run(trainers[key], key, "measure", steps, memory=False)
    release(trainers)


def run_memory(session: Session, setup: str, scopes: list[str]) -> None:
    """One step of each trainer not measured yet for `setup`, its memory measured; one trainer in memory at a time."""
    keys = [(setup, scope_of(v, s), v) for s in scopes for v in VARIANTS]
    for key in dict.fromkeys(keys):
        if key in session.replays:
            continue
        trainers = {key: session.trainer(*key, rounds=0)}
        session.run(trainers[key], key, "memory", 1, memory=True)
        release(trainers)


# ------------------------------------------------------------------------------------------------ reporting
def log(message: str) -> None:
    print(message, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise_time(records: list[dict[str, Any]], setup: str) -> dict[str, dict[str, Any]]:
    """Per-variant medians of the measured steps of a timed setup, and ratios to grpo."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        rows = [r for r in records if (r["setup"], r["variant"], r["phase"]) == (setup, variant, "measure")]
        pieces = sorted({name for r in rows for name in r["breakdown_s"]})
        breakdown = {p: median([r["breakdown_s"].get(p, 0.0) for r in rows]) for p in pieces}
        if variant != "grpo":  # the SFT backward runs inside compute_loss (step scope), beside the forwards
            breakdown["sft_backward"] = median(
                [
                    r["breakdown_s"]["compute_loss"]
                    - r["breakdown_s"]["rl_forward"]
                    - r["breakdown_s"]["sft_forward"]
                    - r["breakdown_s"].get("signal_backward", 0.0)
                    for r in rows
                ]
            )
        summary[variant] = {
            "steps": len(rows),
            "wall_median_s": median([r["wall_s"] for r in rows]),
            "cpu_median_s": median([r["cpu_s"] for r in rows]),
            "wall_all_s": [round(r["wall_s"], 3) for r in rows],
            "breakdown_median_s": breakdown,
        }
    base = summary["grpo"]
    for variant in VARIANTS:
        summary[variant]["wall_ratio"] = summary[variant]["wall_median_s"] / base["wall_median_s"]
        summary[variant]["cpu_ratio"] = summary[variant]["cpu_median_s"] / base["cpu_median_s"]
    return summary


def summarise_memory(session: Session) -> dict[str, dict[str, Any]]:
    """Peak memory of each (setup, scope, variant), its ratio to grpo's and the extra in gradient buffers."""
    peaks = {
        (r["setup"], r["scope"], r["variant"]): r["peak_bytes"]
        for r in session.recorder.records
        if r["peak_bytes"] is not None
    }
    summary = {}
    for (setup, scope, variant), peak in peaks.items():
        base = peaks[(setup, "-", "grpo")]
        rates = [m["gta/conflict_rate"] for m in session.metrics[(setup, scope, variant)] if "gta/conflict_rate" in m]
        summary[f"{setup}/{scope}/{variant}"] = {
            "peak_bytes": peak,
            "ratio": peak / base,
            "extra_gradient_buffers": (peak - base) / session.buffer_bytes[setup],
            "gradient_buffer_bytes": session.buffer_bytes[setup],
            "conflict_rate": rates[0] if rates else None,
        }
    return summary


def print_report(
    session: Session, times: dict[str, dict[str, dict[str, Any]]], memory: dict[str, dict[str, Any]], floors
) -> None:
    """The results tables, the target check and, as the last lines, the machine-readable results."""
    conflict = {
        (setup, v): statistics.mean(rates)
        for (setup, _, v), entries in session.metrics.items()
        if (rates := [m["gta/conflict_rate"] for m in entries if m.get("gta/conflict_rate") is not None])
    }
    for setup, summary in times.items():
        log("")
        log(f"time, {setup} (conflict_scope step; medians of measured steps; ratios vs grpo)")
        header = (
            f"{'variant':<8} {'steps':>5} {'wall s/step':>11} {'cpu s/step':>10} {'wall ratio':>10} {'cpu ratio':>9}"
            f" {'conflict rate':>13}"
        )
        log(header)
        log("-" * len(header))
        for variant, s in summary.items():
            rate = conflict.get((setup, variant))
            log(
                f"{variant:<8} {s['steps']:>5} {s['wall_median_s']:>11.2f} {s['cpu_median_s']:>10.2f}"
                f" {s['wall_ratio']:>10.3f} {s['cpu_ratio']:>9.3f} {'-' if rate is None else f'{rate:.2f}':>13}"
            )
        log("")
        log(f"breakdown, {setup}, median wall s/step (prepare includes guess_span_mask; compute_loss includes")
        log("rl_forward (both passes for drop_pg), sft_forward, sft_backward and signal_backward, the policy term's")
        log("backward of drop_pg; combine is the step's conflict rule, before clipping)")
        log(f"{'piece':<16}" + "".join(f"{v:>9}" for v in summary))
        pieces = ["prepare", "guess_span_mask", "compute_loss", "rl_forward", "sft_forward", "sft_backward"]
        for piece in [*pieces, "signal_backward"]:
            values = [s["breakdown_median_s"].get(piece) for s in summary.values()]
            if any(v is not None for v in values):
                log(f"{piece:<16}" + "".join(f"{'-' if v is None else f'{v:.2f}':>9}" for v in values))
        for piece in ["backward", "combine", "optimizer"]:
            values = [s["breakdown_median_s"].get(piece) for s in summary.values()]
            log(f"{piece:<16}" + "".join(f"{'-' if v is None else f'{v:.2f}':>9}" for v in values))
    log("")
    log("peak memory from on_step_begin to on_pre_optimizer_step, above the step's start")
    log(f"(tool: {session.runtime.memory_tool})")
    header = (
        f"{'setup':<5} {'scope':<11} {'variant':<8} {'peak MiB':>9} {'vs grpo':>8} {'extra, grad buffers':>19}"
        f" {'conflict':>8}"
    )
    log(header)
    log("-" * len(header))
    for key, m in memory.items():
        setup, scope, variant = key.split("/")
        rate = m["conflict_rate"]
        log(
            f"{setup:<5} {scope:<11} {variant:<8} {m['peak_bytes'] / MIB:>9.1f} {m['ratio']:>8.3f}"
            f" {m['extra_gradient_buffers']:>19.2f} {'-' if rate is None else f'{rate:.0f}':>8}"
        )
    buffers = ", ".join(f"{setup} {size / MIB:.1f} MiB" for setup, size in session.buffer_bytes.items())
    log(f"(one trainable-gradient buffer: {buffers}; each row is that trainer's first step, on the same batch)")
    log("")
    floor = floors["non_padded"]
    target = 1 + floor + TARGET_SLACK
    log(
        f"overhead floor (extra SFT tokens / RL tokens, non-padded): {floor:.3f}; with padded widths: "
        f"{floors['padded']:.3f}"
    )
    for setup, summary in times.items():
        for strategy in GTA_STRATEGIES:
            log(f"cpu_ratio[{setup}/{strategy}]={summary[strategy]['cpu_ratio']:.2f}")
    log(f"target: ratio <= 1 + floor + {TARGET_SLACK} = {target:.3f}")
    for setup, summary in times.items():
        for strategy in GTA_STRATEGIES:
            ratio = summary[strategy]["wall_ratio"]
            log(f"  {setup}/{strategy}: wall ratio {ratio:.3f} {'meets' if ratio <= target else 'MISSES'} the target")
    tool = "torch.cuda.max_memory_allocated" if session.runtime.cuda else "torch.profiler(profile_memory=True)"
    log(f"memory_tool={tool}")
    log(f"overhead_floor={floor:.3f}")
    for setup, summary in times.items():
        for strategy in GTA_STRATEGIES:
            log(f"overhead_ratio[{setup}/{strategy}]={summary[strategy]['wall_ratio']:.2f}")
    for key, m in memory.items():
        if not key.endswith("/grpo"):
            log(f"peak_memory_ratio[{key}]={m['ratio']:.3f}")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds x 1 timed step per variant")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 4; 3 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant per round (2; 1 quick)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help="comma-separated: lora (LoRA r=16), full (full fine-tune)"
    )
    parser.add_argument(
        "--timed_setups", default=None, help="setups whose time is measured (default: lora on CPU, all on CUDA)"
    )
    parser.add_argument("--scopes", default=",".join(SCOPES), help="conflict scopes whose memory is measured")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--max_samples", type=int, default=64, help="training texts loaded (step batches come first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="KL coefficient of every variant; > 0 makes drop_pg take the policy term apart (the full setup then "
        "reloads a reference model from --model_path)",
    )
    parser.add_argument(
        "--model_path",
        default=None,
        help="transformers folder (default: the cached SmolLM2-135M on CPU, a random Qwen2.5-3B shape on CUDA)",
    )
    parser.add_argument("--output", default="benchmarks/results/overhead.json", help="JSON of all raw results")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 4)
    args.steps = args.steps or (1 if args.quick else 2)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    default_timed = ",".join(args.setups) if args.device == "cuda" else "lora"
    args.timed_setups = [s.strip() for s in (args.timed_setups or default_timed).split(",") if s.strip()]
    args.scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    if any(s not in SETUPS for s in args.setups) or any(s not in args.setups for s in args.timed_setups):
        parser.error(f"--setups must be among {SETUPS}, and --timed_setups among --setups")
    if "step" not in args.scopes or any(s not in SCOPES for s in args.scopes):
        parser.error(f"--scopes must include step and be among {SCOPES}")
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
    runtime = Runtime(args.device, args.model_path or (None if args.device == "cuda" else smollm2_path()))
    device_name = torch.cuda.get_device_name() if runtime.cuda else f"CPU, {args.threads} threads"
    log(
        f"overhead benchmark: {runtime.model_name} ({str(runtime.dtype).removeprefix('torch.')}) on {device_name};"
        f" setups {args.setups} (timed: {args.timed_setups}), scopes {args.scopes}, {args.rounds} rounds x"
        f" {args.steps} step(s), beta {args.beta}, torch {torch.__version__}"
    )
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(args.model_path or smollm2_path()))
    raw = load_classification_dataset("hwu64-scenario", split="train", max_samples=args.max_samples, seed=args.seed)
    template = GTAPromptTemplate(response_prefix=RESPONSE_PREFIX, system_prompt="You classify texts.")
    dataset = build_gta_dataset(raw, template=template, tokenizer=tokenizer)
    gta_trainer_module.guess_span_mask = timed("guess_span_mask", gta_trainer_module.guess_span_mask)

    session = Session(
        runtime,
        tokenizer,
        dataset,
        tempfile.mkdtemp(prefix="gta-overhead-"),
        args.seed,
        args.steps,
        StepRecorder(runtime),
        args.beta,
    )
    for setup in args.setups:
        if setup in args.timed_setups:
            run_timed_setup(session, setup, args.rounds, args.steps)
        run_memory(session, setup, args.scopes)

    # identical batches: every trainer asked for the same prompts at every step, in the dataloader's order
    expected = [b.key() for b in session.batches]
    for key, (replay, rounds) in session.replays.items():
        assert replay.seen["warmup"] == [expected[0]], f"{key}: first-step prompts differ from the sampled order"
        assert replay.seen["measure"] == expected * rounds, f"{key}: prompts differ from the sampled order"

    counts = [b.token_counts(tokenizer) for b in session.batches]
    floors = {
        "non_padded": statistics.mean(c["sft_tokens"] / c["rl_tokens"] for c in counts),
        "padded": statistics.mean(c["sft_tokens_padded"] / c["rl_tokens_padded"] for c in counts),
    }
    times = {setup: summarise_time(session.recorder.records, setup) for setup in args.timed_setups}
    memory = summarise_memory(session)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "device": device_name,
                    "cpu_count": os.cpu_count(),
                    "threads": args.threads,
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "torch": torch.__version__,
                },
                "args": vars(args),
                "model": runtime.model_name,
                "memory_tool": runtime.memory_tool,
                "batches": counts,
                "overhead_floor": floors,
                "time": times,
                "memory": memory,
                "steps": session.recorder.records,
                "logged_metrics": {"/".join(key): entries for key, entries in session.metrics.items()},
                "batch_data": [asdict(b) for b in session.batches],
            },
            indent=1,
        )
    )
    log(f"raw results written to {output}; total run time {time.perf_counter() - started:.0f} s")
    print_report(session, times, memory, floors)
    return 0


if __name__ == "__main__":
    sys.exit(main())

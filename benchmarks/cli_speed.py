#!/usr/bin/env python
"""`trl-gta train` against the convergence harness at the same shapes: seconds per step, and their ratio.

For each method, two runs on the same model, data, prompts, rewards and shapes (the `cpu` preset of
`benchmarks/convergence.py`: SmolLM2-135M-Instruct + LoRA r=16 on all linear layers, hwu64-scenario's 160-text
training sample; GTA: 2 prompts x 4 completions of up to 48 tokens, `<guess>` prefix, partial-format and valid-label
rewards; SFT: batches of 8 texts), each in its own process, one after the other:

- `harness`: the trainer `convergence.py` builds (its `training_config`, `build_trainer`);
- `cli`: `trl-gta train` with the flags a user would give for those shapes, nothing else (its defaults otherwise);
- `--cli_keep` adds runs of the CLI keeping TRL's GPU defaults (`bf16`, `activation_checkpointing`, or both): what
  they cost on this machine.

A step is timed from `on_step_begin` to `on_step_end` (sampling, losses, backward, optimizer), as the harness times
its training; the format warm-up is left out of both (it is not part of the step); the first step is left out of
the median (one-off set-up). The tokens each step trained on are recorded beside its time: the CLI runs with the
harness's seeds and sample order, so equal tokens say the two sides did the same work. Prints
`cli_step_ratio[METHOD]=` (the CLI's median s/step over the harness's) per method. Time it alone
(`flock -x /tmp/trl-gta-bench.lock python benchmarks/cli_speed.py`).

    python benchmarks/cli_speed.py --methods gta sft --steps 6 --cli_keep both
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback

from trl_gta.scripts.cpu import KEEP_FLAGS as CPU_KEEP_FLAGS

SEED = 0
KEEP_FLAGS = {name: list(flags) for name, flags in CPU_KEEP_FLAGS.items()}
KEEP_FLAGS["both"] = [flag for flags in CPU_KEEP_FLAGS.values() for flag in flags]


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from `on_step_begin` to `on_step_end`, and the tokens it trained on (the
    deltas of TRL's logged `num_tokens`; both sides log every step)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0
        self._seen = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.tokens.append(int(logs["num_tokens"]) - self._seen)
            self._seen = int(logs["num_tokens"])


def cli_flags(method: str, preset, steps: int, output_dir: str) -> list[str]:
    """`trl-gta train` flags for the harness's shapes of `method` (the harness's LoRA: dropout 0)."""
    from convergence import prompt_setup

    _, _, prefix = prompt_setup(method)
    from trl_gta.assets import smollm2_path

    flags = ["train", "--method", method, "--model_name_or_path", smollm2_path(), "--dataset_name", "hwu64-scenario"]
    flags += ["--output_dir", output_dir]
    flags += ["--max_train_samples", str(preset.budget_examples), "--max_steps", str(steps), "--seed", str(SEED)]
    flags += ["--data_seed", str(SEED), "--logging_steps", "1"]  # the harness's sample order and logging
    flags += ["--learning_rate", str(preset.learning_rate), "--lr_scheduler_type", "constant"]
    flags += ["--system_prompt", "You classify texts.", "--max_prompt_tokens", "512", "--save_strategy", "no"]
    flags += ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0"]
    flags += ["--lora_target_modules", "all-linear"]
    if method == "sft":
        return [*flags, "--per_device_train_batch_size", str(preset.sft_batch_size)]
    flags += ["--per_device_train_batch_size", str(preset.prompts_per_step * preset.num_generations)]
    flags += ["--num_generations", str(preset.num_generations)]
    flags += ["--max_completion_length", str(preset.max_completion_length), "--response_prefix", prefix]
    return [*flags, "--partial_format_reward", "true", "--valid_label_reward", str(preset.valid_label_reward)]


def run_harness(method: str, preset, steps: int, output_dir: str) -> StepTimer:
    """The harness's trainer for `method` (as `convergence.run_one` builds it, without its evaluations)."""
    from convergence import load_split, prompt_setup, training_config
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_gta import GTAPromptTemplate
    from trl_gta.assets import smollm2_path
    from trl_gta.methods import build_trainer, default_lora_config
    from trl_gta.prompts import ensure_pad_token

    train = load_split("hwu64-scenario", None, "train", preset.budget_examples, SEED, preset.max_text_words)
    trainer_method, prompt_format, prefix = prompt_setup(method)
    torch.manual_seed(SEED)
    model_path = smollm2_path()
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(model_path))
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), default_lora_config()
    )
    template = GTAPromptTemplate.for_format(prompt_format, response_prefix=prefix, system_prompt="You classify texts.")
    config = training_config(preset, method, SEED, output_dir)
    config.max_steps, config.save_strategy = steps, "no"
    fair_start = {} if trainer_method == "sft" else {"partial_format_reward": True, "valid_label_reward": True}
    trainer = build_trainer(
        trainer_method, model, tokenizer, train, config, template, max_prompt_tokens=512, **fair_start
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer


def run_cli(method: str, preset, steps: int, output_dir: str, extra: list[str]) -> StepTimer:
    """`trl-gta train` in this process, with a step timer added to the trainer it builds."""
    import trl_gta.methods
    from trl_gta.cli import main

    timer, build_trainer = StepTimer(), trl_gta.methods.build_trainer

    def timed_build_trainer(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(timer)
        return trainer

    trl_gta.methods.build_trainer = timed_build_trainer
    if main([*cli_flags(method, preset, steps, output_dir), *extra]):
        raise SystemExit("trl-gta train failed")
    return timer


def child(args) -> None:
    """One run (`--side`), its step times and tokens printed as the last line (JSON)."""
    from convergence import PRESETS

    torch.set_num_threads(args.threads)  # the harness's setting; the CLI leaves torch's default, the same here
    preset = PRESETS["cpu"]
    with tempfile.TemporaryDirectory() as output_dir:
        if args.side == "harness":
            timer = run_harness(args.methods[0], preset, args.steps, output_dir)
        else:
            timer = run_cli(args.methods[0], preset, args.steps, output_dir, KEEP_FLAGS.get(args.side, []))
    print(json.dumps({"seconds": timer.seconds, "tokens": timer.tokens}))


def measure(method: str, side: str, args) -> dict:
    """One run in a fresh process: its median s/step (the first step left out), step times and tokens per step."""
    command = [sys.executable, __file__, "--side", side, "--methods", method, "--steps", str(args.steps)]
    command += ["--threads", str(args.threads)]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    run = json.loads(result.stdout.strip().splitlines()[-1])
    run["s_per_step"] = statistics.median(run["seconds"][1:])
    steps = ", ".join(f"{s:.1f}" for s in run["seconds"])
    print(f"{method} {side}: {run['s_per_step']:.2f} s/step (steps: {steps}; tokens: {run['tokens']})", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["gta", "sft"], choices=["gta", "grpo", "sft"])
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is left out)")
    parser.add_argument("--cli_keep", nargs="*", default=[], choices=sorted(KEEP_FLAGS))
    parser.add_argument("--threads", type=int, default=2, help="the harness's --threads")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # a child process's run
    parser.add_argument("--output", default=None, help="save the figures as JSON here")
    args = parser.parse_args()
    if args.side is not None:
        child(args)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = {}
    for method in args.methods:
        sides = ["harness", "cli", *args.cli_keep]
        results[method] = {side: measure(method, side, args) for side in sides}
    for method, sides in results.items():
        if sides["cli"]["tokens"] != sides["harness"]["tokens"]:
            print(f"warning: {method}: the CLI trained on other tokens than the harness: unlike work compared")
        for side in args.cli_keep:
            print(f"cli_keep_ratio[{method}/{side}]={sides[side]['s_per_step'] / sides['harness']['s_per_step']:.2f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    for method, sides in results.items():
        print(f"cli_step_ratio[{method}]={sides['cli']['s_per_step'] / sides['harness']['s_per_step']:.2f}")


if __name__ == "__main__":
    main()

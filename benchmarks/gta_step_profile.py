#!/usr/bin/env python
"""Where one GTA step of the quickstart spends its time and memory, part by part.

Runs `trl-gta quickstart` in this process (its own code, a smaller `--max_steps` and `--eval_samples`) with timers on
the trainer's hooks, which cut each training step into consecutive segments:

- `generation`: TRL's sampling of the completions (`_generate_single_turn`, `model.generate`);
- `scoring`: the rest of `_generate_and_score_completions` (decoding, rewards, advantages, the guess-span mask);
- `guess loss`: the supervised guess cross-entropy, forward and backward (`_step_scope_loss` up to the RL loss);
- `RL forward`: TRL's GRPO loss (`_rl_term`);
- `RL backward`: the trainer's backward of the RL loss;
- `optimizer`: from the end of `training_step` to the next one (conflict rule, clipping, optimizer, logging).

Each segment's peak resident memory is exact: the process's high-water mark (VmHWM) is reset when a segment starts
(`/proc/self/clear_refs`, Linux) and read when it ends. The first step is left out of the medians (one-off set-up).

    python benchmarks/gta_step_profile.py --max_steps 4 --eval_samples 8
"""

import argparse
import re
import statistics
import sys
import time
from collections import defaultdict

import torch

from trl_gta.scripts.quickstart import QuickstartArguments, main
from trl_gta.trainer import GTATrainer

GB = 1024**3


def _high_water_mark() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Segments:
    """Consecutive named segments of each step: wall time and peak RSS."""

    def __init__(self) -> None:
        self.steps: list[dict[str, tuple[float, int]]] = []
        self.current: str | None = None
        self.start = 0.0

    def mark(self, name: str | None) -> None:
        """End the current segment and start `name` (None: no segment until the next mark)."""
        now = time.perf_counter()
        if self.current is not None:
            seconds, peak = self.steps[-1].get(self.current, (0.0, 0))
            self.steps[-1][self.current] = (seconds + now - self.start, max(peak, _high_water_mark()))
        if name == "generation" and (not self.steps or "optimizer" in self.steps[-1]):
            self.steps.append({})
        self.current, self.start = name, time.perf_counter()
        _reset_high_water_mark()


def instrument(segments: Segments) -> None:
    """Wrap the trainer's hooks so that each starts or ends a segment."""

    def around(name: str, before: str | None, after: str | None) -> None:
        original = getattr(GTATrainer, name)

        def wrapped(self, *args, **kwargs):
            if before is not None:
                segments.mark(before)
            result = original(self, *args, **kwargs)
            if after is not None:
                segments.mark(after)
            return result

        setattr(GTATrainer, name, wrapped)

    around("_generate_single_turn", "generation", "scoring")
    around("_step_scope_loss", "guess loss", "RL backward")
    around("_rl_term", "RL forward", None)
    around("training_step", None, "optimizer")
    around("train", None, None)  # the last step's optimizer segment ends with training


def main_profile() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--eval_samples", type=int, default=8)
    parser.add_argument("--output_dir", default="outputs/gta-step-profile")
    args = parser.parse_args()
    segments = Segments()
    instrument(segments)
    main(QuickstartArguments(max_steps=args.max_steps, eval_samples=args.eval_samples, output_dir=args.output_dir))
    measured = segments.steps[1:] or segments.steps
    by_part: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for step in measured:
        for part, value in step.items():
            by_part[part].append(value)
    total = statistics.median(sum(s for s, _ in step.values()) for step in measured)
    print(f"GTA step, median of steps 2-{len(segments.steps)} ({torch.get_num_threads()} threads): {total:.2f} s")
    for part, values in by_part.items():
        seconds = statistics.median(s for s, _ in values)
        peak = max(p for _, p in values)
        print(f"step_part[{part}]: {seconds:.2f} s ({100 * seconds / total:.0f}%), peak RSS {peak / GB:.2f} GB")
    sys.stdout.flush()


if __name__ == "__main__":
    main_profile()

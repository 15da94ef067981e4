#!/usr/bin/env python
"""What computing the rows' shared prompt prefix once saves: one RL forward and backward, whole rows against shared.

SmolLM2-135M-Instruct + LoRA (the quickstart's), TRL's fused LM head scoring the last `--completion` tokens as the RL
loss does; every row opens with the same `--prefix` tokens (the instructions and label list of a classification
prompt), then `--suffix` tokens of its own (its text, the reply's opening and the completion). Prints, per number of
rows, the forward and backward seconds (the best of `--repeats`, after one unmeasured call) and
`shared_prefix_speedup[rows]=`.

    python benchmarks/shared_prefix.py --rows 12 6
"""

import argparse
import time

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM
from trl.trainer.utils import add_fused_lm_head

from trl_gta.assets import smollm2_path
from trl_gta.methods import default_lora_config
from trl_gta.shared_prefix import forward_with_shared_prefix


def forward_backward(model, ids: torch.Tensor, labels: torch.Tensor, share: bool) -> tuple[float, float]:
    mask = torch.ones_like(ids)
    start = time.perf_counter()
    if share:
        outputs, _ = forward_with_shared_prefix(model, ids, mask, labels=labels, fused_lm_head=True)
    else:
        outputs = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    middle = time.perf_counter()
    outputs.log_probs.sum().backward()
    return middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[12, 6])
    parser.add_argument("--prefix", type=int, default=90)
    parser.add_argument("--suffix", type=int, default=65)
    parser.add_argument("--completion", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32)
    add_fused_lm_head(base)  # as GRPOTrainer does
    model = get_peft_model(base, default_lora_config())
    prefix = torch.randint(100, 40000, (1, args.prefix))
    print(f"{torch.get_num_threads()} threads; prefix {args.prefix}, suffix {args.suffix} tokens per row")
    for rows in args.rows:
        ids = torch.cat([prefix.expand(rows, -1), torch.randint(100, 40000, (rows, args.suffix))], dim=1)
        labels = ids.clone()
        labels[:, : -args.completion] = -100
        totals = {}
        for share in (False, True):
            forward_backward(model, ids, labels, share)
            times = [forward_backward(model, ids, labels, share) for _ in range(args.repeats)]
            forward, backward = min(t[0] for t in times), min(t[1] for t in times)
            totals[share] = forward + backward
            name = "shared prefix" if share else "whole rows"
            print(f"{rows} rows, {name}: forward {forward:.2f} s, backward {backward:.2f} s")
        print(f"shared_prefix_speedup[{rows}]={totals[False] / totals[True]:.2f}")


if __name__ == "__main__":
    main()

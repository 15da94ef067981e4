#!/usr/bin/env python
"""How often the conflict rule decides differently with the policy gradient alone than with the whole RL loss.

`conflict_signal="rl_loss"` takes the conflict cosine with the gradient of the whole RL loss (policy term + β · KL,
the paper's L_RL read literally); `"policy_gradient"` with the policy term alone. One real run logs both at every
optimizer step: it trains with `"policy_gradient"` (which also logs `gta/rl_loss_cosine` and
`gta/rl_loss_conflict_rate`, what `"rl_loss"` would have decided on the same gradients), so the two decisions are
compared step by step on identical gradients, not across two runs that drift apart.

Setting: the quickstart's model and data (SmolLM2-135M-Instruct, float32, LoRA r=16; hwu64-scenario, prompts opened
with `<guess>`; partial-format and valid-label rewards), after the quickstart's 8-step format warm-up, merged into
the base so that the KL's reference is the model RL starts from. β = 0.01, `loss_type` TRL's default, the paper's
`drop` rule at step scope, 2 prompts x 4 generations per step, completions up to 48 tokens, no gradient
checkpointing (CPU).

    python benchmarks/conflict_signal.py                 # 32 steps
    python benchmarks/conflict_signal.py --max_steps 40
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_gta import GTAConfig, GTAPromptTemplate
from trl_gta.assets import smollm2_path
from trl_gta.methods import build_trainer, default_lora_config
from trl_gta.prompts import ensure_pad_token
from trl_gta.registry import load_classification_dataset
from trl_gta.warmup import format_warmup

KEYS = ("gta/grad_cosine", "gta/conflict_rate", "gta/rl_loss_cosine", "gta/rl_loss_conflict_rate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_steps", type=int, default=32, help="GTA optimizer steps (one decision each)")
    parser.add_argument("--beta", type=float, default=0.01, help="KL coefficient (the paper's 0.01)")
    parser.add_argument("--prompts_per_step", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/conflict_signal.json")
    return parser.parse_args(argv)


def summarise(steps: list[dict]) -> dict:
    """Counts over the steps: conflicts under each signal, and the steps where the two decisions differ."""
    decided = [s for s in steps if s.get("gta/conflict_rate") is not None]
    differ = [s for s in decided if s["gta/conflict_rate"] != s["gta/rl_loss_conflict_rate"]]
    sign_differs = [s for s in decided if (s["gta/grad_cosine"] < 0) != (s["gta/rl_loss_cosine"] < 0)]
    return {
        "steps": len(decided),
        "conflicts_policy_gradient": sum(s["gta/conflict_rate"] for s in decided),
        "conflicts_rl_loss": sum(s["gta/rl_loss_conflict_rate"] for s in decided),
        "decisions_differ": len(differ),
        "decisions_differ_steps": [s["step"] for s in differ],
        "cosine_signs_differ": len(sign_differs),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    path = smollm2_path()
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    template = GTAPromptTemplate(response_prefix="<guess>", system_prompt="You classify texts.")
    train = load_classification_dataset(
        "hwu64-scenario", "train", args.max_steps * args.prompts_per_step + 64, args.seed
    )
    workdir = tempfile.mkdtemp(prefix="gta-conflict-signal-")
    model = get_peft_model(model, default_lora_config())
    format_warmup(model, tokenizer, train, template, os.path.join(workdir, "warmup"), 8)
    model = get_peft_model(model.merge_and_unload(), default_lora_config())  # KL reference: the warmed-up model
    print(f"warm-up done in {time.perf_counter() - started:.0f} s", flush=True)
    config = GTAConfig(
        output_dir=os.path.join(workdir, "gta"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=5e-4,
        lr_scheduler_type="constant",
        beta=args.beta,
        conflict_strategy="drop",
        conflict_scope="step",
        conflict_signal="policy_gradient",
        sft_loss_reduction="token_mean",  # the quickstart's, the scale its learning rate was tuned with
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = build_trainer(
        "gta",
        model,
        tokenizer,
        train,
        config,
        template,
        max_prompt_tokens=256,
        partial_format_reward=True,
        valid_label_reward=True,
    )
    trainer.train()
    wanted = (*KEYS, "reward", "reward_std", "frac_reward_zero_std", "kl", "gta/sft_loss")
    steps = [{"step": e["step"], **{k: e.get(k) for k in wanted}} for e in trainer.state.log_history if KEYS[0] in e]
    summary = summarise(steps)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "args": vars(args),
                "torch": torch.__version__,
                "seconds": round(time.perf_counter() - started),
                "summary": summary,
                "steps": steps,
            },
            indent=1,
        )
    )
    columns = ("reward", "reward_std", "kl", *KEYS)
    print("step " + " ".join(f"{c.removeprefix('gta/'):>22}" for c in columns))
    for s in steps:
        print(f"{s['step']:>4} " + " ".join(f"{s[c] if s[c] is not None else float('nan'):>22.5f}" for c in columns))
    for key, value in summary.items():
        print(f"{key}={value}")
    print(f"written to {output}; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

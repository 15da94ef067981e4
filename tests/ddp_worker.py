"""Two-process CPU DDP run for test_ddp.py: each rank trains on different prompts and saves what it saw.

Usage: ddp_worker.py MODEL_DIR OUT_DIR SCOPE:STRATEGY:SIGNAL [...]. For each run, every rank writes
`rank{r}_{scope}_{strategy}_{signal}.pt`: its recorded steps (micro-batch inputs, trainable parameters before and after
each optimizer step) and the logged cosines and conflict rates. A `policy_gradient` run has β = 0.01 (so that the
policy term differs from the RL loss) and loads the model from MODEL_DIR (TRL reloads the reference from a path).
"""

import os
import sys

import torch
from conftest import CPU_TRAINING, LABELS, TEXTS, length_reward, tiny_model
from datasets import ClassLabel, Dataset, Features, Value
from gradient_reference import record_steps
from transformers import AutoTokenizer

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset

torch.set_num_threads(1)
model_dir, out_dir, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
texts = [t for items in TEXTS.values() for t in items]
labels = [LABELS.index(label) for label, items in TEXTS.items() for _ in items]
raw = Dataset.from_dict(
    {"text": texts, "label": labels}, features=Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
)
for run in runs:
    scope, strategy, signal = run.split(":")
    beta = 0.01 if signal == "policy_gradient" else 0.0
    args = GTAConfig(
        output_dir=out_dir,
        per_device_train_batch_size=4,
        num_generations=4,
        gradient_accumulation_steps=2,
        max_completion_length=8,
        max_steps=2,
        loss_type="grpo",  # its normaliser does not depend on the number of processes, unlike dapo's
        optim="sgd",
        lr_scheduler_type="constant",
        learning_rate=0.5,
        max_grad_norm=0.5,
        sft_weight=3.0,
        conflict_strategy=strategy,
        conflict_scope=scope,
        conflict_signal=signal,
        beta=beta,
        ddp_backend="gloo",
        **CPU_TRAINING,
    )
    trainer = GTATrainer(
        model=model_dir if beta else tiny_model(tokenizer),
        reward_funcs=[length_reward],
        args=args,
        train_dataset=build_gta_dataset(raw),
        processing_class=tokenizer,
    )
    steps = record_steps(trainer)
    trainer.train()
    history = trainer.state.log_history
    result = {
        "world": trainer.accelerator.num_processes,
        "steps": steps,
        "cosines": [e["gta/grad_cosine"] for e in history if "gta/grad_cosine" in e],
        "conflict_rates": [e["gta/conflict_rate"] for e in history if "gta/conflict_rate" in e],
    }
    rank = trainer.accelerator.process_index
    torch.save(result, os.path.join(out_dir, f"rank{rank}_{scope}_{strategy}_{signal}.pt"))

"""Two-process CPU DDP run for test_ddp.py: each rank trains on different prompts, then writes a parameter digest."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import LABELS, TEXTS, tiny_model  # noqa: E402
from datasets import ClassLabel, Dataset, Features, Value  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset  # noqa: E402

torch.set_num_threads(1)
model_dir, out_dir, strategy = sys.argv[1], sys.argv[2], sys.argv[3]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
texts = [t for items in TEXTS.values() for t in items]
labels = [LABELS.index(label) for label, items in TEXTS.items() for _ in items]
raw = Dataset.from_dict(
    {"text": texts, "label": labels}, features=Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
)
args = GTAConfig(
    output_dir=out_dir,
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=8,
    max_steps=2,
    learning_rate=1e-2,
    conflict_strategy=strategy,
    report_to="none",
    bf16=False,
    use_cpu=True,
    ddp_backend="gloo",
    save_strategy="no",
    logging_steps=1,
    seed=0,
)
trainer = GTATrainer(
    model=tiny_model(tokenizer), args=args, train_dataset=build_gta_dataset(raw), processing_class=tokenizer
)
trainer.train()
rank = trainer.accelerator.process_index
params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
digest = {"world": trainer.accelerator.num_processes, "sum": params.sum().item(), "abs": params.abs().sum().item()}
digest["cosines"] = [e["gta/grad_cosine"] for e in trainer.state.log_history if "gta/grad_cosine" in e]
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(digest, f)

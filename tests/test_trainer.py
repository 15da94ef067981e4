import json
import os

import pytest
import torch
from conftest import LABELS, tiny_model
from peft import LoraConfig

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset
from trl_gta.losses import guess_cross_entropy
from trl_gta.trainer import GTA_CONFIG_FILE

GTA_KEYS = ["gta/sft_loss", "gta/grad_cosine", "gta/conflict_rate", "gta/guess_accuracy", "gta/answer_accuracy"]


def make_args(tmp_path, **overrides) -> GTAConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        max_steps=2,
        learning_rate=1e-2,
        report_to="none",
        bf16=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    return GTAConfig(**{**base, **overrides})


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


@pytest.mark.parametrize("strategy", ["drop", "project", "none"])
def test_training_changes_parameters_and_logs_gta_metrics(tmp_path, tokenizer, raw_dataset, strategy):
    model = tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GTATrainer(
        model=model,
        args=make_args(tmp_path, conflict_strategy=strategy),
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed
    for key in [*GTA_KEYS, "gta/format_rate"]:
        values = logged(trainer, key)
        assert values and all(v is not None and v == v for v in values), key
    assert all(-1.0 <= c <= 1.0 for c in logged(trainer, "gta/grad_cosine"))

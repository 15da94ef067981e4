"""Every recipe's trainer settings run a real optimizer step on CPU, on a tiny random model of the recipe's family
(Qwen2, Qwen3, Llama) whose tokenizer carries that family's chat template.

Lengths and sizes are shrunk (model, completion and prompt lengths, one step without learning-rate warm-up, float32
on CPU); everything else runs as written: generations, updates per generation, β, loss type, gradient accumulation,
gradient checkpointing, LoRA. QLoRA recipes run their LoRA without the 4-bit base: bitsandbytes has no CPU path
installed here. Recipes that differ only in their dataset share trainer settings, so one recipe of each (model,
method) group runs, after a check that the group's recipes differ in nothing else.
"""

import glob
import json
import os
from collections import defaultdict

import pytest
import torch
import yaml
from conftest import LABELS, TEXTS, build_tokenizer, tiny_model
from safetensors.torch import load_file

import trl_gta.methods
from trl_gta.cli import main

ROOT = os.path.join(os.path.dirname(__file__), "..", "recipes")
RECIPES = sorted(glob.glob(os.path.join(ROOT, "*", "*", "config_*.yaml")))
FAMILIES = {"Qwen2.5-3B-Instruct": "qwen2", "Qwen3-4B": "qwen3", "Llama-3.2-3B-Instruct": "llama"}
PER_DATASET_KEYS = {"dataset_name", "output_dir", "max_prompt_tokens", "max_length"}  # lengths follow the texts


def _settings(recipe: str) -> dict:
    with open(recipe) as f:
        return {k: v for k, v in yaml.safe_load(f).items() if k not in PER_DATASET_KEYS}


def _groups() -> dict[str, list[str]]:
    groups = defaultdict(list)
    for recipe in RECIPES:
        model, method = recipe.split(os.sep)[-3:-1]
        groups[f"{model}/{method}{'-qlora' if recipe.endswith('_qlora.yaml') else ''}"].append(recipe)
    return groups


GROUPS = _groups()


def _length_parity_reward(completions, **kwargs) -> list[float]:
    return [float(len(str(completion)) % 2) for completion in completions]


def test_recipes_of_a_group_differ_only_in_their_dataset():
    assert len(RECIPES) == 48 and len(GROUPS) == 12
    for name, recipes in GROUPS.items():
        first = _settings(recipes[0])
        assert all(_settings(r) == first for r in recipes[1:]), name


@pytest.fixture
def recipe_data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"text": text, "label": label} for label, texts in TEXTS.items() for text in texts]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]))
    (folder / "labels.txt").write_text("\n".join(LABELS))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_recipe_trainer_settings_run_an_optimizer_step(tmp_path, recipe_data, monkeypatch, group):
    recipe = GROUPS[group][0]
    written = _settings(recipe)
    family = FAMILIES[group.split("/")[0]]
    tokenizer = build_tokenizer(family)
    model_dir = tmp_path / "model"
    model = tiny_model(tokenizer, family)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    out = tmp_path / "out"
    args = ["train", "--config", recipe, "--model_name_or_path", str(model_dir), "--dataset_name", str(recipe_data)]
    args += ["--output_dir", str(out), "--max_steps", "1", "--bf16", "false", "--use_cpu", "true"]
    args += ["--dtype", "float32", "--max_prompt_tokens", "256", "--save_strategy", "no", "--logging_steps", "1"]
    args += ["--warmup_steps", "0"]  # a warm-up ratio of one step would make its learning rate 0
    if written["method"] == "sft":
        args += ["--max_length", "288"]
    else:
        args += ["--max_completion_length", "8"]
    if written.get("load_in_4bit"):
        args += ["--load_in_4bit", "false"]
    # a random model earns no accuracy reward: score completions by length parity instead, so that groups carry an
    # RL signal and the GRPO recipes' policy gradient is not zero
    monkeypatch.setattr(trl_gta.methods, "answer_accuracy_reward", _length_parity_reward)
    torch.manual_seed(0)
    assert main(args) == 0

    if written.get("use_peft"):
        adapter = load_file(out / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero
    else:
        trained = load_file(out / "model.safetensors")
        assert any(not torch.equal(initial[k], v) for k, v in trained.items() if k in initial)
    if written["method"] != "sft":
        saved = json.loads((out / "gta_config.json").read_text())["settings"]
        for key in ("num_generations", "num_iterations", "beta", "loss_type", "sft_weight", "conflict_strategy"):
            assert saved[key] == written.get(key, saved[key]), key
        assert saved["loss_type"] == "grpo" and saved["num_generations"] == 16 and saved["num_iterations"] == 4

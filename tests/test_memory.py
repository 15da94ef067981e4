"""`trl_gta.memory`: the dry run's per-GPU memory estimate of a full fine-tune, and its refusal of a recipe that does
not fit the GPU it names."""

import glob
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM
from trl import ModelConfig

from trl_gta import GTAConfig
from trl_gta.cli import main
from trl_gta.memory import KNOWN_PARAMETERS, gta_gradient_buffers, memory_report, parameter_count

GIB = 1024**3
ROOT = os.path.join(os.path.dirname(__file__), "..", "recipes")
FULL_RECIPES = [r for r in sorted(glob.glob(os.path.join(ROOT, "*", "*", "config_*.yaml"))) if "qlora" not in r]

# the recipes' architectures: the configs the GPU check builds its random-weight models from
MODEL_CONFIGS = json.loads((Path(__file__).parents[1] / "benchmarks" / "model_configs.json").read_text())
ARCHITECTURES = {entry["hub_id"]: AutoConfig.for_model(**entry["config"]) for entry in MODEL_CONFIGS.values()}


def gta_config(tmp_path, **overrides) -> GTAConfig:
    return GTAConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **overrides)


def test_known_parameter_counts_are_the_architectures():
    assert set(KNOWN_PARAMETERS) == set(ARCHITECTURES)
    for name, config in ARCHITECTURES.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert KNOWN_PARAMETERS[name] == sum(p.numel() for p in model.parameters()), name
        assert parameter_count(name) == KNOWN_PARAMETERS[name]
    assert parameter_count("someone/unknown-model") is None


def test_parameter_count_of_a_local_folder_needs_no_weights(model_dir, tokenizer):
    from conftest import tiny_model

    assert parameter_count(model_dir) == sum(p.numel() for p in tiny_model(tokenizer).parameters())


@pytest.mark.parametrize(
    "method,overrides,buffers",
    [
        ("gta", {}, 1),  # step scope: the supervised gradient
        ("gta", {"conflict_scope": "micro_batch"}, 2),  # both micro-batch gradients
        ("gta", {"conflict_signal": "policy_gradient", "beta": 0.01}, 2),  # + the policy term's
        ("gta", {"conflict_signal": "policy_gradient", "beta": 0.0}, 1),  # no KL: the policy term is the RL loss
        ("gta", {"conflict_strategy": "none"}, 0),  # the plain sum
        ("grpo", {}, 0),
    ],
)
def test_gta_gradient_buffers(tmp_path, method, overrides, buffers):
    assert gta_gradient_buffers(method, gta_config(tmp_path, **overrides)) == buffers


def test_report_counts_each_part_and_refuses_what_does_not_fit(tmp_path):
    args = gta_config(tmp_path, beta=0.01)
    model = ModelConfig(model_name_or_path="Qwen/Qwen3-4B", dtype="float32")
    lines, refusal = memory_report("gta", args, model, "MULTI_GPU", 141)
    parameters = KNOWN_PARAMETERS["Qwen/Qwen3-4B"]
    # float32: weights 4 + gradients 4 + AdamW 8 + the step-scope buffer 4 + the reference model 4 bytes a parameter
    total = 24 * parameters / GIB
    assert refusal is None and f"{total:7.1f} GiB" in lines[-2] and f"{141 - total:.1f} GiB" in lines[-1]
    assert any("optimizer states" in line and f"{8 * parameters / GIB:.1f}" in line for line in lines)
    _, refusal = memory_report("gta", args, model, "MULTI_GPU", 80)
    assert refusal.startswith(f"the recipe needs {total:.1f} GiB per GPU") and "\n" not in refusal
    bf16 = ModelConfig(model_name_or_path="Qwen/Qwen3-4B", dtype="bfloat16")
    lines, refusal = memory_report("gta", args, bf16, None, 80)
    assert refusal is None and f"{12 * parameters / GIB:7.1f} GiB" in lines[-2]  # bf16: half of everything
    lora = ModelConfig(model_name_or_path="Qwen/Qwen3-4B", use_peft=True)
    for model_args, distributed in [(lora, None), (model, "DEEPSPEED")]:
        lines, refusal = memory_report("gta", args, model_args, distributed, 1)
        assert refusal is None and lines[0].startswith("memory: not estimated")


@pytest.mark.parametrize("recipe", FULL_RECIPES)
def test_full_finetune_recipes_run_the_per_step_rule_under_ddp_and_fit_their_gpu(recipe):
    """The paper's three models: full fine-tuning under DDP, where the rule runs once per optimizer step (step scope,
    the default) and the dry run finds the training state within the GPU the recipe names."""
    with open(recipe) as f:
        settings = yaml.safe_load(f)
    with open(os.path.join(ROOT, "..", settings["accelerate_config"])) as f:
        assert yaml.safe_load(f)["distributed_type"] == "MULTI_GPU"
    assert settings["gpu_memory_gib"] in (80, 141) and settings["dtype"] == "float32"
    if settings["method"] == "gta":
        assert settings.get("conflict_scope", "step") == "step"


def test_dry_run_prints_the_memory_and_refuses_a_gpu_too_small(capsys):
    recipe = os.path.join(ROOT, "Qwen3-4B", "gta", "config_sst5.yaml")
    assert main(["train", "--config", recipe, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "memory per GPU" in out and "fits 141 GiB" in out and "dry run OK" in out
    assert main(["train", "--config", recipe, "--dry_run", "--gpu_memory_gib", "80"]) == 1
    captured = capsys.readouterr()
    assert "more than its gpu_memory_gib=80" in captured.err and "dry run OK" not in captured.out

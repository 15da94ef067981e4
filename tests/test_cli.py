import glob
import json
import os

import pytest
from conftest import LABELS, tiny_model

from trl_gta.cli import main

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "*", "*", "config_*.yaml")))


def test_every_recipe_passes_dry_run(capsys):
    """In-process, no weights: keys, method, dataset spec, generation divisibility on the intended processes."""
    assert len(RECIPES) == 48
    for recipe in RECIPES:
        assert main(["train", "--config", recipe, "--dry_run"]) == 0, recipe
    assert capsys.readouterr().out.count("dry run OK") == 48


def test_dry_run_errors(tmp_path, capsys):
    recipe = RECIPES[0]
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_name", "nope"]) == 1
    assert "neither a registered name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse checks a flag's choices
        main(["train", "--config", recipe, "--dry_run", "--method", "dpo"])
    assert exit_info.value.code == 2
    recipe_dpo = tmp_path / "dpo.yaml"
    recipe_dpo.write_text(open(recipe).read() + "\nmethod: dpo\n")
    assert main(["train", "--config", str(recipe_dpo), "--dry_run"]) == 1  # a recipe's value is checked too
    assert "unknown method 'dpo'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--dry_run"]) == 1
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_streaming", "true"]) == 1
    assert "not supported" in capsys.readouterr().err
    dry_recipe = tmp_path / "dry.yaml"  # a dry run asked for by the recipe, not by a flag
    dry_recipe.write_text(open(recipe).read() + "\ndry_run: true\n")
    assert main(["train", "--config", str(dry_recipe), "--dataset_name", "nope"]) == 1
    assert "neither a registered name" in capsys.readouterr().err
    gta = next(r for r in RECIPES if "/gta/" in r and "qlora" not in r)
    assert main(["train", "--config", gta, "--dry_run", "--num_generations", "7"]) == 1
    assert "divisible by num_generations" in capsys.readouterr().err


@pytest.fixture
def gta_checkpoint(tmp_path, tokenizer):
    path = tmp_path / "ckpt"
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "gta_config.json").write_text(json.dumps({"labels": LABELS, "prompt_template": {}}))
    return path


@pytest.fixture
def data_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"text": "wake me up", "label": "alarm"}, {"text": "rain today?", "label": "weather"}]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 3))
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "labels.txt").write_text("\n".join(LABELS))
    return folder


@pytest.mark.parametrize("mode", ["answer", "guess", "adaptive"])
def test_eval_writes_results_and_confusion_matrix(tmp_path, gta_checkpoint, data_folder, mode):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(gta_checkpoint), "--dataset", str(data_folder), "--mode", mode]
    assert main([*args, "--max_new_tokens", "4", "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    for key in ("accuracy", "weighted_f1", "macro_f1", "per_class", "guess_to_answer", "examples_per_second", "seed"):
        assert key in results
    assert results["num_examples"] == 6 and results["mode"] == mode and "trl" in results["versions"]
    assert (out / "confusion_matrix.png").stat().st_size > 0


def test_eval_errors_are_one_line(tmp_path, gta_checkpoint, data_folder, capsys):
    assert main(["eval", "--model", str(tmp_path / "none"), "--dataset", str(data_folder)]) == 1
    assert main(["eval", "--model", str(gta_checkpoint), "--dataset", "no-such-dataset"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("trl-gta eval: error:") for line in err)


def test_export_merges_adapter(tmp_path, tokenizer, gta_checkpoint):
    from peft import LoraConfig, get_peft_model

    adapter = get_peft_model(tiny_model(tokenizer), LoraConfig(r=2, target_modules="all-linear"))
    adapter.peft_config["default"].base_model_name_or_path = str(gta_checkpoint)
    adapter.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "gta_config.json").write_text((gta_checkpoint / "gta_config.json").read_text())
    assert main(["export", "--adapter", str(tmp_path / "adapter"), "--output_dir", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "gta_config.json").exists()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert main(["export", "--adapter", str(gta_checkpoint), "--output_dir", str(tmp_path / "x")]) == 1


@pytest.mark.parametrize("method", ["gta", "grpo", "sft"])
def test_train_runs_each_method_in_the_same_harness(tmp_path, model_dir, data_folder, method):
    out = tmp_path / method
    args = ["train", "--method", method, "--model_name_or_path", model_dir, "--dataset_name", str(data_folder)]
    args += ["--output_dir", str(out), "--max_steps", "1", "--report_to", "none", "--use_cpu", "true"]
    args += ["--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--save_strategy", "no"]
    if method != "sft":
        args += ["--num_generations", "2", "--max_completion_length", "6", "--max_eval_samples", "4"]
        args += ["--gradient_checkpointing", "false"]
    assert main(args) == 0
    assert (out / "model.safetensors").exists()
    if method != "sft":
        saved = json.loads((out / "gta_config.json").read_text())
        assert saved["settings"]["sft_weight"] == (1.0 if method == "gta" else 0.0)
        assert saved["max_completion_length"] == 6
        assert saved["prompt_template"]["tags"] == (
            ["guess", "think", "answer"] if method == "gta" else ["think", "answer"]
        )
        assert "after" in json.loads((out / "eval_results.json").read_text())

import csv
import importlib
import os

from conftest import LABELS, tiny_model

from trl_gta import GTAClassifier

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def test_eval_rows_carry_the_runs_training_seed(tmp_path, monkeypatch, tokenizer):
    """The evaluation's own metrics include its sampling seed; the CSV row must keep the run's training seed."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    convergence = importlib.import_module("convergence")
    classifier = GTAClassifier(tiny_model(tokenizer).eval(), tokenizer, LABELS)
    run = {"dataset": "d", "method": "gta", "seed": 7}
    callback = convergence.EvalCallback(run, lambda: classifier, ["wake me up"], ["alarm"], 1, 2, [])
    callback.run_path = str(tmp_path / "convergence.csv")
    callback.record(3)
    with open(callback.run_path) as f:
        (row,) = csv.DictReader(f)
    assert (row["dataset"], row["method"], row["seed"], row["step"], row["examples"]) == ("d", "gta", "7", "3", "6")
    assert convergence.finished_steps(callback.run_path, "d", "gta", 7) == [3]


def test_presets_build_valid_configs_on_one_example_budget(tmp_path, monkeypatch):
    """Every method of both presets gets a config TRL accepts, with the same number of training examples; the paper
    preset carries the paper's GRPO settings (16 generations, 4 updates per generation, KL 0.01, bf16)."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    convergence = importlib.import_module("convergence")
    for name, preset in convergence.PRESETS.items():
        for method in convergence.METHODS:
            per_step, _, _ = convergence.schedule(preset, method)
            config = convergence.training_config(preset, method, 0, str(tmp_path / name / method))
            assert config.max_steps * per_step == preset.budget_examples, (name, method)
            if method != "sft":
                assert config.per_device_train_batch_size == per_step * config.num_generations
                assert (config.sft_weight == 0.0) == (method == "gta_rl")
    paper = convergence.training_config(convergence.PRESETS["paper"], "gta", 0, str(tmp_path / "paper"))
    assert (paper.num_generations, paper.num_iterations, paper.beta, paper.bf16) == (16, 4, 0.01, True)

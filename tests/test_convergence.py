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

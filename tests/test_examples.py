"""`examples/scripts/*.py` run end to end on a tiny model, as a user runs them (their own argv, `__main__`)."""

import json
import os
import runpy
import sys

import pytest
from conftest import LABELS

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "scripts")
TRAINING = ["--max_steps", "1", "--per_device_train_batch_size", "4", "--num_generations", "2"]
TRAINING += ["--max_completion_length", "6", "--learning_rate", "1e-2", "--report_to", "none", "--use_cpu", "true"]
TRAINING += ["--save_strategy", "no", "--gradient_checkpointing", "false"]


def run_example(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(os.path.join(SCRIPTS, name), run_name="__main__")


@pytest.fixture
def intents_csv(tmp_path):
    """A user's CSV: other column names, integer labels."""
    path = tmp_path / "intents.csv"
    rows = ["utterance,intent", "wake me up at seven,0", "will it rain today,1", "play some jazz,2", "set an alarm,0"]
    path.write_text("\n".join(rows) + "\n")
    return path


def dataset_flags(path) -> list[str]:
    return ["--dataset_name", str(path), "--text_column", "utterance", "--label_column", "intent",
            "--dataset_label_names", *LABELS]  # fmt: skip


def test_gta_example_trains_saves_and_evaluates(tmp_path, model_dir, intents_csv, monkeypatch, capsys):
    out = tmp_path / "gta"
    argv = ["--model_name_or_path", model_dir, *dataset_flags(intents_csv), "--output_dir", str(out), *TRAINING]
    run_example("gta.py", [*argv, "--max_eval_samples", "2", "--dataset_test_split", "train"], monkeypatch)
    assert json.loads((out / "gta_config.json").read_text())["labels"] == LABELS
    assert "answer" in capsys.readouterr().out  # the evaluation table


def test_custom_reward_example(tmp_path, model_dir, intents_csv, monkeypatch):
    penalty = runpy.run_path(os.path.join(SCRIPTS, "custom_reward.py"))["make_confusion_penalty"](
        ["alarm", "weather"], 2
    )
    completions = ["<answer>weather</answer>", "<answer>Alarm</answer>", "<answer>music</answer>"]
    assert penalty(completions, label=["alarm", "alarm", "weather"]) == [-2.0, 0.0, 0.0]
    out = tmp_path / "custom"
    argv = ["--model_name_or_path", model_dir, *dataset_flags(intents_csv), "--output_dir", str(out), *TRAINING]
    run_example("custom_reward.py", [*argv, "--confusable", "alarm", "weather"], monkeypatch)
    assert (out / "gta_config.json").exists()


@pytest.mark.parametrize("mode", ["answer", "guess", "adaptive"])
def test_classify_example_labels_a_file(tmp_path, gta_checkpoint, intents_csv, monkeypatch, capsys, mode):
    texts = tmp_path / "texts.txt"
    texts.write_text("wake me up\nplay jazz\nrain?\n")
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(gta_checkpoint), "--input", str(texts), "--output", str(out), "--mode", mode]
    if (
        mode == "adaptive"
    ):  # the threshold picked on a labelled CSV: a dataset by any name load_classification_dataset takes
        argv += ["--calibration_dataset", str(intents_csv), "--calibration_split", "train"]
        argv += ["--calibration_text_column", "utterance", "--calibration_label_column", "intent"]
        argv += ["--calibration_label_names", *LABELS]
    run_example("classify.py", argv, monkeypatch)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3] and all(r["label"] in (*LABELS, None) for r in records)
    assert "3 predictions in" in capsys.readouterr().out

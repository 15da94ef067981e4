import csv
import importlib
import json
import math
from argparse import Namespace

import pytest
import torch
from conftest import LABELS, tiny_model
from datasets import ClassLabel, Dataset, Features, Value
from transformers import Trainer, TrainerControl, TrainerState

from trl_gta import GTAClassifier, GTAPromptTemplate
from trl_gta.dataset import build_gta_dataset


@pytest.fixture
def convergence():
    return importlib.import_module("convergence")


def numbered_dataset(n: int = 12) -> Dataset:
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    return Dataset.from_dict(
        {"text": [f"text number {i}" for i in range(n)], "label": [i % 3 for i in range(n)]}, features
    )


def write_toy_dataset(folder) -> None:
    """A 12-text training split and a 3-text test split in `data_dir` layout, for end-to-end runs on a tiny model."""
    folder.mkdir(parents=True)
    pairs = [(f"{label} words number {i}", label) for i in range(4) for label in LABELS]
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in pairs))
    (folder / "test.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in pairs[:3]))
    (folder / "labels.txt").write_text("\n".join(sorted(LABELS)))


def test_eval_rows_carry_the_runs_training_seed(tmp_path, tokenizer, convergence):
    """The evaluation's own metrics include its sampling seed; the CSV row must keep the run's training seed, and the
    evaluation leaves the training's random state alone."""
    classifier = GTAClassifier(tiny_model(tokenizer).eval(), tokenizer, LABELS)
    run = {"dataset": "d", "method": "gta", "seed": 7, "train_size": 6}
    callback = convergence.EvalCallback(
        run, lambda: classifier, ["wake me up"], ["alarm"], {1}, 2, {}, baseline=lambda examples: examples / 10
    )
    callback.run_path = str(tmp_path / "convergence.csv")
    torch.manual_seed(11)
    state = torch.get_rng_state()
    callback.record(3)
    assert torch.equal(torch.get_rng_state(), state)  # the evaluation does not reseed training's sampling
    callback.record(0)
    with open(callback.run_path) as f:
        row, first = csv.DictReader(f)
    assert (row["dataset"], row["method"], row["seed"], row["step"], row["examples"]) == ("d", "gta", "7", "3", "6")
    assert (row["train_size"], row["tfidf_accuracy"]) == ("6", "0.6")
    assert list(convergence.finished_rows(callback.run_path, "d", "gta", 7, 6)) == [3, 0]
    with pytest.raises(SystemExit, match="another training sample size"):
        convergence.finished_rows(callback.run_path, "d", "gta", 7, 160)


def test_presets_build_valid_configs_on_one_example_budget(tmp_path, convergence):
    """Every method of both presets gets a config TRL accepts, with the same number of training examples (sft_plateau:
    the same sample, for up to its epochs) and the same data order; the paper preset carries the paper's GRPO
    settings (16 generations, 4 updates per generation, KL 0.01, bf16)."""
    for name, preset in convergence.PRESETS.items():
        for method in convergence.METHODS:
            per_step, steps, evaluated = convergence.schedule(preset, method)
            config = convergence.training_config(preset, method, 3, str(tmp_path / name / method))
            epochs = preset.plateau_max_epochs if method == "sft_plateau" else 1
            assert config.max_steps * per_step == preset.budget_examples * epochs, (name, method)
            assert config.data_seed == config.seed == 3 and all(s % config.save_steps == 0 for s in evaluated)
            if method not in ("sft", "sft_plateau"):
                assert config.per_device_train_batch_size == per_step * config.num_generations
                assert (config.sft_weight == 0.0) == (method == "gta_rl")
    paper = convergence.training_config(convergence.PRESETS["paper"], "gta", 0, str(tmp_path / "paper"))
    assert (paper.num_generations, paper.num_iterations, paper.beta, paper.bf16) == (16, 4, 0.01, True)
    cpu = convergence.PRESETS["cpu"]
    assert cpu.budget_examples >= 160 and cpu.warmup_steps > 0 and cpu.valid_label_reward


def test_schedule_of_sft_to_its_ceiling(convergence):
    preset = convergence.Preset(None, 160, 40, 200, 2, 4, 48, 8, 5e-4, 60, True, False, plateau_max_epochs=3)
    assert convergence.schedule(preset, "sft") == (8, 20, {5, 10, 15, 20})
    assert convergence.schedule(preset, "sft_plateau") == (8, 60, {5, 10, 15, 20, 40, 60})
    assert convergence.schedule(preset, "gta") == (2, 80, {20, 40, 60, 80})


def test_plateau_counts_epoch_ends_without_a_new_best(convergence):
    within_epoch = {5: 0.9, 10: 0.1}  # only epoch ends (multiples of 20 steps) count
    assert not convergence.plateaued({0: 0.0, 20: 0.3, 40: 0.35, 60: 0.34, **within_epoch}, 20, 2)
    assert convergence.plateaued({0: 0.0, 20: 0.3, 40: 0.35, 60: 0.34, 80: 0.35}, 20, 2)  # a tie is no rise
    assert not convergence.plateaued({20: 0.3, 40: 0.2, 60: 0.4, 80: 0.39}, 20, 2)
    preset = convergence.Preset(None, 160, 40, 200, 2, 4, 48, 8, 5e-4, 60, True, False, plateau_patience=1)
    assert convergence.run_complete(preset, "sft_plateau", {20: 0.3, 40: 0.3})
    assert not convergence.run_complete(preset, "sft_plateau", {20: 0.3})
    assert convergence.run_complete(preset, "sft", {20: 0.3}) and not convergence.run_complete(
        preset, "sft", {10: 0.3}
    )


def test_eval_callback_stops_on_plateau_and_continues_the_wall_clock(tmp_path, tokenizer, convergence):
    classifier = GTAClassifier(tiny_model(tokenizer).eval(), tokenizer, LABELS)
    done = {0: {"accuracy": "0.0", "train_seconds": "0"}, 2: {"accuracy": "0.5", "train_seconds": "12.5"}}
    callback = convergence.EvalCallback(
        {"dataset": "d", "method": "sft_plateau", "seed": 0, "train_size": 4},
        lambda: classifier,
        ["wake me up"],
        ["alarm"],
        {2, 4},
        2,
        done,
        stop=lambda accuracies: convergence.plateaued(accuracies, 2, 1),
    )
    callback.run_path = str(tmp_path / "c.csv")
    state, control = TrainerState(global_step=2, max_steps=8), TrainerControl()
    callback.on_train_begin(None, state, control)
    assert callback.train_seconds == 12.5
    callback.on_step_begin(None, state, control)
    state.global_step = 4
    callback.on_step_end(None, state, control)  # the tiny model's accuracy (0 or 1) at step 4 is no rise over 0.5..
    assert 4 in callback.accuracies and callback.train_seconds > 12.5
    assert control.should_training_stop == (callback.accuracies[4] <= 0.5)  # ..unless it answers right


def test_seen_order_is_the_order_both_trainers_consume(tmp_path, tokenizer, convergence):
    """The sampler order of the SFT trainer (with `data_seed`) and of the GTA trainer is `seen_order` of the run's
    seed, even after the step-0 evaluation reseeded the global RNG; without `data_seed` (legacy rows) SFT took the
    order of that reseeding instead."""
    from trl_gta.methods import build_trainer

    raw, preset, seed = numbered_dataset(), convergence.PRESETS["cpu"], 3

    def consumed(method: str, config, template: GTAPromptTemplate) -> list[int]:
        trainer = build_trainer(method, tiny_model(tokenizer), tokenizer, raw, config, template)
        prompts = [str(p) for p in build_gta_dataset(raw, template=template)["prompt"]]
        order, collate = [], trainer.data_collator

        def record(batch):
            order.extend(prompts.index(str(row["prompt"])) for row in batch)
            return collate(batch)

        trainer.data_collator = record
        torch.manual_seed(0)  # what evaluate_classifier does at step 0, before training
        for _ in trainer.get_train_dataloader():
            pass
        return list(dict.fromkeys(order))  # RL rows repeat each prompt num_generations times

    sft = convergence.training_config(preset, "sft", seed, str(tmp_path / "sft"))
    sft.per_device_train_batch_size = 4
    gta = convergence.training_config(preset, "gta", seed, str(tmp_path / "gta"))
    assert consumed("sft", sft, GTAPromptTemplate.for_format("answer")) == convergence.seen_order(len(raw), seed)
    assert consumed("gta", gta, GTAPromptTemplate()) == convergence.seen_order(len(raw), seed)
    sft.data_seed = None
    legacy = convergence.LEGACY_SFT_SAMPLER_SEED
    assert consumed("sft", sft, GTAPromptTemplate.for_format("answer")) == convergence.seen_order(len(raw), legacy)


def test_tfidf_baseline_trains_on_the_texts_seen(convergence):
    train_texts = ["wake me at six", "set an alarm", "rain in paris", "sunny and hot", "play jazz", "next song"]
    train_labels = ["alarm", "alarm", "weather", "weather", "music", "music"]
    test_texts, test_labels = ["an alarm at six", "is it hot in paris", "play the next song"], LABELS
    assert convergence.tfidf_accuracy(train_texts, train_labels, test_texts, test_labels) == 1.0
    assert convergence.tfidf_accuracy(train_texts[:2], train_labels[:2], test_texts, test_labels) == 1 / 3
    assert math.isnan(convergence.tfidf_accuracy([], [], test_texts, test_labels))
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    train = Dataset.from_dict({"text": train_texts, "label": [LABELS.index(x) for x in train_labels]}, features)
    test = Dataset.from_dict({"text": test_texts, "label": [0, 1, 2]}, features)
    baseline = convergence.TfidfBaseline(train, test, sampler_seed=5)
    order = convergence.seen_order(6, 5)
    for examples in (1, 3, 6, 60):  # later epochs repeat texts already seen
        seen = order[: min(examples, 6)]
        expected = convergence.tfidf_accuracy(
            [train_texts[i] for i in seen], [train_labels[i] for i in seen], test_texts, test_labels
        )
        assert baseline(examples) == expected


def test_add_baselines_fills_legacy_rows_and_upgrades_the_header(tmp_path, convergence):
    """Rows written before the baseline existed get TF-IDF+LR on the texts their run had seen (legacy SFT in the
    order of seed 0) and their sample size, under today's header; rows that have one are left alone."""
    folder = tmp_path / "data" / "toy"
    folder.mkdir(parents=True)
    pairs = [(f"{label} words number {i}", label) for i in range(10) for label in LABELS]
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in pairs))
    (folder / "test.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in pairs[:9]))
    (folder / "labels.txt").write_text("\n".join(sorted(LABELS)))
    path = tmp_path / "convergence.csv"
    legacy = [name for name in convergence.FIELDS if name not in ("train_size", "tfidf_accuracy")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(legacy)
        for method in ("sft", "gta"):
            for step, examples in ((0, 0), (1, 4), (2, 8)):
                writer.writerow(["toy", method, 1, step, examples, 1.0, 0.5, 0.5, 1.0, "", 8])
    convergence.upgrade_csv(str(path))
    args = Namespace(output=str(path), dataset="toy", data_dir=str(tmp_path / "data"))
    preset = convergence.Preset(None, 8, 4, 9, 2, 4, 48, 8, 5e-4, None, True, False)
    assert convergence.add_baselines(args, preset) == 6
    rows = convergence.read_csv(str(path))
    assert list(rows[0]) == convergence.FIELDS and all(r["train_size"] == "8" for r in rows)
    train = convergence.load_split("toy", args.data_dir, "train", 8, 1, None)
    test = convergence.load_split("toy", args.data_dir, "test", 9, convergence.EVAL_SEED, None)
    for row in rows:
        sampler_seed = convergence.LEGACY_SFT_SAMPLER_SEED if row["method"] == "sft" else 1
        expected = convergence.TfidfBaseline(train, test, sampler_seed)(int(row["examples"]))
        assert row["tfidf_accuracy"] == ("" if math.isnan(expected) else str(expected))
    assert convergence.add_baselines(args, preset) == 2  # only the rows at 0 examples (no baseline) again


def test_runs_record_each_evaluation_once_and_sft_stops_at_its_plateau(tmp_path, model_dir, convergence, capsys):
    """End to end on a tiny model: an RL run warms up (fair start v2), trains and writes its rows with the TF-IDF+LR
    baseline; run again it is skipped as complete. sft_plateau stops once an epoch end brings no new best."""
    write_toy_dataset(tmp_path / "data" / "toy")
    preset = convergence.Preset(
        None, 4, 2, 3, 2, 2, 4, 2, 1e-2, None, True, False, warmup_steps=1, plateau_max_epochs=4, plateau_patience=1
    )
    output = tmp_path / "convergence.csv"
    args = Namespace(
        dataset="toy",
        data_dir=str(tmp_path / "data"),
        output=str(output),
        runs_dir=str(tmp_path / "runs"),
        warmup_steps=1,
        warmup_labels="random",
    )
    convergence.run_one(args, preset, "grpo", 0, model_dir)
    assert (tmp_path / "runs" / "toy-grpo-n4-seed0" / "format_warmup").is_dir()
    rows = convergence.read_csv(str(output))
    assert [(r["step"], r["examples"], r["train_size"]) for r in rows] == [
        ("0", "0", "4"),
        ("1", "2", "4"),
        ("2", "4", "4"),
    ]
    assert rows[0]["tfidf_accuracy"] == "" and all(0 <= float(r["tfidf_accuracy"]) <= 1 for r in rows[1:])
    convergence.run_one(args, preset, "grpo", 0, model_dir)
    assert "already complete" in capsys.readouterr().out and len(convergence.read_csv(str(output))) == 3

    convergence.run_one(args, preset, "sft_plateau", 0, model_dir)
    plateau = {
        int(r["step"]): float(r["accuracy"]) for r in convergence.read_csv(str(output)) if r["method"] == "sft_plateau"
    }
    assert 2 in plateau and max(plateau) <= 8 and convergence.plateaued(plateau, 2, 1) == (max(plateau) < 8)
    assert convergence.run_complete(preset, "sft_plateau", plateau)


def test_sft_plateau_stopped_at_its_cap_resumes_when_the_cap_is_raised(
    tmp_path, model_dir, convergence, capsys, monkeypatch
):
    """A run that hit `plateau_max_epochs` while still rising continues from its checkpoint under a higher cap: new
    epoch ends are appended, nothing is measured twice and the wall-clock goes on from where it stopped."""
    write_toy_dataset(tmp_path / "data" / "toy")
    preset = convergence.Preset(
        None, 4, 2, 3, 2, 2, 4, 2, 1e-2, None, True, False, plateau_max_epochs=1, plateau_patience=10
    )
    output = tmp_path / "convergence.csv"
    args = Namespace(
        dataset="toy", data_dir=str(tmp_path / "data"), output=str(output), runs_dir=str(tmp_path / "runs")
    )
    convergence.run_one(args, preset, "sft_plateau", 0, model_dir)
    convergence.run_one(args, preset, "sft_plateau", 0, model_dir)
    assert "already complete" in capsys.readouterr().out
    preset.plateau_max_epochs = 3
    resumed_from, train = [], Trainer.train
    monkeypatch.setattr(
        Trainer, "train", lambda self, **kw: resumed_from.append(kw["resume_from_checkpoint"]) or train(self, **kw)
    )
    convergence.run_one(args, preset, "sft_plateau", 0, model_dir)
    assert resumed_from == [str(tmp_path / "runs" / "toy-sft_plateau-n4-seed0" / "checkpoint-2")]
    rows = convergence.read_csv(str(output))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 4, 6]
    seconds = [float(r["train_seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[3] > seconds[2]
    assert convergence.run_complete(preset, "sft_plateau", {int(r["step"]): float(r["accuracy"]) for r in rows})

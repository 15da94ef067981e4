import csv
import glob
import importlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import LABELS, tiny_model

from trl_gta.classifier import GTAClassifier
from trl_gta.cli import main
from trl_gta.scripts import COMMANDS

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "*", "*", "config_*.yaml")))


def test_every_recipe_passes_dry_run(capsys):
    """In-process, no weights: keys, method, dataset spec, generation divisibility on the intended processes."""
    assert len(RECIPES) == 48
    for recipe in RECIPES:
        assert main(["train", "--config", recipe, "--dry_run"]) == 0, recipe
    assert capsys.readouterr().out.count("dry run OK") == 48


def test_dry_run_errors(tmp_path, capsys):
    recipe = RECIPES[0]
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_name", "./nope"]) == 1
    assert "no such local file or folder" in capsys.readouterr().err
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_name", "someone/their-data"]) == 0
    assert "'someone/their-data' is a Hub id: not checked offline" in capsys.readouterr().out
    reviews = tmp_path / "reviews.csv"  # a local dataset is read: its columns are checked
    reviews.write_text("review,rating\ngood,1\n")
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_name", str(reviews)]) == 1
    assert "has no text column 'text' (its columns: review, rating); name it" in capsys.readouterr().err
    flags = ["--text_column", "review", "--label_column", "rating", "--dataset_label_names", "bad", "good"]
    assert main(["train", "--config", recipe, "--dry_run", "--dataset_name", str(reviews), *flags]) == 0
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
    assert main(["train", "--config", str(dry_recipe), "--dataset_name", "/nope"]) == 1
    assert "no such local file or folder" in capsys.readouterr().err
    gta = next(r for r in RECIPES if "/gta/" in r and "qlora" not in r)
    assert main(["train", "--config", gta, "--dry_run", "--num_generations", "7"]) == 1
    assert "divisible by num_generations" in capsys.readouterr().err


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
def test_eval_writes_results_and_confusion_matrix(tmp_path, gta_checkpoint, data_folder, mode, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(gta_checkpoint), "--dataset", str(data_folder), "--mode", mode]
    assert main([*args, "--max_new_tokens", "4", "--output_dir", str(out)]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["mode"] == mode and "trl" in results["versions"]
    decodings = [None] if mode == "guess" else ["free", "labels"]  # free first: the paper's reading
    names = [mode if decoding is None else f"{mode} ({decoding})" for decoding in decodings]
    assert list(results["runs"]) == names
    for name, decoding in zip(names, decodings, strict=True):
        metrics = results["runs"][name]
        for key in ("accuracy", "weighted_f1", "macro_f1", "per_class", "guess_to_answer", "examples_per_second"):
            assert key in metrics
        assert metrics["num_examples"] == 6 and metrics["mode"] == mode and metrics["answer_decoding"] == decoding
        png = "confusion_matrix.png" if decoding is None else f"confusion_matrix_{decoding}.png"
        assert (out / png).stat().st_size > 0
    if mode != "guess":
        assert results["runs"][names[1]]["no_label_rate"] == 0  # labels decoding: a label for every text
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == [part for name in names for part in name.split()]  # a column each


def test_eval_on_a_csv_file_with_other_columns_and_integer_labels(tmp_path, gta_checkpoint):
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("utterance,intent\nwake me up,0\nrain today?,1\nplay jazz,2\n")
    args = ["eval", "--model", str(gta_checkpoint), "--dataset", str(reviews), "--split", "train", "--mode", "guess"]
    args += ["--text_column", "utterance", "--label_column", "intent", "--dataset_label_names", *LABELS]
    assert main([*args, "--output_dir", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["runs"]["guess"]["num_examples"] == 3 and results["dataset"] == str(reviews)


def test_eval_errors_are_one_line(tmp_path, gta_checkpoint, data_folder, capsys):
    assert main(["eval", "--model", str(tmp_path / "none"), "--dataset", str(data_folder)]) == 1
    assert main(["eval", "--model", str(gta_checkpoint), "--dataset", "./no-such-dataset"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("trl-gta eval: error:") for line in err)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_folder_without_metadata_is_refused_saying_how_to_give_its_format(
    tmp_path, gta_checkpoint, data_folder, capsys, command
):
    (gta_checkpoint / "gta_config.json").unlink()
    source = tmp_path / "texts.txt"
    source.write_text("wake me up\n")
    args = (
        ["--dataset", str(data_folder)]
        if command == "eval"
        else ["--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    )
    assert main([command, "--model", str(gta_checkpoint), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no gta_config.json, so its reply format is unknown" in err[0]
    assert 'GTAPromptTemplate.for_format("gta", "think_answer" or "answer")' in err[0]
    assert not (tmp_path / "o.jsonl").exists() and not (gta_checkpoint / "eval_results.json").exists()


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
def test_train_runs_each_method_in_the_same_harness(tmp_path, model_dir, data_folder, method, tokenizer):
    out = tmp_path / method
    args = ["train", "--method", method, "--model_name_or_path", model_dir, "--dataset_name", str(data_folder)]
    args += ["--output_dir", str(out), "--max_steps", "1", "--report_to", "none", "--use_cpu", "true"]
    args += ["--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--save_strategy", "no"]
    args += ["--max_eval_samples", "4"]
    if method != "sft":
        args += ["--num_generations", "2", "--max_completion_length", "6", "--gradient_checkpointing", "false"]
    assert main(args) == 0
    assert (out / "model.safetensors").exists()
    # every method's checkpoint says how it was trained: the classifier asks its question and reads its format
    saved = json.loads((out / "gta_config.json").read_text())
    tags = {"gta": ["guess", "think", "answer"], "grpo": ["think", "answer"], "sft": ["answer"]}[method]
    assert saved["settings"]["method"] == method and saved["prompt_template"]["tags"] == tags
    assert saved["labels"] == LABELS
    if method == "sft":  # the reply budget fits the longest answer and its end of sequence
        assert saved["max_completion_length"] == 1 + max(
            len(tokenizer(f"<answer>{label}</answer>", add_special_tokens=False)["input_ids"]) for label in LABELS
        )
    else:
        assert saved["settings"]["sft_weight"] == (1.0 if method == "gta" else 0.0)
        assert saved["max_completion_length"] == 6
    classifier = GTAClassifier.from_pretrained(str(out))
    assert list(classifier.template.tags) == tags and classifier.max_new_tokens == saved["max_completion_length"]
    after = json.loads((out / "eval_results.json").read_text())["after"]  # evaluated after training, every method
    assert [after[d]["answer_decoding"] for d in ("free", "labels")] == ["free", "labels"]
    assert after["labels"]["no_label_rate"] == 0
    assert "| test / answer (labels) | labels | accuracy |" in (out / "README.md").read_text()


def test_help_lists_every_command_without_importing_torch_or_trl():
    code = (
        "import sys\nfrom trl_gta.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'trl' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("False False")
    assert all(command in result.stdout for command in COMMANDS)


CONFIG_CASES = {  # command -> (YAML values, flags, expected (dataclass index, field, value) after parsing)
    "train": (
        {"dataset_name": "from-yaml", "learning_rate": 0.5, "output_dir": "out", "use_cpu": True, "bf16": False},
        ["--learning_rate", "0.25"],
        [(0, "dataset_name", "from-yaml"), (1, "learning_rate", 0.25)],
    ),
    "eval": ({"model": "m", "dataset": "d", "mode": "guess"}, ["--mode", "adaptive"], [(0, "dataset", "d")]),
    "predict": (
        {"model": "m", "input": "in.txt", "output": "out.jsonl", "top_k": 3},
        ["--top_k", "2"],
        [(0, "input", "in.txt"), (0, "top_k", 2)],
    ),
    "export": (
        {"adapter": "a", "output_dir": "o"},
        ["--output_dir", "p"],
        [(0, "adapter", "a"), (0, "output_dir", "p")],
    ),
    "quickstart": (
        {"max_steps": 3, "seed": 4, "format_warmup_labels": "masked"},
        ["--seed", "5", "--valid_label_reward", "false"],
        [(0, "max_steps", 3), (0, "seed", 5), (0, "format_warmup_labels", "masked"), (0, "valid_label_reward", False)],
    ),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_a_config_file_and_flag_overrides(tmp_path, command):
    values, flags, expected = CONFIG_CASES[command]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(values))
    module = importlib.import_module(f"trl_gta.scripts.{command}")
    parsed = module.make_parser(prog=f"trl-gta {command}").parse_args_and_config(["--config", str(config), *flags])
    for index, name, value in expected:
        assert getattr(parsed[index], name) == value
    if command == "eval":
        assert parsed[0].mode == "adaptive"  # the flag over the file


def write_texts(path, texts, input_format):
    if input_format == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    elif input_format == "csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows(enumerate(texts))
    else:
        path.write_text("\n".join(texts) + "\n")


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "txt"])
def test_predict_writes_one_line_per_text(tmp_path, gta_checkpoint, input_format):
    texts = ["wake me up at seven", "will it rain, today?", 'play "jazz"']
    source = tmp_path / f"texts.{input_format}"
    write_texts(source, texts, input_format)
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(gta_checkpoint), "--input", str(source), "--output", str(out)]
    assert main([*args, "--mode", "guess", "--top_k", "2"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == (
        [2, 3, 4] if input_format == "csv" else [1, 2, 3]
    )  # a CSV's header is line 1
    assert len(records) == 3 and all(r["label"] in LABELS and r["label"] == r["guess"] for r in records)
    for record in records:
        probs = list(record["guess_probs"].values())
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert (record["think"], record["answer"], record["generated_tokens"], record["text_truncated"]) == (
            None,
            None,
            0,
            False,
        )
    assert main([*args, "--mode", "answer", "--max_new_tokens", "3", "--overwrite"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["guess_probs"] is None and 1 <= r["generated_tokens"] <= 3 for r in records)
    # labels decoding by default: every text gets a label of the set, with the answer's probabilities
    assert all(
        r["label"] in LABELS and r["label"] == max(r["answer_probs"], key=r["answer_probs"].get) for r in records
    )
    assert main([*args, "--mode", "answer", "--max_new_tokens", "3", "--answer_decoding", "free", "--overwrite"]) == 0
    assert all(json.loads(line)["answer_probs"] is None for line in out.read_text().splitlines())


def test_predict_stops_at_a_bad_row_or_skips_and_reports_it(tmp_path, gta_checkpoint, capsys):
    source = tmp_path / "texts.jsonl"
    source.write_text(
        '{"text": "wake me up"}\n{"text": "play jazz"}\n{"text": "  "}\n{"body": "x"}\n{"text": "rain?"}\n'
    )
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(gta_checkpoint), "--input", str(source), "--output", str(out), "--mode", "guess"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3: empty text" in err[0] and "--skip_bad_rows" in err[0]
    assert not out.exists()  # stopped before any work
    assert main([*args, "--skip_bad_rows"]) == 0
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1, 2, 5]
    assert "skipped 2 bad rows: line 3: empty text; line 4: no field 'text'" in capsys.readouterr().out


def test_predict_refuses_to_continue_another_runs_output(tmp_path, gta_checkpoint, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("wake me up\nplay jazz\n")
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", str(gta_checkpoint), "--input", str(source), "--output", str(out)]
    assert main([*args, "--mode", "guess"]) == 0
    first = out.read_bytes()
    assert main([*args, "--mode", "guess"]) == 0 and out.read_bytes() == first  # complete: nothing to do
    assert "kept from an earlier run" in capsys.readouterr().out
    moved = tmp_path / "moved.txt"  # the same content elsewhere: the same run
    moved.write_bytes(source.read_bytes())
    assert main([*args[:4], str(moved), *args[5:], "--mode", "guess"]) == 0
    assert "kept from an earlier run" in capsys.readouterr().out
    assert main([*args, "--mode", "adaptive"]) == 1
    assert "mode differ" in capsys.readouterr().err
    source.write_text("wake me up\nplay some jazz\n")
    assert main([*args, "--mode", "guess"]) == 1
    assert "input_sha256 differ" in capsys.readouterr().err
    assert main([*args, "--mode", "guess", "--overwrite"]) == 0
    missing_model = ["predict", "--model", str(tmp_path / "none"), "--input", str(source)]
    capsys.readouterr()
    assert main([*missing_model, "--output", str(tmp_path / "new.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("trl-gta predict: error: Could not load a model: folder")
    assert not (tmp_path / "new.jsonl").exists()
    (tmp_path / "other.jsonl").write_text("not ours\n")
    assert main([*args[:-1], str(tmp_path / "other.jsonl"), "--mode", "guess"]) == 1
    assert "not written by predict" in capsys.readouterr().err


SLOW_PREDICT = """import sys, time
from trl_gta.classifier import GTAClassifier
predict = GTAClassifier.predict
def slow(self, *args, **kwargs):
    time.sleep(0.4)
    return predict(self, *args, **kwargs)
GTAClassifier.predict = slow
from trl_gta.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_predict_resumes_after_ctrl_c_or_a_kill_byte_for_byte(tmp_path, gta_checkpoint, monkeypatch):
    texts = [f"text {i} " + "wake me up " * (i % 4) for i in range(24)]
    source = tmp_path / "texts.txt"
    write_texts(source, texts, "txt")
    args = ["predict", "--model", str(gta_checkpoint), "--input", str(source), "--max_new_tokens", "6"]
    args += ["--chunk_size", "2", "--batch_size", "2"]
    whole = tmp_path / "whole.jsonl"
    assert main([*args, "--output", str(whole)]) == 0
    assert len(whole.read_text().splitlines()) == 24

    # Ctrl-C during the third chunk: exit 130, the two chunks before it kept; a rerun finishes the file
    calls = []
    original = GTAClassifier.predict

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    interrupted_out = tmp_path / "interrupted.jsonl"
    monkeypatch.setattr(GTAClassifier, "predict", interrupted)
    assert main([*args, "--output", str(interrupted_out)]) == 130
    assert interrupted_out.read_bytes() == b"".join(whole.read_bytes().splitlines(keepends=True)[:4])
    monkeypatch.setattr(GTAClassifier, "predict", original)
    assert main([*args, "--output", str(interrupted_out)]) == 0
    assert interrupted_out.read_bytes() == whole.read_bytes()

    # killed (SIGKILL) in another process, one torch thread as here
    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREDICT, *args, "--output", str(killed)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if killed.exists() and killed.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    data = killed.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    assert 3 <= complete.count(b"\n") < 24, "the run was not killed midway"
    # what a kill can leave besides whole chunks: a line of an unfinished chunk, and a cut line
    orphan = b'{"line": 999}\n' if complete.count(b"\n") % 2 == 0 else b""
    killed.write_bytes(complete + orphan + b'{"line": 1000, "lab')
    assert main([*args, "--output", str(killed)]) == 0
    assert killed.read_bytes() == whole.read_bytes()


def test_train_reports_bad_input_in_one_line(tmp_path, model_dir, data_folder, capsys):
    """A prompt limit below the instructions' length fails before training, as one line with exit status 1."""
    args = ["train", "--model_name_or_path", model_dir, "--dataset_name", str(data_folder), "--use_cpu", "true"]
    args += ["--output_dir", str(tmp_path / "out"), "--max_prompt_tokens", "8", "--report_to", "none"]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "trl-gta train: error: The instructions and label list alone take" in error
    assert "Traceback" not in error and not (tmp_path / "out" / "model.safetensors").exists()


def test_cpu_defaults_turn_off_what_the_user_left_unset(tmp_path):
    """On a machine without a GPU, TRL's bf16 and activation checkpointing defaults are turned off unless set."""
    from trl_gta.scripts.cpu import cpu_default_flags, notice

    off = ["--bf16", "false", "--activation_checkpointing", "false"]
    assert cpu_default_flags(["--method", "gta"]) == off
    assert cpu_default_flags(["--bf16", "true", "--gradient-checkpointing=true"]) == []
    assert cpu_default_flags(["--fp16", "true"]) == off[2:]  # the precision is the user's
    assert cpu_default_flags(["--no_activation_checkpointing"]) == off[:2]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("bf16: true\ngradient_checkpointing: true\n")
    assert cpu_default_flags(["--config", str(recipe)]) == []
    assert cpu_default_flags([f"--config={recipe}"]) == []
    assert notice(off) == (
        "no GPU: bf16 and activation_checkpointing off (TRL's GPU defaults, slow on a CPU); "
        "`--bf16 true --use_cpu true --activation_checkpointing true` keeps them"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU defaults apply on a machine without a GPU")
def test_train_on_a_cpu_says_which_gpu_defaults_it_turned_off(tmp_path, model_dir, data_folder, capsys, monkeypatch):
    import trl_gta.methods

    seen = {}
    build_trainer = trl_gta.methods.build_trainer

    def recording_build_trainer(method, model, tokenizer, train, args, *rest, **kwargs):
        seen[method] = (args.bf16, args.activation_checkpointing)
        return build_trainer(method, model, tokenizer, train, args, *rest, **kwargs)

    monkeypatch.setattr(trl_gta.methods, "build_trainer", recording_build_trainer)
    args = ["train", "--method", "sft", "--model_name_or_path", model_dir, "--dataset_name", str(data_folder)]
    args += ["--output_dir", str(tmp_path / "sft"), "--max_steps", "1", "--per_device_train_batch_size", "2"]
    assert main([*args, "--save_strategy", "no"]) == 0
    assert seen["sft"] == (False, False)
    assert "no GPU: bf16 and activation_checkpointing off" in capsys.readouterr().err
    assert main([*args, "--save_strategy", "no", "--activation_checkpointing", "true"]) == 0
    assert seen["sft"] == (False, True)
    assert "no GPU: bf16 off" in capsys.readouterr().err


def test_train_seeds_the_adapter_init(tmp_path, model_dir, data_folder, monkeypatch):
    """`--seed` fixes the LoRA adapter's random init (TRL seeds before adding it): runs are reproducible, which
    `benchmarks/cli_speed.py` relies on to compare the CLI with the harness token for token."""
    import trl_gta.methods

    inits = []
    build_trainer = trl_gta.methods.build_trainer

    def recording_build_trainer(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        inits.append({k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_A" in k})
        return trainer

    monkeypatch.setattr(trl_gta.methods, "build_trainer", recording_build_trainer)
    args = ["train", "--method", "sft", "--model_name_or_path", model_dir, "--dataset_name", str(data_folder)]
    args += ["--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no", "--use_peft", "true"]
    for seed in ("7", "7", "8"):
        assert main([*args, "--output_dir", str(tmp_path / seed), "--seed", seed]) == 0
    assert inits[0] and inits[0].keys() == inits[1].keys()
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
    assert not all(torch.equal(inits[0][k], inits[2][k]) for k in inits[0])

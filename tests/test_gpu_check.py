"""benchmarks/gpu_check.py on CPU (`--device cpu --tiny`): the code the GPU run takes, on tiny models of both
architectures, run as the command it is; a stop keeps what was measured; the architectures are the released ones."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gpu_check
import pytest
import torch
from conftest import build_tokenizer
from overhead import MODEL_CONFIGS
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture
def start_check(tmp_path, tokenizer_dir):
    """`start_check(*options)`: the command as documented, on CPU with tiny models, writing into tmp_path; the
    process is killed at the test's end if it is still running."""
    started: list[subprocess.Popen] = []

    def start(*options: str) -> subprocess.Popen:
        command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny"]
        command += ["--out", str(tmp_path), "--tokenizer", tokenizer_dir, "--steps", "1", "--threads", "1", *options]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_model_configs_are_the_released_architectures():
    known = json.loads(MODEL_CONFIGS.read_text())
    # the parameter counts the model cards state
    billions = {"qwen2.5-3b-instruct": 3.09, "qwen3-4b": 4.02, "llama-3.2-3b-instruct": 3.21}
    for name, entry in known.items():
        config = gpu_check.architecture_config(name)
        fields = type(config)().to_dict()
        assert set(entry["config"]) <= set(fields), f"{name}: not {type(config).__name__} fields"
        with torch.device("meta"):
            count = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        assert round(count / 1e9, 2) == billions[name]
        assert config.tie_word_embeddings and config.vocab_size == (128256 if "llama" in name else 151936)
    assert AutoConfig.for_model(**known["qwen3-4b"]["config"]).head_dim == 128


def test_budget_skips_a_case_the_time_left_cannot_hold():
    budget = gpu_check.Budget(20.0)
    assert budget.shortfall("training", 10**9) is None  # nothing measured yet: the first case always starts
    budget.record("training", 10.0, 10**9)
    assert budget.shortfall("training", 10**9) is None  # 13 s needed, about 20 s left
    assert budget.shortfall("training", 2 * 10**9).startswith("not started")  # a model twice as large: 26 s
    assert budget.shortfall("classifier", 2 * 10**9) is None  # another kind of case has its own record


def test_tiny_run_measures_every_case_and_prints_the_lines(tmp_path, start_check):
    check = start_check("--setups", "lora")
    output, _ = check.communicate(timeout=1800)
    assert check.returncode == 0, output[-3000:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["stopped"] is None and results["skipped"] == {}
    assert results["machine"]["trl_gta_from"] == str(ROOT / "trl_gta")
    models = ("qwen2.5-3b-instruct", "qwen3-4b")
    cases = [f"{m}/lora/{scope}/{variant}" for m in models for scope, variant in gpu_check.CASES]
    assert list(results["cases"]) == cases
    for model in models:  # one prompt per step, completions of exactly max_completion_length tokens
        for counts in results["batches"][model]:
            assert counts["rows"] == 4 and counts["sft_rows"] == 1 and counts["mean_completion_tokens"] == 40
            assert 0 < counts["guess_token_share"] < 1
    lines = output.splitlines()
    for key in cases:
        case = results["cases"][key]
        assert case["peak_step_bytes"] > 0 and case["wall_median_s"] > 0 and case["gradient_buffer_bytes"] > 0
        assert all(loss == loss for loss in case["losses"])  # no NaN
        if key.endswith("drop"):
            assert case["grad_cosine_mean"] is not None  # the conflict rule ran
            assert any(line.startswith(f"overhead_ratio[{key}]=") for line in lines)
            assert any(line.startswith(f"peak_memory_ratio[{key}]=") for line in lines)
        assert any(line.startswith(f"seconds_per_step[{key}]=") for line in lines)
    classifier = results["classifier"]
    assert classifier["answer_no_drafts_replies_equal_to_baseline"] == classifier["texts"] == 8
    assert classifier["guess"]["mean_generated_tokens"] == 0
    assert classifier["answer_labels"]["texts_per_second"] > 0
    assert [line.split("=")[0] for line in lines[-3:]] == ["answer_labels_speedup", "answer_speedup", "guess_speedup"]


def test_a_stop_saves_what_was_measured(tmp_path, start_check):
    check = start_check("--models", "qwen3-4b", "--setups", "full", "--no_classifier")
    saved = tmp_path / "gpu_check.json"
    deadline = time.monotonic() + 1800
    while not (saved.exists() and json.loads(saved.read_text())["cases"]):  # the first case is in
        assert check.poll() is None and time.monotonic() < deadline, "the check ended before its first case"
        time.sleep(0.2)
    check.send_signal(signal.SIGTERM)
    output, _ = check.communicate(timeout=600)
    assert check.returncode == 0, output[-3000:]
    results = json.loads(saved.read_text())
    assert results["stopped"].startswith("SIGTERM")
    names = [f"qwen3-4b/full/{scope}/{variant}" for scope, variant in gpu_check.CASES]
    assert set(results["cases"]) | set(results["skipped"]) == set(names)  # every case measured or said skipped
    assert "qwen3-4b/full/-/grpo" in results["cases"]
    assert output.splitlines()[-1] == f"stopped={results['stopped']}"


def test_lines_give_ratios_to_grpo_of_the_same_model_and_setup(tmp_path):
    results = gpu_check.Results(tmp_path / "gpu_check.json", {})
    case = dict(peak_total_bytes=None)
    results.cases["m/lora/-/grpo"] = dict(case, wall_median_s=2.0, peak_step_bytes=4 * gpu_check.GIB)
    results.cases["m/lora/step/drop"] = dict(case, wall_median_s=2.5, peak_step_bytes=5 * gpu_check.GIB)
    results.cases["m/full/step/drop"] = dict(case, wall_median_s=3.0, peak_step_bytes=gpu_check.GIB)  # no GRPO base
    results.failed["m/full/-/grpo"] = "OutOfMemoryError: CUDA out of memory.\nmore"
    lines = results.lines()
    assert lines[:2] == ["overhead_ratio[m/lora/step/drop]=1.25", "peak_memory_ratio[m/lora/step/drop]=1.250"]
    assert not any(line.startswith(("overhead_ratio[m/full", "peak_memory_ratio[m/full")) for line in lines)
    assert "seconds_per_step[m/full/step/drop]=3.000" in lines and "peak_step_GiB[m/lora/-/grpo]=4.00" in lines
    assert lines[-1] == "failed[m/full/-/grpo]=OutOfMemoryError: CUDA out of memory."
    results.save()
    assert json.loads(results.path.read_text())["failed"] == results.failed

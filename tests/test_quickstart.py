"""`trl-gta quickstart` end to end on a tiny model: evaluation, the chosen format warm-up, GTA, results on disk."""

import json
import os

import pytest

import trl_gta.evaluation
import trl_gta.methods
import trl_gta.warmup
from trl_gta.scripts.quickstart import QuickstartArguments, main


def test_quickstart_runs_with_the_warmup_and_rewards_it_is_given(tmp_path, model_dir, monkeypatch):
    seen = {}
    format_warmup, build_trainer = trl_gta.warmup.format_warmup, trl_gta.methods.build_trainer
    evaluate_classifier = trl_gta.evaluation.evaluate_classifier

    def recording_warmup(*args, **kwargs):
        seen["labels"] = kwargs["labels"]
        return format_warmup(*args, **kwargs)

    def recording_build_trainer(*args, **kwargs):
        seen["valid_label_reward"] = kwargs["valid_label_reward"]
        seen["max_completion_length"] = args[4].max_completion_length
        return build_trainer(*args, **kwargs)

    def recording_evaluate(*args, **kwargs):
        seen.setdefault("eval_max_new_tokens", set()).add(kwargs["max_new_tokens"])
        return evaluate_classifier(*args, **kwargs)

    monkeypatch.setattr(trl_gta.warmup, "format_warmup", recording_warmup)
    monkeypatch.setattr(trl_gta.methods, "build_trainer", recording_build_trainer)
    monkeypatch.setattr(trl_gta.evaluation, "evaluate_classifier", recording_evaluate)
    output_dir = str(tmp_path / "quickstart")
    args = QuickstartArguments(
        max_steps=1,
        eval_samples=2,
        output_dir=output_dir,
        model_name_or_path=model_dir,
        format_warmup_labels="random",
        valid_label_reward=True,
        max_completion_length=8,
        eval_max_new_tokens=12,
    )
    results = main(args)
    assert seen == {
        "labels": "random",
        "valid_label_reward": True,
        "max_completion_length": 8,
        "eval_max_new_tokens": {12},
    }
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        saved = json.load(f)
    assert saved["format_warmup_labels"] == "random" and saved["valid_label_reward"] is True
    assert saved["max_completion_length"] == 8 and saved["eval_max_new_tokens"] == 12
    assert saved["train_examples"] == 6 and saved["eval_samples"] == 2 == results["eval_samples"]
    for stage in ("before", "after_format_warmup", "after"):
        assert set(saved[stage]) == {"answer", "guess"}
    assert os.path.exists(os.path.join(output_dir, "adapter_config.json"))


@pytest.mark.parametrize("name", ["max_completion_length", "eval_max_new_tokens"])
def test_quickstart_refuses_a_cap_of_no_tokens(name):
    with pytest.raises(ValueError, match=f"--{name} must be at least 1 token, got 0"):
        QuickstartArguments(**{name: 0})

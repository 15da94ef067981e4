"""`trl-gta quickstart` end to end on a tiny model: evaluation, the chosen format warm-up, GTA, results on disk."""

import json
import os

import trl_gta.methods
import trl_gta.warmup
from trl_gta.scripts.quickstart import QuickstartArguments, main


def test_quickstart_runs_with_the_warmup_and_rewards_it_is_given(tmp_path, model_dir, monkeypatch):
    seen = {}
    format_warmup, build_trainer = trl_gta.warmup.format_warmup, trl_gta.methods.build_trainer

    def recording_warmup(*args, **kwargs):
        seen["labels"] = kwargs["labels"]
        return format_warmup(*args, **kwargs)

    def recording_build_trainer(*args, **kwargs):
        seen["valid_label_reward"] = kwargs["valid_label_reward"]
        return build_trainer(*args, **kwargs)

    monkeypatch.setattr(trl_gta.warmup, "format_warmup", recording_warmup)
    monkeypatch.setattr(trl_gta.methods, "build_trainer", recording_build_trainer)
    output_dir = str(tmp_path / "quickstart")
    args = QuickstartArguments(
        max_steps=1,
        eval_samples=2,
        output_dir=output_dir,
        model_name_or_path=model_dir,
        format_warmup_labels="random",
        valid_label_reward=True,
    )
    results = main(args)
    assert seen == {"labels": "random", "valid_label_reward": True}
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        saved = json.load(f)
    assert saved["format_warmup_labels"] == "random" and saved["valid_label_reward"] is True
    assert saved["train_examples"] == 6 and saved["eval_samples"] == 2 == results["eval_samples"]
    for stage in ("before", "after_format_warmup", "after"):
        assert set(saved[stage]) == {"answer", "guess"}
    assert os.path.exists(os.path.join(output_dir, "adapter_config.json"))

"""Fair start v2 through `build_trainer` and `trl-gta train`: the random-label format warm-up and the valid-label
reward, applied alike to gta and grpo before the RL trainer is built."""

import json

import pytest
from conftest import LABELS, gta_args, tiny_model

import trl_gta.methods as methods
from trl_gta import GTAPromptTemplate
from trl_gta.cli import main


@pytest.fixture
def recorded_warmups(monkeypatch):
    """Calls of `format_warmup` from the training path, each still run for real."""
    calls = []
    real = methods.format_warmup

    def record(model, *args, **kwargs):
        warmed = real(model, *args, **kwargs)
        calls.append({"model": model, "warmed": warmed, **kwargs})
        return warmed

    monkeypatch.setattr(methods, "format_warmup", record)
    return calls


@pytest.mark.parametrize("method", ["gta", "grpo"])
def test_build_trainer_warms_up_the_adapter_the_trainer_continues(
    tmp_path, tokenizer, raw_dataset, recorded_warmups, method
):
    from peft import LoraConfig

    config = gta_args(tmp_path, max_steps=1, num_generations=2, max_completion_length=6, seed=5)
    template = GTAPromptTemplate.for_format("gta" if method == "gta" else "think_answer")
    trainer = methods.build_trainer(
        method,
        tiny_model(tokenizer),
        tokenizer,
        raw_dataset,
        config,
        template,
        peft_config=LoraConfig(r=2, target_modules="all-linear"),
        valid_label_reward=True,
        format_warmup_steps=2,
        format_warmup_batch_size=4,
    )
    (call,) = recorded_warmups
    assert (call["max_steps"], call["batch_size"], call["learning_rate"], call["seed"]) == (2, 4, 1e-2, 5)
    assert call["labels"] == "random" and call["peft_config"] is not None and not call["share_prompt_prefix"]
    assert trainer.model is call["warmed"]  # the trainer continues the warmed-up adapter, not a fresh one
    assert not trainer.model.is_activation_checkpointing
    names = [f.__name__ for f in trainer.reward_funcs]
    assert names[-1] == "valid_label_reward"
    assert trainer.reward_funcs[-1](["<answer>music</answer>", "<answer>jazz</answer>"]) == [1.0, 0.0]


def test_warmup_is_skipped_on_resume_and_refused_for_sft(tmp_path, tokenizer, raw_dataset, recorded_warmups):
    config = gta_args(tmp_path, num_generations=2, resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    methods.build_trainer(
        "gta", tiny_model(tokenizer), tokenizer, raw_dataset, config, GTAPromptTemplate(), format_warmup_steps=2
    )
    assert recorded_warmups == []
    with pytest.raises(ValueError, match="fair-start options of the RL methods"):
        methods.build_trainer(
            "sft",
            tiny_model(tokenizer),
            tokenizer,
            raw_dataset,
            config,
            GTAPromptTemplate.for_format("answer"),
            format_warmup_steps=2,
        )


def test_train_cli_exposes_the_fair_start(tmp_path, model_dir, recorded_warmups):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"text": "wake me up", "label": "alarm"}, {"text": "rain today?", "label": "weather"}]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 2))
    (folder / "labels.txt").write_text("\n".join(LABELS))
    out = tmp_path / "run"
    args = ["train", "--method", "grpo", "--model_name_or_path", model_dir, "--dataset_name", str(folder)]
    args += ["--output_dir", str(out), "--max_steps", "1", "--report_to", "none", "--use_cpu", "true"]
    args += ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6"]
    args += ["--save_strategy", "no", "--gradient_checkpointing", "false"]
    args += ["--use_peft", "true", "--lora_r", "2", "--lora_target_modules", "all-linear"]
    args += ["--format_warmup_steps", "1", "--format_warmup_labels", "masked", "--format_warmup_learning_rate", "0.01"]
    args += ["--valid_label_reward", "true", "--share_prompt_prefix", "true"]
    assert main(args) == 0
    (call,) = recorded_warmups
    assert (call["max_steps"], call["labels"], call["learning_rate"]) == (1, "masked", 0.01)
    assert call["share_prompt_prefix"]  # the warm-up computes the prompt prefix once, as the RL run does
    assert (out / "adapter_config.json").exists()
    with pytest.raises(SystemExit):  # argparse choices
        main([*args, "--format_warmup_labels", "gold"])

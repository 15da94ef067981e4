from collections import Counter

import pytest
import torch
from conftest import LABELS, tiny_model

from trl_gta import GTAPromptTemplate
from trl_gta.collator import GTACollator, label_free_targets
from trl_gta.dataset import build_gta_dataset
from trl_gta.reply_format import GTA_TAGS, THINK_ANSWER_TAGS, parse_gta
from trl_gta.warmup import THINK_TEMPLATES, format_example, format_warmup, neutral_thinks, random_label_replies


def test_label_names_are_not_supervised(tokenizer):
    for prefix in ("", "<guess>"):
        ids, labels = label_free_targets(tokenizer, "weather", prefix, format_example(GTA_TAGS))
        supervised = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != -100])
        masked = tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label == -100])
        assert "weather" not in supervised and masked.count("weather") == 3
        assert "</guess>" in supervised and "<answer>" in supervised and "The text is about" in supervised
        assert tokenizer.decode(ids) == format_example(GTA_TAGS).format(label="weather")[len(prefix) :]


def test_collator_without_label_supervision(tokenizer, raw_dataset):
    rows = build_gta_dataset(raw_dataset)
    batch = GTACollator(tokenizer, format_example(THINK_ANSWER_TAGS), append_eos=True, supervise_labels=False)(
        [rows[0], rows[5]]
    )
    for row, labels in zip((rows[0], rows[5]), batch["labels"], strict=True):
        supervised = tokenizer.decode([t for t in labels.tolist() if t != -100])
        assert row["label"] not in supervised and supervised.startswith("<think>The text is about")
        assert labels[labels != -100][-1] == tokenizer.eos_token_id


def test_format_warmup_trains_in_place(tmp_path, tokenizer, raw_dataset):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(tokenizer), LoraConfig(r=2, target_modules="all-linear"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    template = GTAPromptTemplate(response_prefix="<guess>")
    warmed = format_warmup(model, tokenizer, raw_dataset, template, str(tmp_path), 2, 4, 1e-2, labels="masked")
    assert warmed is model
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)


def test_random_label_replies_draw_labels_of_the_set_with_neutral_thinks():
    """Labels are balanced over the set and the same in guess and answer; the think varies and never names a label."""
    labels = ["alarm", "weather", "music"]
    replies = random_label_replies(GTA_TAGS, labels, 3000, seed=1)
    assert replies == random_label_replies(GTA_TAGS, labels, 3000, seed=1)
    assert replies != random_label_replies(GTA_TAGS, labels, 3000, seed=2)
    parsed = [parse_gta(reply) for reply in replies]
    assert all(p.is_well_formed and p.guess == p.answer for p in parsed)
    assert Counter(p.answer for p in parsed) == {label: 1000 for label in labels}
    first = Counter(parse_gta(reply).answer for reply in random_label_replies(GTA_TAGS, labels, 7, seed=4))
    assert sorted(first.values()) == [2, 2, 3]  # every label as often as any other, give or take one
    assert len({tuple(random_label_replies(GTA_TAGS, labels, 3, seed=s)) for s in range(20)}) > 1  # random order
    assert {p.think for p in parsed} == set(THINK_TEMPLATES)
    assert all(label not in p.think.casefold() for p in parsed for label in labels)
    assert random_label_replies(THINK_ANSWER_TAGS, ["sport"], 1, templates=["Hm."]) == [
        "<think>Hm.</think><answer>sport</answer>"
    ]


def test_think_templates_naming_a_label_are_left_out():
    templates = ["Sport decides it.", "A sporty text.", "The label is clear."]
    assert neutral_thinks(["sport", "tech"], templates) == ["A sporty text.", "The label is clear."]
    assert neutral_thinks(["alarm", "weather"]) == list(THINK_TEMPLATES)
    with pytest.raises(ValueError, match="Every think template names a label"):
        neutral_thinks(["label", "sport"], templates[:1] + templates[2:])


def test_random_warmup_supervises_whole_replies(tokenizer, raw_dataset, monkeypatch):
    """The collated targets are drawn replies (after the prefix) plus EOS, every token supervised."""
    captured = {}

    class Recorder:
        def __init__(self, model, args, train_dataset, processing_class, data_collator, peft_config):
            captured.update(rows=train_dataset, collator=data_collator, args=args)
            self.model = model

        def train(self):
            pass

    monkeypatch.setattr("trl_gta.warmup.SFTTrainer", Recorder)
    template = GTAPromptTemplate(response_prefix="<guess>")
    format_warmup(tiny_model(tokenizer), tokenizer, raw_dataset, template, "unused", max_steps=1, seed=3)
    rows = captured["rows"]  # the first max_steps x batch_size = 8 of the 9 texts
    assert (
        build_gta_dataset(raw_dataset.select(range(8)), template=template, tokenizer=tokenizer)["prompt"]
        == rows["prompt"]
    )
    assert rows["label"] == random_label_replies(GTA_TAGS, LABELS, 8, seed=3)
    gold = build_gta_dataset(raw_dataset)["label"][:8]
    assert [parse_gta(reply).answer for reply in rows["label"]] != gold  # drawn, not the texts' own labels
    batch = captured["collator"]([rows[0], rows[1]])
    for row, labels in zip((rows[0], rows[1]), batch["labels"], strict=True):
        supervised = labels[labels != -100]
        assert supervised[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(supervised[:-1]) == row["label"][len("<guess>") :]
    assert captured["args"].max_steps == 1 and captured["args"].seed == 3
    with pytest.raises(ValueError, match="labels must be one of"):
        format_warmup(tiny_model(tokenizer), tokenizer, raw_dataset, template, "unused", labels="gold")


def test_format_warmup_wraps_with_peft_config_and_restores_checkpointing(tmp_path, tokenizer, raw_dataset):
    """With `peft_config` the warm-up returns the PeftModel it trained; the SFT config's activation checkpointing
    (on by default) does not leak into the RL run that follows."""
    from peft import LoraConfig, PeftModel

    model = tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    template = GTAPromptTemplate.for_format("think_answer", response_prefix="<think>")
    warmed = format_warmup(
        model,
        tokenizer,
        raw_dataset,
        template,
        str(tmp_path),
        max_steps=2,
        batch_size=4,
        learning_rate=1e-2,
        peft_config=LoraConfig(r=2, target_modules="all-linear"),
        gradient_checkpointing=True,
    )
    assert isinstance(warmed, PeftModel) and not warmed.is_activation_checkpointing
    lora = [p for n, p in warmed.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # B starts at zero: the adapter was trained
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)  # base frozen


def test_warmup_refuses_an_iterable_dataset_with_a_clear_error(tokenizer, raw_dataset):
    template = GTAPromptTemplate(response_prefix="<guess>")
    with pytest.raises(TypeError, match=r"map-style datasets.Dataset .* got IterableDataset.*take\(16\)"):
        format_warmup(tiny_model(tokenizer), tokenizer, raw_dataset.to_iterable_dataset(), template, "x", max_steps=2)


def test_shared_prompt_prefix_warmup_trains_as_the_plain_one(tmp_path, tokenizer, raw_dataset):
    """The warm-up with the prompts' common prefix computed once (for one row) takes the same steps: the same weights
    up to float rounding (which Adam's normalized steps amplify where a gradient is near zero). It refuses activation
    checkpointing."""
    template = GTAPromptTemplate(response_prefix="<guess>")
    initial = {n: p.detach().clone() for n, p in tiny_model(tokenizer).named_parameters()}
    weights, rows = {}, {}
    for share in (False, True):
        model = tiny_model(tokenizer)
        rows[share] = []
        model.register_forward_hook(
            lambda m, a, kw, out, seen=rows[share]: seen.append(kw["input_ids"].size(0)), with_kwargs=True
        )
        warmed = format_warmup(
            model, tokenizer, raw_dataset, template, str(tmp_path / str(share)), 2, 4, 1e-2, share_prompt_prefix=share
        )
        weights[share] = {n: p.detach() for n, p in warmed.named_parameters()}
    assert 1 in rows[True] and 1 not in rows[False]  # the prefix ran for one row
    assert any(not torch.equal(initial[n], p) for n, p in weights[False].items())
    for name, value in weights[True].items():  # Adam's steps are about 1e-2 each at this rate
        torch.testing.assert_close(value, weights[False][name], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="activation checkpointing"):
        format_warmup(
            tiny_model(tokenizer),
            tokenizer,
            raw_dataset,
            template,
            "x",
            share_prompt_prefix=True,
            gradient_checkpointing=True,
        )

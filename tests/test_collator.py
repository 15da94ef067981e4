"""`trl_gta.collator`: teacher-forced `prompt + <guess>GOLD</guess>` batches, alone and inside TRL's SFTTrainer."""

import copy
import math

import pytest
import torch
from conftest import CPU_TRAINING, LABELS, tiny_model

from trl_gta.collator import GTACollator, target_token_ids
from trl_gta.dataset import build_gta_dataset
from trl_gta.losses import guess_cross_entropy
from trl_gta.prompts import GTAPromptTemplate, tokenize_prompt
from trl_gta.reply_format import GUESS_TARGET, target_continuation


def rows_of(dataset, indices=None) -> list[dict]:
    return [dataset[i] for i in (indices if indices is not None else range(len(dataset)))]


def check_batch(batch, rows, tokenizer, target_texts, eos=False):
    """Every row: prompt ids then target ids, labels only on the target, right padding."""
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert input_ids.shape == attention_mask.shape == labels.shape
    assert input_ids.dtype == labels.dtype == torch.long
    width = input_ids.shape[1]
    lengths = []
    for i, (row, target_text) in enumerate(zip(rows, target_texts, strict=True)):
        prompt_ids = list(tokenize_prompt(tokenizer, row["prompt"]))
        target_ids = tokenizer(target_text, add_special_tokens=False)["input_ids"]
        if eos:
            target_ids = [*target_ids, tokenizer.eos_token_id]
        length = len(prompt_ids) + len(target_ids)
        lengths.append(length)
        assert input_ids[i, :length].tolist() == prompt_ids + target_ids
        assert input_ids[i, length:].tolist() == [tokenizer.pad_token_id] * (width - length)
        assert attention_mask[i].tolist() == [1] * length + [0] * (width - length)
        assert labels[i].tolist() == [-100] * len(prompt_ids) + target_ids + [-100] * (width - length)
        supervised = labels[i][labels[i] != -100]
        assert tokenizer.decode(supervised, skip_special_tokens=not eos) == target_text + (
            tokenizer.eos_token if eos else ""
        )
    assert width == max(lengths)
    assert len(set(lengths)) > 1  # padding was exercised
    return lengths


def test_conversational_rows(raw_dataset, tokenizer):
    dataset = build_gta_dataset(raw_dataset)
    rows = rows_of(dataset)
    batch = GTACollator(tokenizer, following="")(rows)  # the target alone; the default is tested below
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    check_batch(batch, rows, tokenizer, [f"<guess>{row['label']}</guess>" for row in rows])
    # the targets follow the gold labels, not the row order or a fixed label
    decoded = [tokenizer.decode(labels[labels != -100]) for labels in batch["labels"]]
    assert decoded == [f"<guess>{LABELS[i]}</guess>" for i in raw_dataset["label"]]


def test_response_prefix_rows(raw_dataset, tokenizer):
    dataset = build_gta_dataset(
        raw_dataset, template=GTAPromptTemplate(response_prefix="<guess>"), tokenizer=tokenizer
    )
    rows = rows_of(dataset, [0, 4, 8, 3])
    batch = GTACollator(tokenizer, following="")(rows)
    check_batch(batch, rows, tokenizer, [f"{row['label']}</guess>" for row in rows])
    for i, row in enumerate(rows):
        prompt_length = len(tokenize_prompt(tokenizer, row["prompt"]))
        assert tokenizer.decode(batch["input_ids"][i, :prompt_length]).endswith("<|im_start|>assistant\n<guess>")
        assert batch["labels"][i, prompt_length - 1] == -100 and batch["labels"][i, prompt_length] != -100


def test_append_eos_and_custom_target_template(raw_dataset, tokenizer):
    rows = rows_of(build_gta_dataset(raw_dataset), [2, 5, 6])
    collator = GTACollator(tokenizer, target_template="<answer>{label}</answer>", append_eos=True)
    batch = collator(rows)
    check_batch(batch, rows, tokenizer, [f"<answer>{row['label']}</answer>" for row in rows], eos=True)
    for i in range(len(rows)):
        last = int(batch["attention_mask"][i].sum()) - 1
        assert batch["labels"][i, last] == tokenizer.eos_token_id


def test_pad_to_multiple_of(raw_dataset, tokenizer):
    rows = rows_of(build_gta_dataset(raw_dataset), [0, 1, 2])
    plain = GTACollator(tokenizer)(rows)
    padded = GTACollator(tokenizer, pad_to_multiple_of=16)(rows)
    width = plain["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == -(-width // 16) * 16 > width
    assert torch.equal(padded["input_ids"][:, :width], plain["input_ids"])
    assert torch.equal(padded["labels"][:, :width], plain["labels"])
    assert (padded["labels"][:, width:] == -100).all() and (padded["attention_mask"][:, width:] == 0).all()


def test_tokenizer_without_pad_token_raises(tokenizer):
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    with pytest.raises(ValueError, match="no pad token"):
        GTACollator(no_pad)


def test_target_continuation():
    assert target_continuation("<guess>alarm</guess>") == "<guess>alarm</guess>"
    assert target_continuation("<guess>alarm</guess>", "<guess>") == "alarm</guess>"
    assert target_continuation("<guess>alarm</guess>", "<guess>alarm</guess>") == ""
    with pytest.raises(ValueError, match="'<think>' is not the start"):
        target_continuation("<guess>alarm</guess>", "<think>")
    with pytest.raises(ValueError, match="not the start"):
        target_continuation("<guess>alarm</guess>", " <guess>")


def test_target_token_ids(tokenizer):
    ids = target_token_ids(tokenizer, "music", "<guess>")
    assert tokenizer.decode(ids) == "music</guess>"
    assert ids == tokenizer("music</guess>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(target_token_ids(tokenizer, "music")) == GUESS_TARGET.format(label="music")


def test_mismatched_response_prefix_in_a_row_raises(raw_dataset, tokenizer):
    row = dict(build_gta_dataset(raw_dataset)[0])
    row["response_prefix"] = "<think>"
    with pytest.raises(ValueError, match="is not the start of the target"):
        GTACollator(tokenizer)([row])
    row["response_prefix"] = None  # a missing prefix value means no prefix
    batch = GTACollator(tokenizer)([row])
    assert tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100]) == "<guess>alarm</guess><"


def test_model_loss_is_the_guess_cross_entropy(raw_dataset, tokenizer):
    model = tiny_model(tokenizer)
    batch = GTACollator(tokenizer)(rows_of(build_gta_dataset(raw_dataset), [0, 3, 6, 7]))
    with torch.no_grad():
        output = model(**batch)
    expected = guess_cross_entropy(output.logits[:, :-1], batch["labels"][:, 1:], reduction="token_mean")
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sft_warm_up_with_trl_sft_trainer(tmp_path, raw_dataset, tokenizer):
    from trl import SFTConfig, SFTTrainer

    model = tiny_model(tokenizer)
    # four rows = one batch per epoch, so the first logged loss is the loss of this batch
    dataset = build_gta_dataset(raw_dataset).select([0, 3, 6, 7])
    collator = GTACollator(tokenizer)
    with torch.no_grad():
        first_loss = model(**collator(rows_of(dataset))).loss.item()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        **CPU_TRAINING,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] == pytest.approx(first_loss, abs=1e-4)
    assert losses[1] < losses[0]  # same batch, one step of lr 1e-2 later
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert "model.embed_tokens.weight" in changed and len(changed) == len(before)


def test_guess_target_is_the_guess_span_of_a_whole_reply(tokenizer, raw_dataset):
    """The teacher-forced tokens are those a well-formed reply carries in its guess span (straddling token too)."""
    from trl_gta.spans import guess_token_span

    for prefix in ("", "<guess>"):
        reply = "<guess>weather</guess><think>because</think><answer>weather</answer>"[len(prefix) :]
        ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        start, end = guess_token_span(ids, tokenizer, prefix)
        assert target_token_ids(tokenizer, "weather", prefix, following="<think>") == ids[start:end]
    assert tokenizer.decode(target_token_ids(tokenizer, "weather", following="<think>")).endswith("</guess><")
    rows = build_gta_dataset(raw_dataset)
    batch = GTACollator(tokenizer)([rows[3]])
    supervised = [t for t in batch["labels"][0].tolist() if t != -100]
    assert supervised == target_token_ids(tokenizer, rows[3]["label"], following="<think>")

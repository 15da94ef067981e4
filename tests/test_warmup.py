import torch
from conftest import tiny_model

from trl_gta import GTAPromptTemplate
from trl_gta.collator import GTACollator, label_free_targets
from trl_gta.dataset import build_gta_dataset
from trl_gta.reply_format import GTA_TAGS, THINK_ANSWER_TAGS
from trl_gta.warmup import format_example, format_warmup


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
    warmed = format_warmup(
        model, tokenizer, raw_dataset, template, str(tmp_path), max_steps=2, batch_size=4, learning_rate=1e-2
    )
    assert warmed is model
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)

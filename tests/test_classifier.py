import json

import pytest
import torch
from conftest import LABELS, tiny_model
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from trl_gta import GTAClassifier, GTAPromptTemplate
from trl_gta.classifier import _cache_argument, label_branch_points
from trl_gta.prompts import tokenize_prompt
from trl_gta.reply_format import extract_block, match_label

TEXTS = ["wake me up at seven", "will it rain today in the city of paris", "play jazz"]


def label_target(tokenizer, template, label):
    """The label's tokens and the one closing them, tokenized as in the whole reply."""
    text = f"<guess>{label}</guess><think>"[len(template.response_prefix) :]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > text.index("</guess>"))
    return encoded["input_ids"][: stop + 1]


def naive_guess_probs(model, tokenizer, template, text, labels=LABELS):
    """Full forward per label, no cache, every position read: the reference for the cached, batched scorer.

    Decoding constrained to the label set: at each position, renormalize over the tokens the labels still agreeing
    with this one's path could take next."""
    prompt = list(tokenize_prompt(tokenizer, template.prompt(text, labels, tokenizer)))
    targets = [label_target(tokenizer, template, label) for label in labels]
    scores = []
    for target in targets:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + target])).logits[0].float()
        score = 0.0
        for k, token in enumerate(target):
            allowed = sorted({other[k] for other in targets if other[:k] == target[:k]})
            score += logits[len(prompt) + k - 1, allowed].log_softmax(-1)[allowed.index(token)].item()
        scores.append(score)
    return torch.tensor(scores).softmax(0).tolist()


def test_label_branch_points_are_where_sequences_diverge():
    branches = label_branch_points([[5, 1, 9], [5, 2, 9], [5, 2, 3, 9], [7, 9]])
    assert branches == {(): [5, 7], (5,): [1, 2], (5, 2): [9, 3]}
    assert label_branch_points([[1, 2], [1, 2]]) == {}


def test_cache_argument_follows_the_forward_signature():
    class Renamed:  # transformers' newer name
        def forward(self, input_ids, cache=None, **kwargs): ...

    class Legacy:
        def forward(self, input_ids, past_key_values=None, **kwargs): ...

    class Wrapped:  # a PEFT model: `forward(*args, **kwargs)` over its base model
        def forward(self, *args, **kwargs): ...

        def get_base_model(self):
            return Renamed()

    assert [_cache_argument(m) for m in (Renamed(), Legacy(), Wrapped())] == ["cache", "past_key_values", "cache"]


@pytest.mark.parametrize("prefix", ["", "<guess>"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_guess_mode_matches_uncached_scoring(tokenizer, prefix, arch):
    model = tiny_model(tokenizer, arch=arch).eval()
    template = GTAPromptTemplate(response_prefix=prefix)
    classifier = GTAClassifier(model, tokenizer, LABELS, template)
    predictions = classifier.predict(TEXTS, mode="guess", guess_batch_size=2)
    for text, prediction in zip(TEXTS, predictions, strict=True):
        expected = naive_guess_probs(model, tokenizer, template, text)
        assert list(prediction.guess_probs.values()) == pytest.approx(expected, abs=1e-6)
        assert sum(prediction.guess_probs.values()) == pytest.approx(1.0)
        assert prediction.label == LABELS[max(range(3), key=expected.__getitem__)]
        assert prediction.generated_tokens == 0


def test_guess_mode_on_one_text_and_on_identical_texts(tokenizer):
    """The texts share their whole prompt here: the scorer still runs the last prompt token per text."""
    model = tiny_model(tokenizer).eval()
    template = GTAPromptTemplate()
    classifier = GTAClassifier(model, tokenizer, LABELS, template)
    expected = naive_guess_probs(model, tokenizer, template, TEXTS[0])
    for texts in ([TEXTS[0]], [TEXTS[0]] * 3):
        for prediction in classifier.predict(texts, mode="guess"):
            assert list(prediction.guess_probs.values()) == pytest.approx(expected, abs=1e-6)


def test_guess_mode_with_labels_sharing_leading_tokens(tokenizer):
    """Labels that are token prefixes of others branch deeper in the trie: those points need their own passes."""
    labels = ["alarm", "alarms", "weather", "weatherman"]
    model = tiny_model(tokenizer).eval()
    template = GTAPromptTemplate()
    targets = [label_target(tokenizer, template, label) for label in labels]
    assert any(len(path) > 1 for path in label_branch_points(targets)), "no deeper branch point to exercise"
    predictions = GTAClassifier(model, tokenizer, labels, template).predict(TEXTS, mode="guess", guess_batch_size=2)
    for text, prediction in zip(TEXTS, predictions, strict=True):
        expected = naive_guess_probs(model, tokenizer, template, text, labels)
        assert list(prediction.guess_probs.values()) == pytest.approx(expected, abs=1e-6)


def canned(outputs):
    """A stand-in for the decoder: the i-th text of a batch gets the i-th output (cyclically), 7 tokens each."""

    def decode(prompt_ids, shared, max_new_tokens):
        return [outputs[i % len(outputs)] for i in range(len(prompt_ids))], [7] * len(prompt_ids)

    return decode


def generate_on_full_prompts(classifier, texts, max_new_tokens):
    """Today's reference (and what a user would write): `model.generate` on the whole left-padded prompts, greedy.

    Returns each row's reply text and token count, cut where the cached decoder stops (end of sequence, or the token
    completing `</answer>`), and the reply text uncut."""
    tokenizer = classifier.tokenizer
    prompts, _ = classifier._prompt_ids(texts)
    width = max(len(p) for p in prompts)
    output = classifier.model.generate(
        input_ids=torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts]),
        attention_mask=torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )[:, width:]
    cut, whole = [], []
    for row in output.tolist():
        end = next(
            (
                k + 1
                for k in range(len(row))
                if row[k] == tokenizer.eos_token_id or "</answer>" in tokenizer.decode(row[: k + 1])
            ),
            len(row),
        )
        cut.append((tokenizer.decode(row[:end], skip_special_tokens=True), end))
        whole.append(tokenizer.decode(row, skip_special_tokens=True))
    return cut, whole


ANSWER_TEXTS = [*TEXTS, "set an alarm for six am please and then play jazz", "next song"]


@pytest.mark.parametrize("prefix", ["", "<guess>"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_answer_mode_decodes_like_generate_on_full_prompts(tokenizer, prefix, arch):
    """Greedy replies over the cached shared prefix equal `model.generate` on the whole prompts, token for token:
    texts of several lengths, batches with padding."""
    model = tiny_model(tokenizer, arch=arch).eval()
    classifier = GTAClassifier(model, tokenizer, LABELS, GTAPromptTemplate(response_prefix=prefix))
    expected, _ = generate_on_full_prompts(classifier, ANSWER_TEXTS, max_new_tokens=12)
    expected = [(prefix + text, count) for text, count in expected]
    for batch_size in (2, len(ANSWER_TEXTS)):
        classifier._continuations.clear()  # no drafts from earlier replies at first; then the batches' own
        predictions = classifier.predict(ANSWER_TEXTS, mode="answer", batch_size=batch_size, max_new_tokens=12)
        assert [(p.raw_output, p.generated_tokens) for p in predictions] == expected
    # wrong drafts everywhere: every one is checked, and the replies do not change
    wrong = torch.Generator().manual_seed(0)
    classifier._continuations = {
        (token,): tuple(torch.randint(len(tokenizer), (12,), generator=wrong).tolist())
        for token in range(len(tokenizer))
    }
    predictions = classifier.predict(ANSWER_TEXTS, mode="answer", batch_size=3, max_new_tokens=12)
    assert [(p.raw_output, p.generated_tokens) for p in predictions] == expected


REPLIES = {  # per text, the reply a tiny model is trained to give
    "wake me up at seven": "<guess>alarm</guess><think>because</think><answer>alarm</answer>",
    "will it rain in paris": "<guess>music</guess><think>because rain</think><answer>weather</answer>",
    "play jazz": "<guess>music</guess><think>because</think><answer>music</answer> and then more words",
    "next song": "<guess>music</guess><think>play</think>",
}


@pytest.fixture(scope="module")
def trained_classifier(tokenizer):
    """A tiny model overfitted to reply `REPLIES` (each followed by end of sequence), so replies end on their own."""
    model = tiny_model(tokenizer)
    template = GTAPromptTemplate(response_prefix="<guess>")
    prompts, _ = GTAClassifier(model, tokenizer, LABELS, template)._prompt_ids(list(REPLIES))
    rows = [
        (prompt, tokenizer(reply[len("<guess>") :], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        for prompt, reply in zip(prompts, REPLIES.values(), strict=True)
    ]
    width = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, (prompt, reply) in enumerate(rows):
        input_ids[i, : len(prompt) + len(reply)] = torch.tensor(prompt + reply)
        labels[i, len(prompt) : len(prompt) + len(reply)] = torch.tensor(reply)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model(
            input_ids=input_ids, attention_mask=(labels != -100) | (input_ids != tokenizer.pad_token_id), labels=labels
        ).loss.backward()
        optimizer.step()
    return GTAClassifier(model.eval(), tokenizer, LABELS, template)


def test_answer_mode_stops_at_the_closing_answer_tag(trained_classifier):
    texts = list(REPLIES)
    cut, whole = generate_on_full_prompts(trained_classifier, texts, max_new_tokens=40)
    assert whole == [r[len("<guess>") :] for r in REPLIES.values()], "the fixture did not learn"
    predictions = trained_classifier.predict(texts, mode="answer", batch_size=3, max_new_tokens=40)
    assert [(p.raw_output, p.generated_tokens) for p in predictions] == [("<guess>" + t, n) for t, n in cut]
    # the same labels, guesses, thoughts and answers as the uncut replies give
    for prediction, reply in zip(predictions, REPLIES.values(), strict=True):
        closed = reply[: reply.index("</answer>") + len("</answer>")] if "</answer>" in reply else reply
        assert prediction.raw_output == closed
        assert prediction.answer == extract_block(reply, "answer", unique=True)
        assert prediction.label == match_label(prediction.answer, LABELS)
        assert (prediction.guess, prediction.think) == (extract_block(reply, "guess"), extract_block(reply, "think"))
    assert [p.label for p in predictions] == ["alarm", "weather", "music", None]
    # adaptive mode thinks with the same decoder
    adaptive = trained_classifier.predict(texts, mode="adaptive", confidence_threshold=1.01, max_new_tokens=40)
    assert [p.raw_output for p in adaptive] == [p.raw_output for p in predictions]
    assert [p.generated_tokens for p in adaptive] == [p.generated_tokens for p in predictions]


def test_drafts_from_earlier_replies_save_steps_not_tokens(trained_classifier, monkeypatch):
    """Once replies are known, steps check drafts of several tokens: fewer forward passes, the same replies."""
    model, texts = trained_classifier.model, list(REPLIES)
    widths = []
    forward = model.forward

    def counting(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    trained_classifier._continuations.clear()
    first = trained_classifier.predict(texts, mode="answer", batch_size=4, max_new_tokens=40)
    first_passes, widths[:] = len(widths), []
    again = trained_classifier.predict(texts, mode="answer", batch_size=4, max_new_tokens=40)
    assert [(p.raw_output, p.generated_tokens) for p in again] == [(p.raw_output, p.generated_tokens) for p in first]
    assert first_passes <= max(p.generated_tokens for p in first)  # the tails, then at most a pass per token
    assert len(widths) < first_passes / 3 and max(widths[1:]) > 1


def test_answer_mode_parses_and_falls_back(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    classifier._decode = canned(
        ["<guess>alarm</guess><think>t</think><answer>Weather.</answer>", "<guess>music</guess><think>t</think>"]
    )
    first, second = classifier.predict(TEXTS[:2], mode="answer")
    assert (first.label, first.guess, first.answer, first.think) == ("weather", "alarm", "Weather.", "t")
    assert second.label is None and second.generated_tokens == 7
    assert classifier.predict(TEXTS[:2], mode="answer", fallback_to_guess=True)[1].label == "music"


def test_adaptive_thresholds(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    classifier._decode = canned(["<guess>x</guess><think>t</think><answer>music</answer>"])
    never = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=0.0)
    assert all(p.generated_tokens == 0 and p.label == p.guess for p in never)
    always = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=1.01)
    assert all(p.generated_tokens == 7 and p.label == "music" for p in always)


def test_real_generation_counts_tokens(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    predictions = classifier.predict(TEXTS, mode="answer", max_new_tokens=5)
    assert all(1 <= p.generated_tokens <= 5 for p in predictions)
    assert all(p.label is None or p.label in LABELS for p in predictions)


def test_truncation_and_errors(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS, max_prompt_tokens=100)
    long_text = "will it rain " * 50
    prediction = classifier.predict([long_text], mode="guess")[0]
    assert prediction.text_truncated
    with pytest.raises(ValueError, match="mode"):
        classifier.predict(TEXTS, mode="vote")


def test_from_pretrained_checkpoint_plain_and_adapter(tmp_path, tokenizer):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="label set"):
        GTAClassifier.from_pretrained(str(tmp_path / "plain"))
    assert GTAClassifier.from_pretrained(str(tmp_path / "plain"), labels=LABELS).labels == LABELS

    template = GTAPromptTemplate(response_prefix="<guess>")
    (tmp_path / "plain" / "gta_config.json").write_text(
        json.dumps({"labels": LABELS, "prompt_template": template.to_dict()})
    )
    loaded = GTAClassifier.from_pretrained(str(tmp_path / "plain"))
    assert loaded.labels == LABELS and loaded.template == template

    # a non-zero adapter (random B), so that merging it or not changes the weights the text runs through
    lora = LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False)
    adapter = get_peft_model(tiny_model(tokenizer), lora)
    adapter.peft_config["default"].base_model_name_or_path = str(tmp_path / "plain")
    adapter.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    merged = GTAClassifier.from_pretrained(str(tmp_path / "adapter"), labels=LABELS)
    unmerged = GTAClassifier.from_pretrained(str(tmp_path / "adapter"), labels=LABELS, merge_adapter=False)
    assert not hasattr(merged.model, "peft_config") and hasattr(unmerged.model, "peft_config")
    base = GTAClassifier(AutoModelForCausalLM.from_pretrained(tmp_path / "plain"), tokenizer, LABELS)
    merged_probs, unmerged_probs, base_probs = (
        c.predict(TEXTS[:2], mode="guess")[1].guess_probs for c in (merged, unmerged, base)
    )
    assert merged_probs == pytest.approx(unmerged_probs, abs=1e-5)
    assert merged_probs != pytest.approx(base_probs, abs=1e-5)

    with pytest.raises(OSError, match="Could not load"):
        GTAClassifier.from_pretrained(str(tmp_path / "missing"), labels=LABELS)


def test_threshold_curve_matches_adaptive_predict_and_picks(tokenizer):
    from trl_gta.evaluation import calibrate_threshold, pick_threshold, threshold_curve

    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    classifier._decode = canned(["<guess>x</guess><think>t</think><answer>music</answer>"])
    gold = ["alarm", "weather", "music"]
    guesses = classifier.predict(TEXTS, mode="guess")
    answers = classifier.predict(TEXTS, mode="answer")
    curve = threshold_curve(guesses, answers, gold)
    for point in curve:
        adaptive = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=point["threshold"])
        accuracy = sum(p.label == g for p, g in zip(adaptive, gold, strict=True)) / 3
        assert point["accuracy"] == pytest.approx(accuracy)
        assert point["mean_generated_tokens"] == pytest.approx(sum(p.generated_tokens for p in adaptive) / 3)
    assert curve[0]["threshold"] == 0.0 and curve[0]["thought_rate"] == 0.0
    assert curve[-1]["thought_rate"] == 1.0 and curve[-1]["mean_generated_tokens"] == 7
    cheapest = pick_threshold(curve, target_accuracy=curve[-1]["accuracy"])
    assert next(p for p in curve if p["threshold"] == cheapest)["accuracy"] >= curve[-1]["accuracy"]
    free = [p for p in curve if p["mean_generated_tokens"] == 0]
    chosen = pick_threshold(curve, token_budget=0)
    assert next(p for p in curve if p["threshold"] == chosen)["accuracy"] == max(p["accuracy"] for p in free)
    with pytest.raises(ValueError, match="exactly one"):
        pick_threshold(curve)
    with pytest.raises(ValueError, match="No threshold reaches"):
        pick_threshold(curve, target_accuracy=1.5)
    threshold, _ = calibrate_threshold(classifier, TEXTS, gold, token_budget=7)
    assert 0.0 <= threshold <= 1.01


def test_bfloat16_model_classifies_in_every_mode(tokenizer):
    model = tiny_model(tokenizer).to(torch.bfloat16).eval()
    classifier = GTAClassifier(model, tokenizer, LABELS)
    guesses = classifier.predict(TEXTS, mode="guess")
    assert all(sum(p.guess_probs.values()) == pytest.approx(1.0, abs=1e-3) for p in guesses)
    answers = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=1.01, max_new_tokens=3)
    assert all(p.generated_tokens >= 1 and p.label == p.guess for p in answers if p.answer is None)


def test_invalid_answers_are_counted_even_when_the_label_falls_back(tokenizer):
    from trl_gta.evaluation import prediction_metrics

    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    classifier._decode = canned(["<guess>alarm</guess><think>t</think><answer>banana</answer>"])
    gold = ["alarm", "weather", "music"]
    plain = prediction_metrics(classifier.predict(TEXTS, mode="answer"), gold, LABELS)
    fallback = prediction_metrics(classifier.predict(TEXTS, mode="answer", fallback_to_guess=True), gold, LABELS)
    assert plain["invalid_label_rate"] == fallback["invalid_label_rate"] == 1.0
    assert plain["accuracy"] == 0.0 and fallback["accuracy"] == pytest.approx(1 / 3)

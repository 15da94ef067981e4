import json
import logging

import pytest
import torch
from conftest import LABELS, tiny_model
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from trl_gta import GTAClassifier, GTAPromptTemplate, predict_file
from trl_gta.classifier import label_branch_points
from trl_gta.prompts import tokenize_prompt
from trl_gta.reply_format import extract_block, match_label

TEXTS = ["wake me up at seven", "will it rain today in the city of paris", "play jazz"]


def label_target(tokenizer, template, label):
    """The label's tokens and the one closing them, tokenized as in the whole reply."""
    text = f"<guess>{label}</guess><think>"[len(template.response_prefix) :]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > text.index("</guess>"))
    return encoded["input_ids"][: stop + 1]


def naive_slot_probs(model, context, targets):
    """Full forward of `context` + each label's `targets` tokens, no cache, every position read: the reference for
    the cached, batched scorer.

    Decoding constrained to the label set: at each position, renormalize over the tokens the labels still agreeing
    with this one's path could take next."""
    scores = []
    for target in targets:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(context) + target])).logits[0].float()
        score = 0.0
        for k, token in enumerate(target):
            allowed = sorted({other[k] for other in targets if other[:k] == target[:k]})
            score += logits[len(context) + k - 1, allowed].log_softmax(-1)[allowed.index(token)].item()
        scores.append(score)
    return torch.tensor(scores).softmax(0).tolist()


def naive_guess_probs(model, tokenizer, template, text, labels=LABELS):
    prompt = list(tokenize_prompt(tokenizer, template.prompt(text, labels, tokenizer)))
    return naive_slot_probs(model, prompt, [label_target(tokenizer, template, label) for label in labels])


def test_label_branch_points_are_where_sequences_diverge():
    branches = label_branch_points([[5, 1, 9], [5, 2, 9], [5, 2, 3, 9], [7, 9]])
    assert branches == {(): [5, 7], (5,): [1, 2], (5, 2): [9, 3]}
    assert label_branch_points([[1, 2], [1, 2]]) == {}


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


def canned(classifier, outputs):
    """A stand-in for the free decoder: the i-th text of a batch gets the i-th output's tokens (cyclically)."""
    replies = [classifier.tokenizer(output, add_special_tokens=False)["input_ids"] for output in outputs]

    def decode(prompt_ids, shared, max_new_tokens, score_labels=False):
        assert not score_labels, "canned replies are for free decoding"
        return [replies[i % len(replies)] for i in range(len(prompt_ids))], [None] * len(prompt_ids)

    return decode


def token_count(classifier, text):
    return len(classifier.tokenizer(text, add_special_tokens=False)["input_ids"])


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
        predictions = classifier.predict(
            ANSWER_TEXTS, mode="answer", batch_size=batch_size, max_new_tokens=12, answer_decoding="free"
        )
        assert [(p.raw_output, p.generated_tokens) for p in predictions] == expected
    # wrong drafts everywhere: every one is checked, and the replies do not change
    wrong = torch.Generator().manual_seed(0)
    classifier._continuations = {
        (token,): tuple(torch.randint(len(tokenizer), (12,), generator=wrong).tolist())
        for token in range(len(tokenizer))
    }
    predictions = classifier.predict(
        ANSWER_TEXTS, mode="answer", batch_size=3, max_new_tokens=12, answer_decoding="free"
    )
    assert [(p.raw_output, p.generated_tokens) for p in predictions] == expected


REPLIES = {  # per text, the reply a tiny model is trained to give
    "wake me up at seven": "<guess>alarm</guess><think>because</think><answer>alarm</answer>",
    "will it rain in paris": "<guess>music</guess><think>because rain</think><answer>weather</answer>",
    "play jazz": "<guess>music</guess><think>because</think><answer>music</answer> and then more words",
    "next song": "<guess>music</guess><think>play</think>",
}


def overfitted_classifier(tokenizer, labels, replies):
    """A tiny model overfitted to reply `replies` (each followed by end of sequence), so replies end on their own."""
    model = tiny_model(tokenizer)
    template = GTAPromptTemplate(response_prefix="<guess>")
    prompts, _ = GTAClassifier(model, tokenizer, labels, template)._prompt_ids(list(replies))
    rows = [
        (prompt, tokenizer(reply[len("<guess>") :], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        for prompt, reply in zip(prompts, replies.values(), strict=True)
    ]
    width = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    targets = torch.full((len(rows), width), -100)
    for i, (prompt, reply) in enumerate(rows):
        input_ids[i, : len(prompt) + len(reply)] = torch.tensor(prompt + reply)
        targets[i, len(prompt) : len(prompt) + len(reply)] = torch.tensor(reply)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model(
            input_ids=input_ids,
            attention_mask=(targets != -100) | (input_ids != tokenizer.pad_token_id),
            labels=targets,
        ).loss.backward()
        optimizer.step()
    return GTAClassifier(model.eval(), tokenizer, labels, template)


@pytest.fixture(scope="module")
def trained_classifier(tokenizer):
    return overfitted_classifier(tokenizer, LABELS, REPLIES)


def test_answer_mode_stops_at_the_closing_answer_tag(trained_classifier):
    texts = list(REPLIES)
    cut, whole = generate_on_full_prompts(trained_classifier, texts, max_new_tokens=40)
    assert whole == [r[len("<guess>") :] for r in REPLIES.values()], "the fixture did not learn"
    predictions = trained_classifier.predict(
        texts, mode="answer", batch_size=3, max_new_tokens=40, answer_decoding="free"
    )
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
    adaptive = trained_classifier.predict(
        texts, mode="adaptive", confidence_threshold=1.01, max_new_tokens=40, answer_decoding="free"
    )
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
    first = trained_classifier.predict(texts, mode="answer", batch_size=4, max_new_tokens=40, answer_decoding="free")
    first_passes, widths[:] = len(widths), []
    again = trained_classifier.predict(texts, mode="answer", batch_size=4, max_new_tokens=40, answer_decoding="free")
    assert [(p.raw_output, p.generated_tokens) for p in again] == [(p.raw_output, p.generated_tokens) for p in first]
    assert first_passes <= max(p.generated_tokens for p in first)  # the tails, then at most a pass per token
    assert len(widths) < first_passes / 3 and max(widths[1:]) > 1


def test_predict_file_decodes_each_chunk_from_its_own_replies(trained_classifier, tmp_path):
    """Drafts change the decoding steps' shapes, so the last bits of the probabilities: `predict_file` forgets them per
    chunk, so a chunk writes the same bytes on whichever process, or in whichever run, labels it."""
    texts = list(REPLIES)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts))
    trained_classifier.predict(texts, mode="answer", max_new_tokens=40)  # drafts from every reply
    predict_file(trained_classifier, str(source), str(tmp_path / "out.jsonl"), chunk_size=2, max_new_tokens=40)
    after_file = dict(trained_classifier._continuations)
    trained_classifier.forget_drafts()
    trained_classifier.predict(texts[2:], mode="answer", max_new_tokens=40)
    assert after_file == trained_classifier._continuations  # the last chunk decoded from its own replies alone


def test_answer_mode_parses_and_falls_back(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    outputs = ["<guess>alarm</guess><think>t</think><answer>Weather.</answer>", "<guess>music</guess><think>t</think>"]
    classifier._decode = canned(classifier, outputs)
    first, second = classifier.predict(TEXTS[:2], mode="answer", answer_decoding="free")
    assert (first.label, first.guess, first.answer, first.think) == ("weather", "alarm", "Weather.", "t")
    assert second.label is None and second.generated_tokens == token_count(classifier, outputs[1])
    fallback = classifier.predict(TEXTS[:2], mode="answer", fallback_to_guess=True, answer_decoding="free")
    assert fallback[1].label == "music"


def test_adaptive_thresholds(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    output = "<guess>x</guess><think>t</think><answer>music</answer>"
    classifier._decode = canned(classifier, [output])
    never = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=0.0, answer_decoding="free")
    assert all(p.generated_tokens == 0 and p.label == p.guess for p in never)
    always = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=1.01, answer_decoding="free")
    assert all(p.generated_tokens == token_count(classifier, output) and p.label == "music" for p in always)


def test_real_generation_counts_tokens(tokenizer):
    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    predictions = classifier.predict(TEXTS, mode="answer", max_new_tokens=5, answer_decoding="free")
    assert all(1 <= p.generated_tokens <= 5 for p in predictions)
    assert all(p.label is None or p.label in LABELS for p in predictions)
    labelled = classifier.predict(TEXTS, mode="answer", max_new_tokens=5)
    assert [p.generated_tokens for p in labelled] == [p.generated_tokens for p in predictions]  # never opened


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
    with pytest.raises(
        ValueError, match=r"no gta_config.json, so its reply format is unknown: write its .*for_format"
    ):
        GTAClassifier.from_pretrained(str(tmp_path / "plain"), labels=LABELS)
    with pytest.raises(ValueError, match="label set"):
        GTAClassifier.from_pretrained(str(tmp_path / "plain"), template=GTAPromptTemplate())
    answer_only = GTAPromptTemplate.for_format("answer")
    loaded = GTAClassifier.from_pretrained(str(tmp_path / "plain"), labels=LABELS, template=answer_only)
    assert loaded.labels == LABELS and loaded.template == answer_only

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
    (tmp_path / "adapter" / "gta_config.json").write_text(json.dumps({"labels": LABELS}))
    merged = GTAClassifier.from_pretrained(str(tmp_path / "adapter"))
    unmerged = GTAClassifier.from_pretrained(str(tmp_path / "adapter"), merge_adapter=False)
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
    output = "<guess>x</guess><think>t</think><answer>music</answer>"
    classifier._decode = canned(classifier, [output])
    gold = ["alarm", "weather", "music"]
    guesses = classifier.predict(TEXTS, mode="guess")
    answers = classifier.predict(TEXTS, mode="answer", answer_decoding="free")
    curve = threshold_curve(guesses, answers, gold)
    for point in curve:
        adaptive = classifier.predict(
            TEXTS, mode="adaptive", confidence_threshold=point["threshold"], answer_decoding="free"
        )
        accuracy = sum(p.label == g for p, g in zip(adaptive, gold, strict=True)) / 3
        assert point["accuracy"] == pytest.approx(accuracy)
        assert point["mean_generated_tokens"] == pytest.approx(sum(p.generated_tokens for p in adaptive) / 3)
    assert curve[0]["threshold"] == 0.0 and curve[0]["thought_rate"] == 0.0
    assert curve[-1]["thought_rate"] == 1.0 and curve[-1]["mean_generated_tokens"] == token_count(classifier, output)
    cheapest = pick_threshold(curve, target_accuracy=curve[-1]["accuracy"])
    assert next(p for p in curve if p["threshold"] == cheapest)["accuracy"] >= curve[-1]["accuracy"]
    free = [p for p in curve if p["mean_generated_tokens"] == 0]
    chosen = pick_threshold(curve, token_budget=0)
    assert next(p for p in curve if p["threshold"] == chosen)["accuracy"] == max(p["accuracy"] for p in free)
    with pytest.raises(ValueError, match="exactly one"):
        pick_threshold(curve)
    with pytest.raises(ValueError, match="No threshold reaches"):
        pick_threshold(curve, target_accuracy=1.5)
    threshold, _ = calibrate_threshold(classifier, TEXTS, gold, token_budget=7, answer_decoding="free")
    assert 0.0 <= threshold <= 1.01


def test_bfloat16_model_classifies_in_every_mode(tokenizer):
    model = tiny_model(tokenizer).to(torch.bfloat16).eval()
    classifier = GTAClassifier(model, tokenizer, LABELS)
    guesses = classifier.predict(TEXTS, mode="guess")
    assert all(sum(p.guess_probs.values()) == pytest.approx(1.0, abs=1e-3) for p in guesses)
    answers = classifier.predict(
        TEXTS, mode="adaptive", confidence_threshold=1.01, max_new_tokens=3, answer_decoding="free"
    )
    assert all(p.generated_tokens >= 1 and p.label == p.guess for p in answers if p.answer is None)
    labelled = classifier.predict(TEXTS, mode="adaptive", confidence_threshold=1.01, max_new_tokens=3)
    assert all(p.label in LABELS and sum(p.answer_probs.values()) == pytest.approx(1.0, abs=1e-3) for p in labelled)


def test_invalid_answers_are_counted_even_when_the_label_falls_back(tokenizer):
    from trl_gta.evaluation import prediction_metrics

    classifier = GTAClassifier(tiny_model(tokenizer), tokenizer, LABELS)
    classifier._decode = canned(classifier, ["<guess>alarm</guess><think>t</think><answer>banana</answer>"])
    gold = ["alarm", "weather", "music"]
    plain = prediction_metrics(classifier.predict(TEXTS, mode="answer", answer_decoding="free"), gold, LABELS)
    fallback = prediction_metrics(
        classifier.predict(TEXTS, mode="answer", fallback_to_guess=True, answer_decoding="free"), gold, LABELS
    )
    assert plain["invalid_label_rate"] == fallback["invalid_label_rate"] == 1.0
    assert plain["accuracy"] == 0.0 and fallback["accuracy"] == pytest.approx(1 / 3)


PREFIX_LABELS = ["alarm", "alarms", "weather", "weatherman", "music"]  # multi-token labels sharing leading tokens
ANSWER_REPLIES = {
    "wake me up at seven": "<guess>alarm</guess><think>because</think><answer>alarms</answer>",
    "will it rain in paris": "<guess>music</guess><think>because rain</think><answer>weatherman</answer>",
    "play jazz": "<guess>music</guess><think>because</think><answer>music</answer>",
    "next song": "<guess>music</guess><think>play</think>",  # no answer: ends without opening one
}


@pytest.fixture(scope="module")
def answering_classifier(tokenizer):
    return overfitted_classifier(tokenizer, PREFIX_LABELS, ANSWER_REPLIES)


def answer_targets(tokenizer, opening, labels):
    """Each label's tokens after a reply that still needs `opening`: `opening + label + </answer>`, cut after the
    first token reaching `</answer>`."""
    targets = []
    for label in labels:
        text = f"{opening}{label}</answer>"
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > text.rindex("</answer>"))
        targets.append(encoded["input_ids"][: stop + 1])
    return targets


def naive_answer_probs(classifier, text, max_new_tokens):
    """The reference for labels decoding: `model.generate` on the whole prompt, alone, cut where the answer opens (an
    end of sequence dropped, `<answer>` written when the reply never opened it), then each label's whole sequence
    scored without a cache. Returns the probabilities, the tokens decoded and whether the reply opened the answer."""
    tokenizer = classifier.tokenizer
    prompt = classifier._prompt_ids([text])[0][0]
    output = classifier.model.generate(
        input_ids=torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0
    )[0, len(prompt) :].tolist()
    kept, opening, decoded = output, "<answer>", len(output)
    for k, token in enumerate(output):
        if token == tokenizer.eos_token_id:
            kept, decoded = output[:k], k + 1
            break
        if "<answer>" in tokenizer.decode(output[: k + 1]):
            assert tokenizer.decode(output[: k + 1]).endswith("<answer>")
            kept, opening, decoded = output[: k + 1], "", k + 1
            break
    targets = answer_targets(tokenizer, opening, classifier.labels)
    return naive_slot_probs(classifier.model, prompt + kept, targets), decoded, opening == ""


def test_labels_decoding_scores_the_answer_slot_exactly(answering_classifier):
    """The chosen label and every label's probability equal naive scoring of the whole sequence (prompt, decoded
    guess and think, `<answer>`, label, `</answer>`), with labels that branch after shared tokens; a reply that ends
    without an answer still gets one."""
    classifier, texts = answering_classifier, list(ANSWER_REPLIES)
    targets = answer_targets(classifier.tokenizer, "", PREFIX_LABELS)
    assert any(len(path) > 0 for path in label_branch_points(targets)), "no deeper branch point to exercise"
    expected = [naive_answer_probs(classifier, text, 40) for text in texts]
    assert [opened for _, _, opened in expected] == [True, True, True, False], "the fixture did not learn"
    free = classifier.predict(texts, mode="answer", batch_size=3, max_new_tokens=40, answer_decoding="free")
    assert [p.label for p in free] == ["alarms", "weatherman", "music", None]
    # the free run left drafts that run past `<answer>`: rows stop inside an accepted draft, whose rest is masked out
    for batch_size in (3, 4):
        predictions = classifier.predict(texts, mode="answer", batch_size=batch_size, max_new_tokens=40)
        for prediction, (probs, decoded, _) in zip(predictions, expected, strict=True):
            assert list(prediction.answer_probs.values()) == pytest.approx(probs, abs=1e-5)
            assert prediction.label == prediction.answer == PREFIX_LABELS[max(range(5), key=probs.__getitem__)]
            assert prediction.generated_tokens == decoded
            assert prediction.raw_output.endswith(f"<answer>{prediction.label}</answer>")
    assert [p.label for p in predictions[:3]] == ["alarms", "weatherman", "music"]
    assert predictions[3].label in PREFIX_LABELS
    adaptive = classifier.predict(texts, mode="adaptive", confidence_threshold=1.01, max_new_tokens=40)
    for thought, answered in zip(adaptive, predictions, strict=True):
        assert thought.answer_probs == pytest.approx(answered.answer_probs, abs=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_labels_decoding_gives_every_text_a_label(tokenizer, arch):
    """A random model never opens the answer: `<answer>` is written for it when the budget runs out, and the labels
    are scored there, exactly."""
    model = tiny_model(tokenizer, arch=arch).eval()
    classifier = GTAClassifier(model, tokenizer, PREFIX_LABELS)
    predictions = classifier.predict(ANSWER_TEXTS, mode="answer", batch_size=2, max_new_tokens=6)
    assert all(p.label in PREFIX_LABELS and p.generated_tokens == 6 for p in predictions)
    for text, prediction in zip(ANSWER_TEXTS, predictions, strict=True):
        probs, _, opened = naive_answer_probs(classifier, text, 6)
        assert not opened
        assert list(prediction.answer_probs.values()) == pytest.approx(probs, abs=1e-5)


def test_baseline_formats_score_their_answer_slot(tokenizer, caplog):
    """Without a guess block, guess mode scores the answer slot (after an empty think for think-answer); when the
    prompt opens the answer, labels decoding decodes nothing and scores the same slot."""
    model = tiny_model(tokenizer).eval()
    for tags, slot in [(("think", "answer"), "<think></think><answer>"), (("answer",), "<answer>")]:
        classifier = GTAClassifier(model, tokenizer, PREFIX_LABELS, GTAPromptTemplate(tags=tags))
        prompt = classifier._prompt_ids([TEXTS[0]])[0][0]
        expected = naive_slot_probs(model, prompt, answer_targets(tokenizer, slot, PREFIX_LABELS))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trl_gta.classifier"):  # adaptive mode says what it does
            adaptive = classifier.predict(TEXTS[:1], mode="adaptive", confidence_threshold=0.0)[0]
        guess = classifier.predict(TEXTS[:1], mode="guess")[0]
        assert list(guess.guess_probs.values()) == pytest.approx(expected, abs=1e-5)
        assert adaptive.guess_probs == pytest.approx(guess.guess_probs)
        assert (
            f"has no guess: adaptive mode reads the answer slot right after the prompt ({slot}{{label}}" in caplog.text
        )
        assert "keeps it when confident and decodes the reply otherwise" in caplog.text
    opened = GTAClassifier(
        model, tokenizer, PREFIX_LABELS, GTAPromptTemplate(tags=("answer",), response_prefix="<answer>")
    )
    guesses = opened.predict(TEXTS, mode="guess")
    answers = opened.predict(TEXTS, mode="answer")
    for guess, answer in zip(guesses, answers, strict=True):
        assert list(answer.answer_probs.values()) == pytest.approx(list(guess.guess_probs.values()), abs=1e-5)
        assert answer.generated_tokens == 0 and answer.raw_output == f"<answer>{answer.label}</answer>"

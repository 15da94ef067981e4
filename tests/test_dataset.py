"""`trl_gta.dataset` (GTA rows from labelled data) and `trl_gta.prompts` (templates, prompt tokenization, fitting)."""

import json
import logging

import pytest
from conftest import LABELS
from datasets import ClassLabel, Dataset, Features, Value

from trl_gta.dataset import build_gta_dataset, dataset_label_set
from trl_gta.prompts import DEFAULT_INSTRUCTION, PLACEHOLDERS, GTAPromptTemplate, TextFitter, tokenize_prompt
from trl_gta.reply_format import check_label_set

SORTED_LABELS = sorted(LABELS)  # ["alarm", "music", "weather"]


def spec(*tags: str) -> str:
    """The asked-for reply format: each tag's block holding its placeholder description."""
    return "".join(f"<{tag}>{PLACEHOLDERS[tag]}</{tag}>" for tag in tags)


GTA_SPEC = spec("guess", "think", "answer")


def string_dataset(raw_dataset) -> Dataset:
    """The raw dataset with plain string labels instead of a ClassLabel."""
    names = raw_dataset.features["label"].names
    return Dataset.from_dict({"text": raw_dataset["text"], "label": [names[i] for i in raw_dataset["label"]]})


def long_dataset(raw_dataset) -> Dataset:
    """Texts of growing length (row i repeats its text i + 1 times), string labels."""
    data = string_dataset(raw_dataset)
    texts = [" ".join([text] * (i + 1)) for i, text in enumerate(data["text"])]
    return Dataset.from_dict({"text": texts, "label": data["label"]})


def user_content(prompt) -> str:
    return prompt[-1]["content"]


# ---------------------------------------------------------------- build_gta_dataset: columns and label sets


def test_classlabel_ints_map_to_names_and_label_set_comes_from_features(raw_dataset):
    gta = build_gta_dataset(raw_dataset)
    names = raw_dataset.features["label"].names
    assert gta["label"] == [names[i] for i in raw_dataset["label"]]
    assert gta["label"][:4] == ["alarm", "alarm", "alarm", "weather"]
    assert gta.features["label"] == Value("string")
    # the label set keeps the ClassLabel order (not sorted), and label_id indexes into it
    assert isinstance(gta.features["label_id"], ClassLabel)
    assert gta.features["label_id"].names == LABELS
    assert gta["label_id"] == list(raw_dataset["label"])
    assert gta["text_truncated"] == [False] * len(raw_dataset)
    assert set(gta.column_names) == {"prompt", "label", "label_id", "text_truncated"}


def test_conversational_prompt_states_label_list_format_and_text(raw_dataset):
    gta = build_gta_dataset(raw_dataset)
    for row, text in zip(gta, raw_dataset["text"], strict=True):
        prompt = row["prompt"]
        assert isinstance(prompt, list) and len(prompt) == 1
        assert prompt[0]["role"] == "user"
        assert user_content(prompt) == (
            DEFAULT_INSTRUCTION.format(labels="alarm, weather, music", format=GTA_SPEC, text=text)
        )


def test_labels_none_with_string_labels_takes_sorted_unique_labels(raw_dataset):
    gta = build_gta_dataset(string_dataset(raw_dataset))
    assert gta.features["label_id"].names == SORTED_LABELS
    assert gta["label"] == string_dataset(raw_dataset)["label"]
    assert gta["label_id"] == [SORTED_LABELS.index(label) for label in gta["label"]]
    assert "Labels: alarm, music, weather." in user_content(gta[0]["prompt"])


def test_explicit_labels_define_order_and_spelling(raw_dataset):
    labels = ["Music", "ALARM", "weather", "timer"]  # a label absent from the data is kept
    gta = build_gta_dataset(raw_dataset, labels=labels)
    assert gta.features["label_id"].names == labels
    assert gta["label"][:4] == ["ALARM", "ALARM", "ALARM", "weather"]  # gold is the label set's spelling
    assert gta["label"][-1] == "Music"
    assert gta["label_id"] == [labels.index(label) for label in gta["label"]]
    assert "Labels: Music, ALARM, weather, timer." in user_content(gta[0]["prompt"])
    # the same for string labels that differ from the label set in case / punctuation
    data = Dataset.from_dict({"text": ["a", "b"], "label": [" alarm.", "Weather"]})
    assert build_gta_dataset(data, labels=["Alarm", "weather"])["label"] == ["Alarm", "weather"]


def test_integer_labels_without_names_index_the_given_labels():
    data = Dataset.from_dict({"text": ["a", "b", "c"], "label": [2, 0, 1]})
    gta = build_gta_dataset(data, labels=LABELS)
    assert gta["label"] == ["music", "alarm", "weather"]
    assert gta["label_id"] == [2, 0, 1]
    with pytest.raises(ValueError, match=r"row 1: label '<id 3>'"):
        build_gta_dataset(Dataset.from_dict({"text": ["a", "b"], "label": [0, 3]}), labels=LABELS)


def test_other_label_column_and_text_column(raw_dataset):
    data = raw_dataset.rename_columns({"text": "sentence", "label": "intent"})
    gta = build_gta_dataset(data, text_column="sentence", label_column="intent")
    assert gta.features["label_id"].names == LABELS
    assert gta["label"] == build_gta_dataset(raw_dataset)["label"]
    assert user_content(gta[4]["prompt"]).endswith("how hot is it outside")


def test_label_set_survives_select_and_shuffle(raw_dataset):
    gta = build_gta_dataset(raw_dataset)
    subset = gta.select([0, 1])  # only "alarm" rows
    assert set(subset["label"]) == {"alarm"}
    assert dataset_label_set(subset) == LABELS
    shuffled = gta.shuffle(seed=1).select(range(4))
    assert dataset_label_set(shuffled) == LABELS
    for row in shuffled:
        assert LABELS[row["label_id"]] == row["label"]
    # the label set of a GTA dataset wins over a ClassLabel `label` column (the GTA one has string labels)
    assert dataset_label_set(raw_dataset) == LABELS
    assert dataset_label_set(string_dataset(raw_dataset)) is None


def test_system_prompt_and_custom_instruction(raw_dataset):
    template = GTAPromptTemplate(
        system_prompt="You are a classifier.", instruction="Options: {labels}\n{text}", label_separator=" | "
    )
    prompt = build_gta_dataset(raw_dataset, template=template)[0]["prompt"]
    assert prompt == [
        {"role": "system", "content": "You are a classifier."},
        {"role": "user", "content": "Options: alarm | weather | music\nwake me up at seven"},
    ]


def test_response_prefix_prompt_is_a_templated_string(raw_dataset, tokenizer):
    template = GTAPromptTemplate(response_prefix="<guess>")
    gta = build_gta_dataset(raw_dataset, template=template, tokenizer=tokenizer)
    assert gta.features["prompt"] == Value("string")
    assert gta["response_prefix"] == ["<guess>"] * len(raw_dataset)
    for row, text in zip(gta, raw_dataset["text"], strict=True):
        messages = GTAPromptTemplate().messages(text, LABELS)
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert row["prompt"] == rendered + "<guess>"
        assert row["prompt"].endswith("<|im_start|>assistant\n<guess>")
    # no prefix: no prefix column
    assert "response_prefix" not in build_gta_dataset(raw_dataset, tokenizer=tokenizer).column_names


def test_response_prefix_without_tokenizer_raises(raw_dataset):
    with pytest.raises(ValueError, match="tokenizer"):
        build_gta_dataset(raw_dataset, template=GTAPromptTemplate(response_prefix="<guess>"))


# ---------------------------------------------------------------- build_gta_dataset: errors


def test_label_outside_the_set_names_the_row(raw_dataset):
    with pytest.raises(ValueError, match=r"row 3: label 'weather' is not in the label set") as error:
        build_gta_dataset(raw_dataset, labels=["alarm", "music"])
    message = str(error.value)
    assert "3 bad row(s)" in message and "row 4:" in message and "row 5:" in message
    assert "row 0:" not in message and "row 6:" not in message


def test_many_bad_rows_are_summarised():
    data = Dataset.from_dict({"text": ["t"] * 8, "label": ["x"] * 7 + ["a"]})
    with pytest.raises(ValueError, match=r"7 bad row\(s\).*\.\.\. and 2 more") as error:
        build_gta_dataset(data, labels=["a"])
    assert "row 4:" in str(error.value) and "row 5:" not in str(error.value)


@pytest.mark.parametrize("bad_text", ["", "   \n", None])
def test_empty_or_none_text_names_the_row(bad_text):
    data = Dataset.from_dict(
        {"text": ["ok", bad_text, "fine"], "label": ["a", "b", "a"]},
        features=Features({"text": Value("string"), "label": Value("string")}),
    )
    with pytest.raises(ValueError, match=r"the dataset: 1 bad row\(s\): row 1: empty or missing text\.$"):
        build_gta_dataset(data)


def test_missing_label_names_the_row():
    data = Dataset.from_dict(
        {"text": ["a", "b"], "label": ["x", None]},
        features=Features({"text": Value("string"), "label": Value("string")}),
    )
    with pytest.raises(ValueError, match=r"row 1: missing label"):
        build_gta_dataset(data)
    unlabelled = Dataset.from_dict(
        {"text": ["a", "b"], "label": [0, -1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=LABELS)}),
    )
    with pytest.raises(ValueError, match=r"row 1: missing label"):
        build_gta_dataset(unlabelled)


@pytest.mark.parametrize("kwargs, missing", [({"text_column": "sentence"}, "sentence"), ({"label_column": "y"}, "y")])
def test_missing_column_raises(raw_dataset, kwargs, missing):
    with pytest.raises(ValueError, match=rf"\['{missing}'\] not in the dataset"):
        build_gta_dataset(raw_dataset, **kwargs)


def test_labels_that_normalise_the_same_raise(raw_dataset):
    with pytest.raises(ValueError, match=r"'Alarm' and 'alarm!' normalise to the same string 'alarm'"):
        build_gta_dataset(raw_dataset, labels=["Alarm", "weather", "music", "alarm!"])
    data = Dataset.from_dict({"text": ["a", "b"], "label": ["Alarm", "alarm!"]})
    with pytest.raises(ValueError, match=r"normalise to the same string 'alarm'"):
        build_gta_dataset(data)


def test_empty_label_set_raises(raw_dataset):
    with pytest.raises(ValueError, match="label set is empty"):
        build_gta_dataset(raw_dataset, labels=[])
    empty = Dataset.from_dict(
        {"text": [], "label": []}, features=Features({"text": Value("string"), "label": Value("string")})
    )
    with pytest.raises(ValueError, match="label set is empty"):
        build_gta_dataset(empty)


def test_check_label_set():
    assert check_label_set(("b", "a", 3)) == ["b", "a", "3"]
    with pytest.raises(ValueError, match="empty"):
        check_label_set([])
    with pytest.raises(ValueError, match=r"'\.\.\.' is empty after normalisation"):
        check_label_set(["a", "..."])
    with pytest.raises(ValueError, match=r"'Turn on' and 'turn  ON\.' normalise"):
        check_label_set(["Turn on", "off", "turn  ON."])


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize("response_prefix", ["", "<guess>"])
@pytest.mark.parametrize("slack", [0, 1, 5, 20, 40])
def test_max_prompt_tokens_cuts_long_texts_only(raw_dataset, tokenizer, response_prefix, slack, caplog):
    data = long_dataset(raw_dataset)
    template = GTAPromptTemplate(response_prefix=response_prefix)
    overhead = TextFitter(template, SORTED_LABELS, tokenizer, 10**6).overhead
    limit = overhead + slack
    full = build_gta_dataset(data, template=template, tokenizer=tokenizer)
    full_lengths = [len(tokenize_prompt(tokenizer, prompt)) for prompt in full["prompt"]]
    expected_cut = [length > limit for length in full_lengths]
    assert any(expected_cut)

    with caplog.at_level(logging.WARNING, logger="trl_gta.dataset"):
        gta = build_gta_dataset(data, template=template, tokenizer=tokenizer, max_prompt_tokens=limit)
    assert gta["text_truncated"] == expected_cut
    assert f"Truncated {sum(expected_cut)} of {len(data)} texts" in caplog.text
    assert gta["label"] == full["label"]
    empty_prompt = template.prompt("", SORTED_LABELS, tokenizer)
    head = empty_prompt if response_prefix == "" else None
    before, after = template.prompt("@TEXT@", SORTED_LABELS, tokenizer).split("@TEXT@") if head is None else ("", "")
    for i, (prompt, full_prompt, text) in enumerate(zip(gta["prompt"], full["prompt"], data["text"], strict=True)):
        length = len(tokenize_prompt(tokenizer, prompt))
        assert length <= limit
        if not expected_cut[i]:
            assert prompt == full_prompt
            continue
        assert length >= limit - 3  # cut only as much as needed
        # the instructions and the label list are intact; the text is a prefix of the original
        if head is not None:
            assert user_content(prompt).startswith(user_content(head))
            kept = user_content(prompt)[len(user_content(head)) :]
        else:
            assert prompt.startswith(before) and prompt.endswith(after)
            kept = prompt[len(before) : len(prompt) - len(after)]
        assert text.startswith(kept) and len(kept) < len(text)
        if slack >= 20:
            assert len(kept) > 0


def test_max_prompt_tokens_without_cuts_changes_nothing(raw_dataset, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="trl_gta.dataset"):
        gta = build_gta_dataset(raw_dataset, tokenizer=tokenizer, max_prompt_tokens=1000)
    assert gta["prompt"] == build_gta_dataset(raw_dataset)["prompt"]
    assert not any(gta["text_truncated"])
    assert "Truncated" not in caplog.text


def test_limit_below_the_instructions_raises(raw_dataset, tokenizer):
    overhead = TextFitter(GTAPromptTemplate(), LABELS, tokenizer, 10**6).overhead
    with pytest.raises(ValueError, match=rf"alone take {overhead} tokens, more than max_prompt_tokens={overhead - 1}"):
        build_gta_dataset(raw_dataset, tokenizer=tokenizer, max_prompt_tokens=overhead - 1)
    gta = build_gta_dataset(raw_dataset, tokenizer=tokenizer, max_prompt_tokens=overhead)  # exactly enough: texts go
    assert all(gta["text_truncated"])
    assert gta["prompt"] == [GTAPromptTemplate().messages("", LABELS)] * len(raw_dataset)


def test_max_prompt_tokens_without_tokenizer_raises(raw_dataset):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        build_gta_dataset(raw_dataset, max_prompt_tokens=100)


def test_text_fitter_directly(tokenizer):
    template = GTAPromptTemplate()
    limit = TextFitter(template, LABELS, tokenizer, 10**6).overhead + 12
    fitter = TextFitter(template, LABELS, tokenizer, limit)
    assert fitter("play some jazz") == ("play some jazz", False)
    long_text = "turn up the music " * 20
    cut, was_cut = fitter(long_text)
    assert was_cut and long_text.startswith(cut) and 0 < len(cut) < len(long_text)
    assert len(tokenize_prompt(tokenizer, template.prompt(cut, LABELS))) <= limit


@pytest.mark.parametrize("response_prefix", ["", "<guess>"])
def test_text_fitter_every_limit_near_the_text_length(tokenizer, response_prefix):
    """Around the text's own length the parts' token counts do not simply add up ("set" vs " set")."""
    template = GTAPromptTemplate(response_prefix=response_prefix)
    overhead = TextFitter(template, LABELS, tokenizer, 10**6).overhead
    assert len(tokenizer.tokenize("set")) < len(tokenizer.tokenize(" set"))
    for text in ["set an alarm for six am", "turn up the music", "wake me up at seven please"]:
        full = len(tokenize_prompt(tokenizer, template.prompt(text, LABELS, tokenizer)))
        for limit in range(overhead, full + 3):
            cut, was_cut = TextFitter(template, LABELS, tokenizer, limit)(text)
            length = len(tokenize_prompt(tokenizer, template.prompt(cut, LABELS, tokenizer)))
            assert length <= limit, (text, limit)
            assert was_cut is (full > limit), (text, limit)
            if was_cut:
                assert length >= limit - 1 and text.startswith(cut) and len(cut) < len(text), (text, limit, cut)
            else:
                assert cut == text


def test_text_fitter_never_splits_a_character(tokenizer):
    template = GTAPromptTemplate()
    text = "café 🎉 " * 10
    overhead = TextFitter(template, LABELS, tokenizer, 10**6).overhead
    for limit in range(overhead, overhead + 40):
        cut, _ = TextFitter(template, LABELS, tokenizer, limit)(text)
        assert text.startswith(cut), (limit, cut)


# ---------------------------------------------------------------- templates


def test_template_validation():
    with pytest.raises(ValueError, match=r"\{text\}"):
        GTAPromptTemplate(instruction="Labels: {labels}. Reply as {format}")
    with pytest.raises(ValueError, match=r"\{labels\}"):
        GTAPromptTemplate(instruction="Classify {text}")
    with pytest.raises(ValueError, match="response_prefix '<think>' must be the start"):
        GTAPromptTemplate(response_prefix="<think>")
    with pytest.raises(ValueError, match="must be the start"):
        GTAPromptTemplate(response_prefix=" <guess>")
    with pytest.raises(ValueError, match="must be the start"):
        GTAPromptTemplate.for_format("think_answer", response_prefix="<guess>")
    assert GTAPromptTemplate.for_format("think_answer", response_prefix="<think>").response_prefix == "<think>"
    assert GTAPromptTemplate(instruction="{labels} {text}").instruction == "{labels} {text}"  # {format} is optional


def test_for_format():
    template = GTAPromptTemplate.for_format("think_answer")
    assert template.tags == ("think", "answer")
    assert template.format_spec() == spec("think", "answer")
    content = template.messages("hello", LABELS)[0]["content"]
    assert "<guess>" not in content and f"Reply as {spec('think', 'answer')}\n" in content
    assert GTAPromptTemplate.for_format("answer").format_spec() == spec("answer")
    assert GTAPromptTemplate().format_spec() == GTA_SPEC
    assert GTAPromptTemplate.for_format() == GTAPromptTemplate()
    assert GTAPromptTemplate.for_format("gta", system_prompt="s").system_prompt == "s"
    with pytest.raises(ValueError, match="Unknown prompt_format 'guess'"):
        GTAPromptTemplate.for_format("guess")


def test_template_to_dict_from_dict_round_trip():
    template = GTAPromptTemplate(
        tags=["think", "answer"],
        instruction="L={labels} F={format} T={text}",
        system_prompt="sys",
        response_prefix="<think>",
        label_separator="; ",
        chat_template_kwargs={"enable_thinking": False},
    )
    assert template.tags == ("think", "answer")  # lists become tuples
    data = json.loads(json.dumps(template.to_dict()))
    assert data["tags"] == ["think", "answer"]
    restored = GTAPromptTemplate.from_dict(data)
    assert restored == template
    assert restored.messages("x", ["a", "b"]) == template.messages("x", ["a", "b"])
    assert GTAPromptTemplate.from_dict(GTAPromptTemplate().to_dict()) == GTAPromptTemplate()
    assert GTAPromptTemplate.from_dict({}) == GTAPromptTemplate()


def test_default_instruction_uses_all_placeholders():
    content = GTAPromptTemplate().messages("the text", ["x", "y"])[0]["content"]
    assert content == DEFAULT_INSTRUCTION.format(
        labels="x, y",
        format=GTA_SPEC,
        text="the text",
    )


def test_tokenize_prompt_matches_the_rendered_chat_template(tokenizer):
    messages = GTAPromptTemplate().messages("play some jazz", LABELS)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenize_prompt(tokenizer, messages)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert ids == tokenizer(rendered)["input_ids"]
    assert tokenizer.decode(ids) == rendered
    assert tokenize_prompt(tokenizer, rendered + "<guess>") == tokenizer(rendered + "<guess>")["input_ids"]
    assert tokenizer.decode(tokenize_prompt(tokenizer, rendered + "<guess>")).endswith("assistant\n<guess>")

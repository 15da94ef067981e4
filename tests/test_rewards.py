"""Rewards (`trl_gta.rewards`) and the parsing they rest on (`trl_gta.reply_format`), on a table of completions."""

import pytest

from trl_gta.reply_format import (
    GTAOutput,
    block_span,
    completion_text,
    extract_block,
    is_well_formed,
    match_label,
    normalize_label,
    parse_gta,
)
from trl_gta.rewards import (
    answer_accuracy_reward,
    answer_format_reward,
    format_reward_for,
    full_responses,
    gta_format_reward,
    make_format_reward,
    make_valid_label_reward,
    think_answer_format_reward,
)

GOOD = "<guess>alarm</guess><think>because</think><answer>alarm</answer>"

# (id, completion text, gold label, gta format reward, answer accuracy reward, think/answer format reward)
CASES = [
    ("well_formed", GOOD, "alarm", 1.0, 1.0, 0.0),
    (
        "white_space_between_and_around",
        "\n  <guess> alarm </guess>\n\n<think>\tbecause\n</think> \n<answer>\nalarm\n</answer>  \n",
        "alarm",
        1.0,
        1.0,
        0.0,
    ),
    ("missing_guess", "<think>because</think><answer>alarm</answer>", "alarm", 0.0, 1.0, 1.0),
    ("missing_think", "<guess>alarm</guess><answer>alarm</answer>", "alarm", 0.0, 1.0, 0.0),
    ("missing_answer", "<guess>alarm</guess><think>because</think>", "alarm", 0.0, 0.0, 0.0),
    ("wrong_order", "<think>because</think><guess>alarm</guess><answer>alarm</answer>", "alarm", 0.0, 1.0, 0.0),
    ("answer_first", "<answer>alarm</answer><guess>alarm</guess><think>because</think>", "alarm", 0.0, 1.0, 0.0),
    ("duplicated_guess", "<guess>alarm</guess>" + GOOD, "alarm", 0.0, 1.0, 0.0),
    (
        "duplicated_think",
        "<guess>alarm</guess><think>a</think><think>b</think><answer>alarm</answer>",
        "alarm",
        0.0,
        1.0,
        0.0,
    ),
    ("duplicated_answer", GOOD + "<answer>alarm</answer>", "alarm", 0.0, 0.0, 0.0),
    ("two_different_answers", GOOD + "<answer>music</answer>", "alarm", 0.0, 0.0, 0.0),
    (
        "nested_guess",
        "<guess><guess>alarm</guess></guess><think>x</think><answer>alarm</answer>",
        "alarm",
        0.0,
        1.0,
        0.0,
    ),
    (
        "answer_nested_in_think",
        "<guess>alarm</guess><think>x<answer>alarm</answer></think><answer>alarm</answer>",
        "alarm",
        0.0,
        0.0,
        0.0,
    ),
    (
        "foreign_tag_inside_think",
        "<guess>alarm</guess><think>a <b>b</b></think><answer>alarm</answer>",
        "alarm",
        1.0,
        1.0,
        0.0,
    ),
    ("extra_tag_after", GOOD + "<extra/>", "alarm", 0.0, 1.0, 0.0),
    (
        "text_between_blocks",
        "<guess>alarm</guess> so <think>because</think><answer>alarm</answer>",
        "alarm",
        0.0,
        1.0,
        0.0,
    ),
    ("text_before", "Sure! " + GOOD, "alarm", 0.0, 1.0, 0.0),
    ("text_after", GOOD + " done", "alarm", 0.0, 1.0, 0.0),
    ("unclosed_answer", "<guess>alarm</guess><think>because</think><answer>alarm", "alarm", 0.0, 0.0, 0.0),
    ("unclosed_guess", "<guess>alarm<think>because</think><answer>alarm</answer>", "alarm", 0.0, 1.0, 0.0),
    ("unclosed_think", "<guess>alarm</guess><think>because<answer>alarm</answer>", "alarm", 0.0, 1.0, 0.0),
    ("closing_tag_only", "alarm</guess><think>because</think><answer>alarm</answer>", "alarm", 0.0, 1.0, 0.0),
    ("upper_case_tags", "<GUESS>alarm</GUESS><THINK>x</THINK><ANSWER>alarm</ANSWER>", "alarm", 0.0, 0.0, 0.0),
    ("empty_string", "", "alarm", 0.0, 0.0, 0.0),
    ("plain_label", "alarm", "alarm", 0.0, 0.0, 0.0),
    ("wrong_label", "<guess>alarm</guess><think>because</think><answer>music</answer>", "alarm", 1.0, 0.0, 0.0),
    ("empty_answer", "<guess>alarm</guess><think>because</think><answer></answer>", "alarm", 1.0, 0.0, 0.0),
    ("label_case_punct_space", "<guess>x</guess><think>y</think><answer>  Alarm. </answer>", "alarm", 1.0, 1.0, 0.0),
    ("label_shouting", "<guess>x</guess><think>y</think><answer>ALARM!!</answer>", "alarm", 1.0, 1.0, 0.0),
    ("gold_label_variant", GOOD, " Alarm ", 1.0, 1.0, 0.0),
    ("label_superstring", "<guess>x</guess><think>y</think><answer>alarm clock</answer>", "alarm", 1.0, 0.0, 0.0),
    ("label_substring", "<guess>x</guess><think>y</think><answer>alar</answer>", "alarm", 1.0, 0.0, 0.0),
    ("label_split_by_space", "<guess>x</guess><think>y</think><answer>al arm</answer>", "alarm", 1.0, 0.0, 0.0),
    (
        "multi_word_label",
        "<guess>x</guess><think>y</think><answer>Turn  ON\nlights.</answer>",
        "turn on lights",
        1.0,
        1.0,
        0.0,
    ),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("name, text, gold, gta_format, accuracy, think_answer_format", CASES, ids=IDS)
def test_rewards_on_plain_string_completions(name, text, gold, gta_format, accuracy, think_answer_format):
    assert gta_format_reward([text]) == [gta_format]
    assert answer_accuracy_reward([text], label=[gold]) == [accuracy]
    assert think_answer_format_reward([text]) == [think_answer_format]
    assert make_format_reward(("think", "answer"))([text]) == [think_answer_format]
    assert parse_gta(text).is_well_formed is (gta_format == 1.0)


@pytest.mark.parametrize("name, text, gold, gta_format, accuracy, think_answer_format", CASES, ids=IDS)
def test_rewards_on_chat_completions(name, text, gold, gta_format, accuracy, think_answer_format):
    chat = [{"role": "assistant", "content": text}]
    assert gta_format_reward([chat]) == [gta_format]
    assert answer_accuracy_reward([chat], label=[gold]) == [accuracy]
    assert think_answer_format_reward([chat]) == [think_answer_format]


def test_rewards_score_a_batch_in_order_with_extra_kwargs():
    texts = [case[1] for case in CASES]
    golds = [case[2] for case in CASES]
    extra = {"prompt": ["p"] * len(texts), "label_id": [0] * len(texts), "trainer_state": None}
    assert gta_format_reward(texts, **extra) == [case[3] for case in CASES]
    assert answer_accuracy_reward(texts, label=golds, **extra) == [case[4] for case in CASES]


def test_think_answer_format_reward():
    reward = make_format_reward(("think", "answer"))
    assert reward.__name__ == "think_answer_format_reward"
    texts = [
        "<think>because</think><answer>alarm</answer>",
        " <think>because</think>\n<answer>alarm</answer>\n",
        GOOD,
        "<answer>alarm</answer><think>because</think>",
        "<think>because</think>",
        "<think>a</think><think>b</think><answer>alarm</answer>",
    ]
    assert reward(texts) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert answer_format_reward(["<answer>x</answer>", " <answer> x </answer> ", GOOD, ""]) == [1.0, 1.0, 0.0, 0.0]


def test_format_reward_for():
    assert format_reward_for(("guess", "think", "answer")) is gta_format_reward
    assert format_reward_for(["think", "answer"]) is think_answer_format_reward
    assert format_reward_for(("answer",)) is answer_format_reward
    custom = format_reward_for(("answer", "guess"))
    assert custom.__name__ == "answer_guess_format_reward"
    assert custom(["<answer>a</answer><guess>b</guess>", GOOD, "<guess>b</guess><answer>a</answer>"]) == [
        1.0,
        0.0,
        0.0,
    ]
    assert make_format_reward(("guess",), name="my_reward").__name__ == "my_reward"


@pytest.mark.parametrize(
    "prefix, completion, gta_format, accuracy",
    [
        ("<guess>", "alarm</guess><think>because</think><answer>alarm</answer>", 1.0, 1.0),
        ("<guess>", " alarm </guess>\n<think>because</think>\n<answer>Alarm.</answer>", 1.0, 1.0),
        ("<guess>", GOOD, 0.0, 1.0),  # the completion re-opened the guess: two guess blocks
        ("<guess>", "alarm</guess><think>because</think>", 0.0, 0.0),
        ("<guess>", "", 0.0, 0.0),
        ("", "alarm</guess><think>because</think><answer>alarm</answer>", 0.0, 1.0),
        (None, GOOD, 1.0, 1.0),  # a missing prefix value counts as no prefix
        ("<guess>alarm</guess><think>", "because</think><answer>music</answer>", 1.0, 0.0),
    ],
)
def test_response_prefix_is_scored_with_the_completion(prefix, completion, gta_format, accuracy):
    assert gta_format_reward([completion], response_prefix=[prefix]) == [gta_format]
    assert answer_accuracy_reward([completion], label=["alarm"], response_prefix=[prefix]) == [accuracy]
    chat = [{"role": "assistant", "content": completion}]
    assert gta_format_reward([chat], response_prefix=[prefix]) == [gta_format]


def test_response_prefix_column_is_per_row():
    completions = ["alarm</guess><think>x</think><answer>alarm</answer>", GOOD]
    assert gta_format_reward(completions, response_prefix=["<guess>", ""]) == [1.0, 1.0]
    assert gta_format_reward(completions, response_prefix=["", "<guess>"]) == [0.0, 0.0]
    assert gta_format_reward(completions) == [0.0, 1.0]
    assert full_responses(completions, ["<guess>", None]) == ["<guess>" + completions[0], GOOD]
    with pytest.raises(ValueError):  # a prefix column of the wrong length must not be silently truncated
        gta_format_reward(completions, response_prefix=["<guess>"])
    with pytest.raises(ValueError):
        answer_accuracy_reward(completions, label=["alarm"])


@pytest.mark.parametrize(
    "completion, expected_text",
    [
        ([{"role": "assistant", "content": GOOD}], GOOD),
        ({"role": "assistant", "content": GOOD}, GOOD),
        (
            [{"role": "assistant", "content": "<guess>alarm</guess>"}, {"role": "assistant", "content": GOOD[20:]}],
            GOOD,
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": GOOD[:20]}, {"type": "text", "text": GOOD[20:]}],
                }
            ],
            GOOD,
        ),
        ([{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": GOOD}, "junk", None]}], GOOD),
        ([{"role": "assistant", "content": None}], ""),
        ([{"role": "assistant", "content": 42}], ""),
        ([{"role": "assistant", "content": {"text": GOOD}}], ""),
        ([{"role": "assistant"}], ""),
        ([None, "a string", 3, {"role": "assistant", "content": GOOD}], GOOD),
        ([], ""),
    ],
)
def test_completion_text_and_malformed_chat_messages(completion, expected_text):
    assert completion_text(completion) == expected_text
    expected_format = float(expected_text == GOOD)
    assert gta_format_reward([completion]) == [expected_format]
    assert answer_accuracy_reward([completion], label=["alarm"]) == [expected_format]
    assert make_format_reward(("think", "answer"))([completion]) == [0.0]


def test_non_string_gold_label_is_compared_as_a_string():
    text = "<guess>1</guess><think>x</think><answer>1</answer>"
    assert answer_accuracy_reward([text, text], label=[1, 2]) == [1.0, 0.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, GTAOutput(guess="alarm", think="because", answer="alarm", is_well_formed=True)),
        (
            "  <guess>  Alarm \n</guess>\n<think> a\nb </think> <answer> music. </answer> ",
            GTAOutput(guess="Alarm", think="a\nb", answer="music.", is_well_formed=True),
        ),
        (
            "<think>because</think><answer>alarm</answer>",
            GTAOutput(guess=None, think="because", answer="alarm", is_well_formed=False),
        ),
        (
            "<guess>alarm</guess><think>because</think>",
            GTAOutput(guess="alarm", think="because", answer=None, is_well_formed=False),
        ),
        (  # several answer blocks: the answer does not count; the guess is the first block
            "<guess>a</guess><guess>b</guess><think>t</think><answer>x</answer><answer>y</answer>",
            GTAOutput(guess="a", think="t", answer=None, is_well_formed=False),
        ),
        (
            "<guess>alarm<think>because</think><answer>music",
            GTAOutput(guess=None, think="because", answer=None, is_well_formed=False),
        ),
        (
            "<think>x</think><guess>music</guess><answer>alarm</answer>",
            GTAOutput(guess="music", think="x", answer="alarm", is_well_formed=False),
        ),
        ("", GTAOutput(guess=None, think=None, answer=None, is_well_formed=False)),
        ("no tags at all", GTAOutput(guess=None, think=None, answer=None, is_well_formed=False)),
        (
            "<guess></guess><think></think><answer></answer>",
            GTAOutput(guess="", think="", answer="", is_well_formed=True),
        ),
        (
            "</guess><guess>weather</guess><think>x</think><answer>weather</answer>",
            GTAOutput(guess="weather", think="x", answer="weather", is_well_formed=False),
        ),
        ("<guess>café 🎉</guess>", GTAOutput(guess="café 🎉", think=None, answer=None, is_well_formed=False)),
    ],
)
def test_parse_gta(text, expected):
    assert parse_gta(text) == expected


def test_extract_block_and_block_span():
    text = "pre <guess>a</guess> mid <guess>b</guess>"
    assert extract_block(text, "guess") == "a"
    assert extract_block(text, "guess", unique=True) is None
    assert extract_block("<answer> x </answer>", "answer", unique=True) == "x"
    assert extract_block("<answer>x", "answer") is None
    assert extract_block("</answer>x<answer>", "answer") is None
    assert block_span(text, "guess") == (4, 20)
    assert text[slice(*block_span(text, "guess"))] == "<guess>a</guess>"
    assert block_span("<guess>a", "guess") is None
    assert block_span("</guess><guess>", "guess") is None
    assert block_span("x<guess></guess>y", "guess") == (1, 16)


def test_is_well_formed_with_custom_tags():
    assert is_well_formed("<a>1</a> <b>2</b>", ("a", "b"))
    assert not is_well_formed("<b>2</b><a>1</a>", ("a", "b"))
    assert not is_well_formed("<a>1</a><b>2</b><c>3</c>", ("a", "b"))
    assert is_well_formed("<a>1</a><b>2</b><c>3</c>", ("a", "b", "c"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  Alarm. ", "alarm"),
        ("ALARM", "alarm"),
        ("alarm!?", "alarm"),
        ("\"'alarm'\"", "alarm"),
        ("  Turn   ON\n\tlights. ", "turn on lights"),
        ("e-mail", "e-mail"),
        ("Hello,   World!", "hello, world"),
        ("Straße", "strasse"),  # case folding, not just lower()
        ("...", ""),
        ("", ""),
        ("   ", ""),
        ("Café", "café"),
    ],
)
def test_normalize_label(text, expected):
    assert normalize_label(text) == expected


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("  Alarm. ", ["alarm", "weather", "music"], "alarm"),
        ("WEATHER", ["alarm", "weather", "music"], "weather"),
        ("weather", ["Alarm", "Weather"], "Weather"),  # returns the label's own spelling
        ("turn on  lights", ("turn on lights", "turn off lights"), "turn on lights"),
        ("alarms", ["alarm", "weather"], None),
        ("alarm weather", ["alarm", "weather"], None),
        ("", ["alarm", "weather"], None),
        (None, ["alarm", "weather"], None),
        ("alarm", [], None),
    ],
)
def test_match_label(text, labels, expected):
    assert match_label(text, labels) == expected


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "<",
        "<guess>",
        "</guess>",
        "<answer></answer></answer><answer>",
        "<guess>" * 50,
        "\x00<guess>\x00</guess>",
        [{"role": "assistant", "content": None}],
        [{"role": "assistant", "content": b"<answer>alarm</answer>"}],
        [{"content": 1.5}],
        [{}],
        [None],
        {"content": None},
    ],
)
def test_nothing_raises_on_malformed_completions(completion):
    for reward in (gta_format_reward, think_answer_format_reward, answer_format_reward, format_reward_for(("x",))):
        assert reward([completion]) == [0.0]
    assert answer_accuracy_reward([completion], label=["alarm"]) == [0.0]
    assert answer_accuracy_reward([completion], label=["alarm"], response_prefix=["<guess>"]) == [0.0]
    output = parse_gta(completion_text(completion))
    assert output.answer is None and not output.is_well_formed


def test_valid_label_reward_pays_for_any_label_of_the_set():
    """Any label of the set earns 1 (normalised, right or wrong); text outside it, a missing or repeated answer 0."""
    reward = make_valid_label_reward(["alarm", "weather", "music"])
    completions = [
        GOOD,
        "<think>x</think><answer> Weather. </answer>",
        "<answer>final label</answer>",
        "<guess>alarm</guess><think>The text is about.</think><answer>The text is about.</answer>",
        "<guess>alarm</guess><think>because</think>",
        "<answer>alarm</answer><answer>alarm</answer>",
        [{"role": "assistant", "content": "<answer>music</answer>"}],
    ]
    assert reward(completions, label=["music"] * 7, trainer_state=None) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert reward.__name__ == "valid_label_reward"
    assert reward(["alarm</guess><think>t</think><answer>alarm</answer>"], response_prefix=["<guess>"]) == [1.0]


def test_valid_label_reward_reads_the_label_set_per_row():
    reward = make_valid_label_reward()
    completions = ["<answer>sport</answer>", "<answer>sport</answer>"]
    assert reward(completions, label_set=[["sport", "tech"], ["alarm", "music"]]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="no label set"):
        reward(completions)

"""`trl_gta.spans` on real byte-level BPE tokenisations, where the GTA tags are split over several tokens.

The expected span is computed independently of the package from the tokenizer's character offsets: a token belongs
to the guess span exactly when its characters intersect the `<guess>..</guess>` block of prefix + completion.
"""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trl_gta.spans import guess_span_mask, guess_token_span

OPEN, CLOSE = "<guess>", "</guess>"


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected_span(tokenizer, text: str, prefix: str = "") -> tuple[int, int] | None:
    """Oracle from character offsets (in completion coordinates; a block opened in the prefix starts before 0)."""
    full = prefix + text
    open_at = full.find(OPEN)
    close_at = full.find(CLOSE, open_at + len(OPEN)) if open_at >= 0 else -1
    if close_at < 0:
        return None
    lo, hi = open_at - len(prefix), close_at + len(CLOSE) - len(prefix)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [k for k, (a, b) in enumerate(offsets) if a < hi and b > lo]
    return min(inside), max(inside) + 1


def check_span(tokenizer, text: str, prefix: str = "") -> tuple[list[int], tuple[int, int]]:
    ids = encode(tokenizer, text)
    assert tokenizer.decode(ids) == text  # byte-level BPE round-trips
    span = guess_token_span(ids, tokenizer, prefix)
    assert span == expected_span(tokenizer, text, prefix)
    return ids, span


@pytest.fixture(scope="module")
def merging_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE without pre-tokenisation split, trained so that tokens merge across the guess block's edges."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [f"ok<guess>{label}</guess><think>so</think><answer>{label}</answer>" for label in ("alarm", "music")]
    bpe.train_from_iterator(corpus * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>")


def test_tags_are_not_tokens_of_their_own(tokenizer):
    for tag in (OPEN, CLOSE, "<think>", "</think>", "<answer>"):
        assert len(tokenizer.tokenize(tag)) > 1


def test_well_formed_completion_and_straddling_close_token(tokenizer):
    text = "<guess>alarm</guess><think>because</think><answer>alarm</answer>"
    ids, span = check_span(tokenizer, text)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert span[0] == 0
    # the token after `</`, `guess` is `><`: it carries the guess's `>` and the think block's `<`
    assert pieces[span[1] - 1] == "><"
    assert tokenizer.decode(ids[span[0] : span[1]]) == "<guess>alarm</guess><"
    assert "guess" not in tokenizer.decode(ids[span[1] :])
    assert tokenizer.decode(ids[span[1] :]) == "think>because</think><answer>alarm</answer>"


@pytest.mark.parametrize(
    "text",
    [
        "<guess>alarm</guess><think>because</think><answer>alarm</answer>",
        "  <guess> weather </guess>\n<think>because</think>\n<answer>weather</answer>",
        "Sure, here it is: <guess>music</guess> <think>because</think><answer>music</answer>",
        "<guess>alarm</guess>",
        "<guess></guess><think>x</think>",
        "<guess>a</guess><think>b</think><guess>c</guess>",  # only the first block
        "<think>x</think><guess>weather</guess><answer>weather</answer>",
        "<guess>turn up the music please</guess>trailing",
    ],
)
def test_span_covers_exactly_the_guess_block(tokenizer, text):
    ids, (start, end) = check_span(tokenizer, text)
    block_start = text.find(OPEN)
    block_end = text.find(CLOSE) + len(CLOSE)
    before = tokenizer.decode(ids[:start])
    inside = tokenizer.decode(ids[start:end])
    after = tokenizer.decode(ids[end:])
    # tokens before and after carry no guess character
    assert len(before) <= block_start
    assert len(before) + len(inside) >= block_end
    # the span holds the block plus at most the characters of the edge tokens
    first, last = tokenizer.decode(ids[start : start + 1]), tokenizer.decode(ids[end - 1 : end])
    assert block_start - len(before) < len(first)
    assert len(before) + len(inside) - len(last) < block_end
    assert text[block_start:block_end] in inside
    assert before + inside + after == text


def test_straddling_tokens_at_both_edges_are_inside(merging_tokenizer):
    text = "ok<guess>alarm</guess><think>so</think><answer>alarm</answer>"
    assert len(merging_tokenizer.tokenize(OPEN)) > 1
    ids, (start, end) = check_span(merging_tokenizer, text)
    offsets = merging_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    block_start, block_end = text.find(OPEN), text.find(CLOSE) + len(CLOSE)
    # one token spans "ok" and the start of `<guess>`, one spans the end of `</guess>` and following text
    first = next(k for k, (a, b) in enumerate(offsets) if a < block_start < b)
    last = next(k for k, (a, b) in enumerate(offsets) if a < block_end < b)
    assert (start, end) == (first, last + 1) == (0, last + 1)
    assert end < len(ids) and "guess" not in merging_tokenizer.decode(ids[end:])


@pytest.mark.parametrize(
    "text",
    [
        "ok<guess>music</guess><think>so</think><answer>music</answer>",  # one token holds the whole block
        "ok<guess>alarm</guess>!",
        "<guess>weather</guess><think>so</think>",
        "okok<guess>alarm</guess><think>so</think><answer>alarm</answer><guess>music</guess>",
    ],
)
def test_merging_tokenizer_against_offsets(merging_tokenizer, text):
    ids, (start, end) = check_span(merging_tokenizer, text)
    inside = merging_tokenizer.decode(ids[start:end])
    assert text[text.find(OPEN) : text.find(CLOSE) + len(CLOSE)] in inside
    assert len(merging_tokenizer.decode(ids[:start])) <= text.find(OPEN)  # no guess character before
    assert len(merging_tokenizer.decode(ids[:end])) >= text.find(CLOSE) + len(CLOSE)
    assert len(merging_tokenizer.decode(ids[: end - 1])) < text.find(CLOSE) + len(CLOSE)


@pytest.mark.parametrize(
    "prefix, text",
    [
        ("<guess>", "alarm</guess><think>because</think><answer>alarm</answer>"),
        ("<guess>", " weather </guess>\n<think>x</think>"),
        ("<guess>", "</guess><think>x</think>"),
        ("<guess>", "é🎉</guess><think>x</think>"),
        ("<gu", "ess>music</guess><think>x</think>"),
    ],
)
def test_response_prefix_span_starts_at_token_zero(tokenizer, prefix, text):
    ids, (start, end) = check_span(tokenizer, text, prefix)
    assert start == 0
    closing = text.find(CLOSE) + len(CLOSE)
    assert len(tokenizer.decode(ids[:end])) >= closing > len(tokenizer.decode(ids[: end - 1]))
    # without the prefix the same completion has no (complete) guess block
    assert guess_token_span(ids, tokenizer) is None


@pytest.mark.parametrize(
    "prefix, text",
    [
        ("", "<think>x</think><answer>alarm</answer>"),
        ("", "<guess>alarm<think>x</think><answer>alarm</answer>"),
        ("", "<guess>alarm"),
        ("", "alarm</guess><think>x</think>"),
        ("", "</guess><guess>alarm"),
        ("", ""),
        ("<guess>", "alarm"),
        ("<guess>", ""),
        ("<guess>", "alarm</guess"),
    ],
)
def test_no_complete_guess_block_gives_none_and_a_zero_row(tokenizer, prefix, text):
    ids = encode(tokenizer, text)
    assert guess_token_span(ids, tokenizer, prefix) is None
    if ids:
        mask = guess_span_mask(torch.tensor([ids]), [len(ids)], tokenizer, [prefix])
        assert mask.tolist() == [[0] * len(ids)]


@pytest.mark.parametrize(
    "text",
    [
        "café 🎉 <guess>alarm</guess><think>x</think>",
        "🎉<guess>alarm</guess><think>x</think>",
        "é🎉 café<guess>🎉 café</guess><think>déjà vu</think><answer>🎉</answer>",
        "<guess>naïve 🎵 music</guess>🎉🎉",
        "日本語のテキスト <guess>天気</guess><think>雨</think>",
    ],
)
def test_non_ascii_text_before_and_inside_the_guess(tokenizer, text):
    ids, (start, end) = check_span(tokenizer, text)
    assert "\ufffd" in [tokenizer.decode([i]) for i in ids]  # multi-byte characters really are split into bytes
    before = tokenizer.decode(ids[:start])
    inside = tokenizer.decode(ids[start:end])
    assert before + inside == text[: len(before) + len(inside)]
    assert inside.startswith(OPEN)
    assert text[text.find(OPEN) : text.find(CLOSE) + len(CLOSE)] in inside


def test_special_tokens_in_the_completion(tokenizer):
    text = "<guess>alarm</guess><think>x</think><|im_end|>"
    ids = encode(tokenizer, text)
    assert ids[-1] == tokenizer.eos_token_id
    assert guess_token_span(ids, tokenizer) == (0, 7)
    ids = [tokenizer.convert_tokens_to_ids("<|im_start|>"), *encode(tokenizer, "<guess>alarm</guess>")]
    assert guess_token_span(ids, tokenizer) == (1, 8)


def test_guess_span_mask_on_a_right_padded_batch(tokenizer):
    pad = tokenizer.pad_token_id
    close_ids = encode(tokenizer, "</guess>")
    rows = [
        ("", "<guess>alarm</guess><think>because</think><answer>alarm</answer>"),
        ("<guess>", "music</guess><think>x</think>"),
        ("", "no guess here"),
        ("", "<guess>weather"),  # unclosed: padded below with tokens that would close it if read
        ("", "hi <guess>café 🎉</guess>"),
    ]
    encoded = [encode(tokenizer, text) for _, text in rows]
    lengths = [len(ids) for ids in encoded]
    width = max(lengths) + len(close_ids)
    batch = []
    for ids in encoded:
        filler = close_ids + [pad] * (width - len(ids) - len(close_ids))
        batch.append(ids + filler)
    completion_ids = torch.tensor(batch)
    mask = guess_span_mask(completion_ids, lengths, tokenizer, [prefix for prefix, _ in rows])
    assert mask.shape == completion_ids.shape and mask.dtype == torch.long
    for row, (prefix, text) in enumerate(rows):
        expected = [0] * width
        span = expected_span(tokenizer, text, prefix)
        if span is not None:
            expected[span[0] : span[1]] = [1] * (span[1] - span[0])
        assert mask[row].tolist() == expected, row
    assert mask[2].sum() == 0 and mask[3].sum() == 0
    assert mask[1, 0] == 1 and mask[0, 0] == 1 and mask[4, 0] == 0
    # lengths given as a tensor work the same; prefixes default to none
    assert torch.equal(guess_span_mask(completion_ids, torch.tensor(lengths), tokenizer, [p for p, _ in rows]), mask)
    no_prefix = guess_span_mask(completion_ids, lengths, tokenizer)
    assert no_prefix[1].sum() == 0
    assert torch.equal(no_prefix[[0, 2, 3, 4]], mask[[0, 2, 3, 4]])

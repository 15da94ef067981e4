"""Where the guess span lies in a sampled completion, in tokens.

The guess span is every completion token that carries at least one character of the first complete
`<guess>..</guess>` block of the reply (response prefix + completion), opening and closing tags included. A token
that straddles the block's edge (e.g. `</guess><` merged into one BPE token) is therefore inside the span: the RL
loss never pushes on a guess character, and the supervised guess loss owns them all. When the prefix already opened
`<guess>`, the span starts at the first completion token. A completion without a complete guess block has no span.
"""

from collections.abc import Sequence

import torch

from .reply_format import block_span


def guess_token_span(token_ids: Sequence[int], tokenizer, prefix: str = "") -> tuple[int, int] | None:
    """Token range `[start, end)` of the guess span of one completion, or None when there is no guess block."""
    ids = list(token_ids)
    full = prefix + tokenizer.decode(ids, skip_special_tokens=True)
    span = block_span(full, "guess")
    if span is None:
        return None
    char_start, char_end = span
    if char_end <= len(prefix):  # the prefix holds the whole block: no completion token carries it
        return None
    start = None
    for k in range(1, len(ids) + 1):  # guess blocks are short and come first: this loop stops early
        length = len(prefix + tokenizer.decode(ids[:k], skip_special_tokens=True))
        if start is None and length > char_start:
            start = k - 1
        if length >= char_end:
            return start, k
    return (start or 0), len(ids)


def guess_span_mask(
    completion_ids: torch.Tensor, lengths: Sequence[int], tokenizer, prefixes: Sequence[str] | None = None
) -> torch.Tensor:
    """A (batch, length) 0/1 tensor marking the guess span of each row of right-padded `completion_ids`."""
    mask = torch.zeros_like(completion_ids, dtype=torch.long)
    prefixes = prefixes if prefixes is not None else [""] * completion_ids.size(0)
    for row, (ids, length, prefix) in enumerate(zip(completion_ids.tolist(), lengths, prefixes, strict=True)):
        span = guess_token_span(ids[: int(length)], tokenizer, prefix or "")
        if span is not None:
            mask[row, span[0] : span[1]] = 1
    return mask

"""A batch's shared prompt prefix, computed once: the keys and values of the rows' common leading tokens.

Every prompt of a classification batch opens with the same instructions and label list, and that prefix is most of
its tokens (99 of the quickstart's 106). Running it once, for one row, and letting every row attend to its keys and
values gives the same outputs (up to float rounding) at a fraction of the tokens, forward and backward alike: the
gradient flows into the prefix's single computation from every row.

Rows must hold their real tokens contiguously (left or right padding). The outputs are those of the rows without
their first `k` real tokens: an output's column `j` is the input's column `j + k`, in every row, so right-aligned
outputs (`logits_to_keep`, the completion's log-probs) keep their columns. The cache is built anew on each call, so
nothing may run the model's forward twice from one call (activation checkpointing recomputes it).
"""

import inspect
from contextlib import contextmanager
from typing import Any

import torch
from transformers import DynamicCache


def _real_token_starts(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first real column and count of real tokens; raises unless the real tokens are contiguous."""
    lengths = attention_mask.sum(dim=1)
    starts = attention_mask.int().argmax(dim=1)
    columns = torch.arange(attention_mask.size(1), device=attention_mask.device)
    inside = (columns >= starts[:, None]) & (columns < (starts + lengths)[:, None])
    if not torch.equal(inside, attention_mask.bool()):
        raise ValueError("Sharing a prompt prefix needs each row's real tokens in one run (left or right padding).")
    return starts, lengths


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: int | None = None) -> int:
    """How many leading real tokens every row has in common.

    Args:
        input_ids: `(batch, length)` token ids.
        attention_mask: `(batch, length)`, 1 on real tokens, which are contiguous in each row.
        limit: The most the prefix may take (e.g. to leave every row the position that predicts its first scored
            token).

    Returns:
        The length `k` of the longest common leading run of real tokens, at most `limit`.

    Example:
        >>> ids, mask = torch.tensor([[0, 5, 6, 7], [5, 6, 8, 9]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
        >>> shared_prefix_length(ids, mask)
        2
    """
    starts, lengths = _real_token_starts(attention_mask)
    most = int(lengths.min())
    if limit is not None:
        most = max(min(most, limit), 0)
    if most == 0:
        return 0
    tokens = input_ids.gather(1, starts[:, None] + torch.arange(most, device=input_ids.device))
    differs = (tokens != tokens[:1]).any(dim=0)
    return int(differs.int().argmax()) if bool(differs.any()) else most


def drop_prefix(tensor: torch.Tensor, attention_mask: torch.Tensor, k: int) -> torch.Tensor:
    """`tensor` (per token, like `input_ids`) without each row's first `k` real tokens; padding stays in place.

    Example:
        >>> drop_prefix(torch.tensor([[0, 5, 6, 7], [5, 6, 8, 9]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), 2)
        tensor([[0, 7],
                [8, 9]])
    """
    return _drop(tensor, _real_token_starts(attention_mask)[0], k)


def _drop(tensor: torch.Tensor, starts: torch.Tensor, k: int) -> torch.Tensor:
    columns = torch.arange(tensor.size(1) - k, device=tensor.device)[None]
    index = columns + k * (columns >= starts[:, None])  # a row's left padding keeps its columns
    return tensor.gather(1, index)


def _split(input_ids: torch.Tensor, attention_mask: torch.Tensor, starts: torch.Tensor, k: int):
    """The prefix (the first row's `k` leading real tokens, `(1, k)`), the rows without it, their mask, and the
    attention mask over the prefix's columns followed by theirs."""
    first = int(starts[0])
    mask = _drop(attention_mask, starts, k)
    full_mask = torch.cat([mask.new_ones(mask.size(0), k), mask], dim=1)
    return input_ids[:1, first : first + k], _drop(input_ids, starts, k), mask, full_mask


def cache_argument(model: Any) -> str:
    """The forward's name for a KV cache: transformers renamed `past_key_values` to `cache`, and drops the old name
    in 5.40 (a model that ignored it would run the rows without their prefix)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's kwargs pass through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _prefix_cache(model: Any, prefix_ids: torch.Tensor, rows: int) -> dict[str, Any]:
    """The prefix's keys and values, computed for one row and repeated for `rows` rows, as the forward's keyword."""
    name = cache_argument(model)
    cache = DynamicCache(config=model.config)
    model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1, **{name: cache})
    cache.batch_repeat_interleave(rows)
    return {name: cache}


def forward_with_shared_prefix(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    limit: int | None = None,
    labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[Any, int]:
    """`model(input_ids, attention_mask, ...)` with the rows' common prefix computed once.

    Args:
        model: A causal LM (or a PeftModel around one) whose forward takes a KV cache.
        input_ids: `(batch, length)`; real tokens contiguous in each row.
        attention_mask: `(batch, length)`.
        limit: The most the prefix may take (see `shared_prefix_length`), e.g. so that the outputs `logits_to_keep`
            reads are all computed.
        labels: Per-token labels (`-100`: not scored), cut like `input_ids`. The prefix stops before the position
            that predicts a row's first scored token.
        **kwargs: Passed to the model (`logits_to_keep`, `fused_lm_head`, ...).

    Returns:
        The model's output for the rows without their first `k` real tokens (column `j` is the input's `j + k`),
        and `k`. With `k = 0` it is the plain forward, positions counted from each row's first real token.
    """
    starts, _ = _real_token_starts(attention_mask)
    if labels is not None:
        kwargs["labels"] = labels
        scored = labels != -100
        first_scored = torch.where(scored.any(dim=1), scored.int().argmax(dim=1), labels.size(1))
        label_limit = int((first_scored - starts).min()) - 1
        limit = label_limit if limit is None else min(limit, label_limit)
    k = shared_prefix_length(input_ids, attention_mask, limit)
    if k == 0:
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs), 0
    prefix, rest, mask, full_mask = _split(input_ids, attention_mask, starts, k)
    cache = _prefix_cache(model, prefix, input_ids.size(0))
    if labels is not None:
        kwargs["labels"] = _drop(labels, starts, k)
    outputs = model(
        input_ids=rest,
        attention_mask=full_mask,
        position_ids=k + (mask.cumsum(dim=1) - 1).clamp(min=0),
        **cache,
        **kwargs,
    )
    return outputs, k


class SharedPrefixModel:
    """`model` called through `forward_with_shared_prefix`, for code that owns the forward call (TRL's RL loss)."""

    def __init__(self, model: Any, limit: int | None = None) -> None:
        self.model, self.limit = model, limit

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        return forward_with_shared_prefix(self.model, input_ids, attention_mask, self.limit, **kwargs)[0]


def generate_with_shared_prefix(
    model: Any, generate: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """`generate(input_ids, attention_mask, ...)` with the prompts' common prefix computed once, by `model`.

    The prompts are laid out as the prefix, then each row's padding, then the rest of its prompt (the input's
    width), so the returned sequences hold the completions from column `input_ids.size(1)` on, as `generate`'s do.

    Args:
        model: The causal LM whose forward computes the prefix's keys and values (no gradient).
        generate: Its `generate` (the unpatched one, under `shared_prefix_generation`).
        input_ids: `(batch, length)` prompts; real tokens contiguous in each row.
        attention_mask: `(batch, length)`.
        **kwargs: Passed to `generate` (`generation_config`, ...).
    """
    k = shared_prefix_length(input_ids, attention_mask, limit=int(attention_mask.sum(dim=1).min()) - 1)
    if k == 0:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    prefix, rest, _, full_mask = _split(input_ids, attention_mask, _real_token_starts(attention_mask)[0], k)
    with torch.no_grad():
        cache = _prefix_cache(model, prefix, input_ids.size(0))
    return generate(
        input_ids=torch.cat([prefix.expand(input_ids.size(0), -1), rest], dim=1),
        attention_mask=full_mask,
        **cache,
        **kwargs,
    )


@contextmanager
def shared_prefix_generation(model: Any):
    """Within the block, `model.generate` computes the prompts' common prefix once (`generate_with_shared_prefix`).

    For callers that own the `generate` call (TRL's rollouts); the patch is an attribute of this one model object.
    """
    original = model.generate

    def generate(input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return generate_with_shared_prefix(model, original, input_ids, attention_mask, **kwargs)

    model.generate = generate
    try:
        yield model
    finally:
        del model.generate

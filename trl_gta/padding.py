"""Compute nothing for padding: a micro-batch cut to its own longest rows, and the LM head fed real tokens only.

TRL pads a generation's completions to the longest of the whole generation batch and slices micro-batches out of it,
so a micro-batch whose own rows are shorter still runs its forward and backward over the full width.
`trim_padding` drops the columns that are padding in every row of a micro-batch; the loss is unchanged, since every
GRPO loss masks those columns out and normalizes by counted tokens, not by the width. `group_by_length` lays out an
optimizer step's rows so that the long completions share micro-batches, leaving the others short.

TRL's fused LM head scores only the labelled (completion) positions on Triton devices, and every position elsewhere:
on a CPU that is every prompt and padding token, through a vocabulary-wide projection, forward and backward (measured
on the quickstart in docs/benchmarks.md). `score_labelled_positions_only` lets it pick the labelled positions on a
CPU too; the log-probs are the same, position by position.
"""

from contextlib import contextmanager
from typing import Any

import torch
from trl.trainer.utils import split_tensor_dict

COMPLETION_ALIGNED_KEYS = (
    "completion_ids",
    "completion_mask",
    "tool_mask",
    "advantages",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
)
"""The entries of TRL's GRPO batch that hold one value per completion token (`advantages` and the importance ratio
only in their per-token forms); any other entry is per row, or per prompt token."""


def _kept_columns(mask: torch.Tensor, from_left: bool) -> slice:
    """The smallest run of columns holding every nonzero entry of `mask`, at least one column."""
    used = mask.any(dim=0).nonzero()
    if used.numel() == 0:
        return slice(0, 1)
    if from_left:
        return slice(int(used[0]), mask.size(1))
    return slice(0, int(used[-1]) + 1)


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """`batch` without the completion columns past its longest completion and the prompt columns that pad every row.

    Args:
        batch: A micro-batch of TRL's GRPO trainer: left-padded `prompt_ids`/`prompt_mask`, right-padded
            `completion_ids`/`completion_mask`, and the entries of `COMPLETION_ALIGNED_KEYS` that it has.

    Returns:
        A new dict; per-token entries are sliced (views), everything else is passed through.

    Example:
        >>> batch = {"prompt_ids": torch.tensor([[0, 7], [0, 9]]), "prompt_mask": torch.tensor([[0, 1], [0, 1]]),
        ...          "completion_ids": torch.tensor([[5, 0, 0], [6, 4, 0]]),
        ...          "completion_mask": torch.tensor([[1, 0, 0], [1, 1, 0]])}
        >>> trimmed = trim_padding(batch)
        >>> trimmed["prompt_ids"].tolist(), trimmed["completion_ids"].tolist()
        ([[7], [9]], [[5, 0], [6, 4]])
    """
    trimmed = dict(batch)
    width = batch["completion_mask"].size(1)
    completion = _kept_columns(batch["completion_mask"], from_left=False)
    for key in COMPLETION_ALIGNED_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.size(1) == width:
            trimmed[key] = value[:, completion]
    prompt = _kept_columns(batch["prompt_mask"], from_left=True)
    trimmed["prompt_ids"], trimmed["prompt_mask"] = batch["prompt_ids"][:, prompt], batch["prompt_mask"][:, prompt]
    return trimmed


def _rows(value: Any, index: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[index.to(value.device)]
    if isinstance(value, list):
        return [value[i] for i in index.tolist()]
    return value  # per batch: None, a 0-dim tensor (`num_items_in_batch`)


def _concatenate(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return torch.cat(values)
    if isinstance(first, list):
        return [row for value in values for row in value]
    return first


def group_by_length(micro_batches: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """The rows of each `window` consecutive micro-batches laid out anew, longest completions first.

    TRL splits a generation's rows into micro-batches at random; when one optimizer step accumulates `window`
    micro-batches, which rows share a micro-batch changes neither the step's rows nor, for losses normalized per
    sequence or over the whole step (`dapo`, `dr_grpo`, `grpo`; GTA's `sequence_sum`), the gradient (those averaged
    over each micro-batch weigh their rows as another random split would). Sorted by length, the long rows share
    micro-batches and `trim_padding` cuts the rest short.

    Args:
        micro_batches: Equal-sized micro-batches (TRL's buffered inputs), each with a `completion_mask`.
        window: Micro-batches per optimizer step (the gradient accumulation steps); must divide their number.

    Returns:
        As many micro-batches, of the same size; per-row entries (tensors, lists) reordered together, per-batch ones
        (None, 0-dim tensors) kept.
    """
    if len(micro_batches) % window:
        raise ValueError(f"{len(micro_batches)} micro-batches do not split into optimizer steps of {window}.")
    grouped = []
    for start in range(0, len(micro_batches), window):
        part = micro_batches[start : start + window]
        merged = {key: _concatenate([batch[key] for batch in part]) for key in part[0]}
        order = torch.argsort(merged["completion_mask"].sum(dim=1).cpu(), descending=True, stable=True)
        grouped += split_tensor_dict({key: _rows(value, order) for key, value in merged.items()}, window)
    return grouped


@contextmanager
def score_labelled_positions_only(device: torch.device):
    """Within the block, TRL's fused LM head on a CPU scores the labelled positions only, as it does on Triton devices.

    TRL scores every position off Triton devices so that Neuron compiles one tile shape; a CPU compiles nothing. The
    switch is TRL's own (`trl.trainer.utils._use_triton`, read by the fused head alone); where a TRL release lacks
    it, the block changes nothing and the scores are the same, only slower.
    """
    from trl.trainer import utils

    original = getattr(utils, "_use_triton", None)
    if device.type != "cpu" or original is None:
        yield
        return
    utils._use_triton = lambda on: on.type == "cpu" or original(on)
    try:
        yield
    finally:
        utils._use_triton = original

"""GTA's loss math as pure functions: the supervised guess loss and the combination of two gradients.

Kept free of trainer state so that each rule can be tested on hand-made tensors.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CONFLICT_STRATEGIES = ("drop", "project", "none")
SFT_REDUCTIONS = ("sequence_sum", "token_mean")


def guess_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "sequence_sum", ignore_index: int = -100
) -> torch.Tensor:
    """Cross-entropy of `targets` under `logits` (aligned: `logits[:, t]` predicts `targets[:, t]`), one row per
    example.

    `reduction="sequence_sum"` is the paper's L_SFT: the negative log-likelihood summed over each example's guess
    tokens, averaged over the examples that have any. `"token_mean"` averages over all supervised tokens of the batch
    (as a language-model loss does): about 1/|guess tokens| of the paper's scale.

    Computed in float32 from the model's own logits (not TRL's temperature-scaled log-probs), so it is the true CE.
    Zero, still attached to the graph, when no position is supervised.
    """
    if reduction not in SFT_REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; expected one of {SFT_REDUCTIONS}.")
    per_token = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="none"
    ).view(targets.shape)
    supervised = targets != ignore_index
    if reduction == "token_mean":
        return per_token.sum() / supervised.sum().clamp(min=1)
    return per_token.sum() / supervised.any(dim=1).sum().clamp(min=1)


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True))


@dataclass
class CombinedGradient:
    """The combined gradient, the cosine between the two inputs (0 when either is zero) and whether they conflict."""

    grads: list[torch.Tensor]
    cosine: float
    conflict: bool


def combine_gradients(
    sft_grads: Sequence[torch.Tensor], rl_grads: Sequence[torch.Tensor], strategy: str = "drop"
) -> CombinedGradient:
    """Combine the (already weighted) SFT and RL gradients.

    - `"none"`: their sum;
    - `"drop"` (the GTA paper's rule): the RL gradient alone when the cosine is negative, else the sum;
    - `"project"` (PCGrad-style): when they conflict, remove from the SFT gradient its component along the RL
      gradient, then add the RL gradient.
    A zero gradient has cosine 0, so it never conflicts: with a zero RL gradient the SFT gradient is used.
    """
    if strategy not in CONFLICT_STRATEGIES:
        raise ValueError(f"Unknown conflict strategy {strategy!r}; expected one of {CONFLICT_STRATEGIES}.")
    dot = _dot(sft_grads, rl_grads)
    sft_norm_sq, rl_norm_sq = _dot(sft_grads, sft_grads), _dot(rl_grads, rl_grads)
    denominator = (sft_norm_sq * rl_norm_sq).sqrt()
    cosine = float(dot / denominator) if denominator > 0 else 0.0
    conflict = cosine < 0
    if conflict and strategy == "drop":
        grads = [g.clone() for g in rl_grads]
    elif conflict and strategy == "project":
        scale = (dot / rl_norm_sq).item()
        grads = [s - scale * r + r for s, r in zip(sft_grads, rl_grads, strict=True)]
    else:
        grads = [s + r for s, r in zip(sft_grads, rl_grads, strict=True)]
    return CombinedGradient(grads=grads, cosine=cosine, conflict=conflict)


def gradient_surrogate(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], value: torch.Tensor
) -> torch.Tensor:
    """A scalar equal to `value` whose gradient with respect to `params` is `grads`.

    Returning it from `compute_loss` lets the trainer's single `backward()` do DDP all-reduce, mixed-precision
    scaling, accumulation and clipping unchanged (a second `backward()` per forward is not all-reduced under DDP).
    """
    surrogate = sum((p * g.detach().to(p.dtype)).sum() for p, g in zip(params, grads, strict=True))
    return surrogate - surrogate.detach() + value.detach()

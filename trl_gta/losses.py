"""GTA's loss math as pure functions: the supervised guess loss and the combination of two gradients.

Kept free of trainer state so that each rule can be tested on hand-made tensors.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CONFLICT_STRATEGIES = ("drop", "project", "none")
CONFLICT_SCOPES = ("step", "micro_batch")
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


_DOT_CHUNK = 1 << 22  # elements converted to float32 at a time for half-precision gradients (16 MiB)


def _tensor_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`<a, b>` as a float64 scalar, with no whole-tensor temporary.

    float32/float64 tensors go to `torch.dot` directly; half-precision ones in float32 chunks, so that neither the
    products nor a dot product's rounding to bf16 cost precision, and the temporaries stay a few MiB.
    """
    a, b = a.reshape(-1), b.reshape(-1)
    if a.dtype in (torch.float32, torch.float64) and a.dtype == b.dtype:
        return torch.dot(a, b).double()
    parts = [torch.dot(x.float(), y.float()) for x, y in zip(a.split(_DOT_CHUNK), b.split(_DOT_CHUNK), strict=True)]
    return torch.stack(parts).double().sum()


def gradient_dots(sft_grads: Sequence[torch.Tensor], rl_grads: Sequence[torch.Tensor]) -> tuple[float, float, float]:
    """`(<g_s, g_r>, ‖g_s‖², ‖g_r‖²)` over all tensors taken as one vector, summed per tensor in float64.

    One host synchronisation for the three numbers: the conflict rule branches on them.
    """
    if len(sft_grads) != len(rl_grads):
        raise ValueError(f"{len(sft_grads)} SFT gradients but {len(rl_grads)} RL gradients.")
    if not sft_grads:
        return 0.0, 0.0, 0.0
    terms = torch.stack(
        [
            torch.stack([_tensor_dot(s, r), _tensor_dot(s, s), _tensor_dot(r, r)])
            for s, r in zip(sft_grads, rl_grads, strict=True)
        ]
    )
    dot, sft_sq, rl_sq = terms.sum(0).tolist()
    return dot, sft_sq, rl_sq


@dataclass(frozen=True)
class ConflictDecision:
    """What the conflict rule decided: the combined gradient is `sft_coef * g_s + rl_coef * g_r`.

    `cosine` is cos(g_s, g_r) (0 when either is zero); `conflict` says whether the rule acted on it.
    """

    cosine: float
    conflict: bool
    sft_coef: float
    rl_coef: float


def conflict_decision(
    dot: float, sft_sq: float, rl_sq: float, strategy: str = "drop", rl_has_policy_gradient: bool = True
) -> ConflictDecision:
    """The conflict rule on the two gradients' dot products (see `gradient_dots`).

    - `"none"`: the sum;
    - `"drop"` (the GTA paper's rule): the RL gradient alone when the cosine is negative, else the sum;
    - `"project"` (PCGrad-style): when they conflict, remove from the SFT gradient its component along the RL
      gradient, then add the RL gradient: `g_s + (1 - <g_s, g_r> / ‖g_r‖²) g_r`.

    A zero gradient has cosine 0, so it never conflicts. `rl_has_policy_gradient=False` (every advantage in the
    decision's scope is zero) also means no conflict: the RL gradient is then only the pull of the KL (and entropy)
    terms back towards the reference, which says nothing about the task, so the supervised gradient is kept. The
    cosine is still reported.
    """
    if strategy not in CONFLICT_STRATEGIES:
        raise ValueError(f"Unknown conflict strategy {strategy!r}; expected one of {CONFLICT_STRATEGIES}.")
    denominator = math.sqrt(sft_sq * rl_sq)
    cosine = dot / denominator if denominator > 0 else 0.0
    conflict = cosine < 0 and rl_has_policy_gradient
    if conflict and strategy == "drop":
        return ConflictDecision(cosine, conflict, sft_coef=0.0, rl_coef=1.0)
    if conflict and strategy == "project":
        return ConflictDecision(cosine, conflict, sft_coef=1.0, rl_coef=1.0 - dot / rl_sq)
    return ConflictDecision(cosine, conflict, sft_coef=1.0, rl_coef=1.0)


def apply_decision_(
    rl_grads: Sequence[torch.Tensor], sft_grads: Sequence[torch.Tensor], decision: ConflictDecision
) -> None:
    """Overwrite `rl_grads` with `decision.sft_coef * sft_grads + decision.rl_coef * rl_grads`, in place.

    In place so that combining costs no gradient-sized buffer beyond the two inputs (and nothing for a drop).
    """
    rl_grads, sft_grads = list(rl_grads), list(sft_grads)
    if len(sft_grads) != len(rl_grads):
        raise ValueError(f"{len(sft_grads)} SFT gradients but {len(rl_grads)} RL gradients.")
    if not rl_grads:
        return
    if decision.rl_coef != 1.0:
        torch._foreach_mul_(rl_grads, decision.rl_coef)
    if decision.sft_coef != 0.0:
        torch._foreach_add_(rl_grads, sft_grads, alpha=decision.sft_coef)


def combine_gradients(
    sft_grads: Sequence[torch.Tensor],
    rl_grads: Sequence[torch.Tensor],
    strategy: str = "drop",
    rl_has_policy_gradient: bool = True,
) -> ConflictDecision:
    """Combine the (already weighted) SFT and RL gradients **into `rl_grads`, in place**; return the decision.

    `gradient_dots`, then `conflict_decision`, then `apply_decision_`: see those for the rule.
    """
    decision = conflict_decision(*gradient_dots(sft_grads, rl_grads), strategy, rl_has_policy_gradient)
    apply_decision_(rl_grads, sft_grads, decision)
    return decision


def gradient_surrogate(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], value: torch.Tensor
) -> torch.Tensor:
    """A scalar equal to `value` whose gradient with respect to `params` is `grads`.

    Returning it from `compute_loss` lets the trainer's single `backward()` do DDP all-reduce, mixed-precision
    scaling, accumulation and clipping unchanged (a second `backward()` per forward is not all-reduced under DDP).
    """
    surrogate = sum((p * g.detach().to(p.dtype)).sum() for p, g in zip(params, grads, strict=True))
    return surrogate - surrogate.detach() + value.detach()

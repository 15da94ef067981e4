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
CONFLICT_SIGNALS = ("rl_loss", "policy_gradient")
SFT_REDUCTIONS = ("sequence_sum", "token_mean")
REWARD_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def guess_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "sequence_sum",
    ignore_index: int = -100,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of `targets` under `logits` (aligned: `logits[:, t]` predicts `targets[:, t]`), one row per
    example.

    `reduction="sequence_sum"` is the paper's L_SFT: the negative log-likelihood summed over each example's guess
    tokens, averaged over the examples that have any. `"token_mean"` averages over all supervised tokens of the batch
    (as a language-model loss does): about 1/|guess tokens| of the paper's scale.

    `weights` (one per row, default 1) counts how many examples a row stands for: a row computed once for `k`
    identical examples weighs `k` in both averages, so deduplicating rows leaves the loss unchanged.

    Computed in float32 from the model's own logits (not TRL's temperature-scaled log-probs), so it is the true CE.
    Zero, still attached to the graph, when no position is supervised.
    """
    if reduction not in SFT_REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; expected one of {SFT_REDUCTIONS}.")
    per_token = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="none"
    ).view(targets.shape)
    supervised = targets != ignore_index
    weights = torch.ones(targets.size(0), device=per_token.device) if weights is None else weights.float()
    total = (per_token.sum(dim=1) * weights).sum()
    if reduction == "token_mean":
        return total / (supervised.sum(dim=1) * weights).sum().clamp(min=1)
    return total / (supervised.any(dim=1) * weights).sum().clamp(min=1)


def _varies(values: torch.Tensor) -> torch.Tensor:
    """Along the last dimension: whether at least two non-NaN values differ (exact comparison)."""
    present = ~torch.isnan(values)
    high = values.masked_fill(~present, -math.inf).amax(dim=-1)
    low = values.masked_fill(~present, math.inf).amin(dim=-1)
    return (present.sum(dim=-1) > 1) & (high > low)


def rows_with_reward_signal(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    num_generations: int,
    aggregation: str = "sum_then_normalize",
) -> torch.Tensor:
    """Which rows' GRPO advantages carry a reward signal, decided from the rewards, not from the advantages' floats.

    A group whose rewards are all equal gets, from TRL, float residue over its `std + 1e-4`: e.g. |A| = 2.98e-4 for a
    constant reward of 1/3 at 8 generations. So "no policy gradient" is decided here by exact comparison of the same
    rewards TRL normalises. `"sum_then_normalize"` (TRL's default): a row has a signal when the weighted sums of its
    group differ. `"normalize_then_sum"` normalises each function per group, then the sums over the whole batch: every
    row has a signal as soon as one function varies within one group. Unscorable rows (all rewards NaN) have none.

    Args:
        rewards_per_func: `(rows, functions)`, rows in groups of `num_generations` consecutive rows, NaN where a
            function did not score a row.
        weights: `(functions,)`, the reward weights.
    """
    if aggregation not in REWARD_AGGREGATIONS:
        raise ValueError(f"Unknown reward aggregation {aggregation!r}; expected one of {REWARD_AGGREGATIONS}.")
    scorable = ~torch.isnan(rewards_per_func).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1).masked_fill(~scorable, math.nan)
        group_varies = _varies(rewards.view(-1, num_generations))
    else:
        grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.size(1)).transpose(1, 2)
        group_varies = _varies(grouped).any().expand(grouped.size(0))
    return group_varies.repeat_interleave(num_generations) & scorable


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


def _check_lengths(sft_grads: Sequence, rl_grads: Sequence) -> None:
    if len(sft_grads) != len(rl_grads):
        raise ValueError(f"{len(sft_grads)} SFT gradients but {len(rl_grads)} RL gradients.")


def _pair_dots(s: torch.Tensor | None, r: torch.Tensor | None) -> torch.Tensor:
    """`[<s, r>, ‖s‖², ‖r‖²]` in float64, `None` being a zero tensor."""
    device = (s if s is not None else r).device
    zero = torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack(
        [
            _tensor_dot(s, r) if s is not None and r is not None else zero,
            _tensor_dot(s, s) if s is not None else zero,
            _tensor_dot(r, r) if r is not None else zero,
        ]
    )


def gradient_dots(
    sft_grads: Sequence[torch.Tensor | None], rl_grads: Sequence[torch.Tensor | None]
) -> tuple[float, float, float]:
    """`(<g_s, g_r>, ‖g_s‖², ‖g_r‖²)` over all tensors taken as one vector, summed per tensor in float64.

    `None` is a zero gradient (a parameter that loss does not reach): the other's tensor still counts in its norm.
    One host synchronisation for the three numbers: the conflict rule branches on them.
    """
    _check_lengths(sft_grads, rl_grads)
    terms = [_pair_dots(s, r) for s, r in zip(sft_grads, rl_grads, strict=True) if s is not None or r is not None]
    if not terms:
        return 0.0, 0.0, 0.0
    dot, sft_sq, rl_sq = torch.stack(terms).sum(0).tolist()
    return dot, sft_sq, rl_sq


@dataclass(frozen=True)
class ConflictDecision:
    """What the conflict rule decided: the combined gradient is `g_r + sft_coef * g_s + signal_coef * g_signal`.

    `g_signal` is the gradient the cosine was taken with: `g_r` itself (`conflict_signal="rl_loss"`), or the RL
    loss's policy term alone (`"policy_gradient"`). `cosine` is cos(g_s, g_signal) (0 when either is zero);
    `conflict` says whether the rule acted on it.
    """

    cosine: float
    conflict: bool
    sft_coef: float
    signal_coef: float


def conflict_decision(
    dot: float, sft_sq: float, signal_sq: float, strategy: str = "drop", rl_has_policy_gradient: bool = True
) -> ConflictDecision:
    """The conflict rule on the dot products of the SFT gradient and the signal gradient (see `gradient_dots`).

    - `"none"`: the sum `g_s + g_r`;
    - `"drop"` (the GTA paper's rule): the RL gradient alone when the cosine is negative, else the sum;
    - `"project"` (PCGrad-style): when they conflict, remove from the SFT gradient its component along the signal,
      then add the RL gradient: `g_r + g_s - (<g_s, g_signal> / ‖g_signal‖²) g_signal`.

    A zero gradient has cosine 0, so it never conflicts. `rl_has_policy_gradient=False` (no group in the decision's
    scope has rewards that differ, see `rows_with_reward_signal`) also means no conflict: the RL gradient is then only
    the pull of the KL (and entropy) terms back towards the reference, which says nothing about the task, so the
    supervised gradient is kept. The cosine is still reported.
    """
    if strategy not in CONFLICT_STRATEGIES:
        raise ValueError(f"Unknown conflict strategy {strategy!r}; expected one of {CONFLICT_STRATEGIES}.")
    denominator = math.sqrt(sft_sq * signal_sq)
    cosine = dot / denominator if denominator > 0 else 0.0
    conflict = cosine < 0 and rl_has_policy_gradient
    if conflict and strategy == "drop":
        return ConflictDecision(cosine, conflict, sft_coef=0.0, signal_coef=0.0)
    if conflict and strategy == "project":
        return ConflictDecision(cosine, conflict, sft_coef=1.0, signal_coef=-dot / signal_sq)
    return ConflictDecision(cosine, conflict, sft_coef=1.0, signal_coef=0.0)


def apply_decision_(
    rl_grads: Sequence[torch.Tensor],
    sft_grads: Sequence[torch.Tensor | None],
    decision: ConflictDecision,
    signal_grads: Sequence[torch.Tensor | None] | None = None,
) -> None:
    """Overwrite `rl_grads` with `g_r + sft_coef * g_s + signal_coef * g_signal`, in place.

    `signal_grads=None`: the signal is `rl_grads` itself. `None` entries of `sft_grads`/`signal_grads` are zero
    gradients. In place so that combining costs no gradient-sized buffer beyond the inputs (and nothing for a drop).
    """
    rl_grads, sft_grads = list(rl_grads), list(sft_grads)
    _check_lengths(sft_grads, rl_grads)
    if decision.signal_coef != 0.0 and signal_grads is None:
        torch._foreach_mul_(rl_grads, 1.0 + decision.signal_coef)
    elif decision.signal_coef != 0.0:
        _check_lengths(signal_grads, rl_grads)
        pairs = [(r, g) for r, g in zip(rl_grads, signal_grads, strict=True) if g is not None]
        if pairs:
            torch._foreach_add_([r for r, _ in pairs], [g for _, g in pairs], alpha=decision.signal_coef)
    if decision.sft_coef != 0.0:
        pairs = [(r, s) for r, s in zip(rl_grads, sft_grads, strict=True) if s is not None]
        if pairs:
            torch._foreach_add_([r for r, _ in pairs], [s for _, s in pairs], alpha=decision.sft_coef)


def combine_gradients(
    sft_grads: Sequence[torch.Tensor | None],
    rl_grads: Sequence[torch.Tensor],
    strategy: str = "drop",
    rl_has_policy_gradient: bool = True,
    signal_grads: Sequence[torch.Tensor | None] | None = None,
) -> ConflictDecision:
    """Combine the (already weighted) SFT and RL gradients **into `rl_grads`, in place**; return the decision.

    The cosine is taken with `signal_grads` (default: `rl_grads`). `gradient_dots`, then `conflict_decision`, then
    `apply_decision_`: see those for the rule.
    """
    signal = rl_grads if signal_grads is None else signal_grads
    decision = conflict_decision(*gradient_dots(sft_grads, signal), strategy, rl_has_policy_gradient)
    apply_decision_(rl_grads, sft_grads, decision, signal_grads)
    return decision


def accumulate_gradients(
    buffer: list[torch.Tensor | None] | None, grads: list[torch.Tensor | None]
) -> list[torch.Tensor | None]:
    """`buffer + grads` per parameter, in place where `buffer` holds a tensor (`None`: a zero gradient)."""
    if buffer is None:
        return list(grads)
    _check_lengths(grads, buffer)
    for k, (b, g) in enumerate(zip(buffer, grads, strict=True)):
        if b is None:
            buffer[k] = g
        elif g is not None:
            b.add_(g)
    return buffer


def gradient_surrogate(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], value: torch.Tensor
) -> torch.Tensor:
    """A scalar equal to `value` whose gradient with respect to `params` is `grads`.

    Returning it from `compute_loss` lets the trainer's single `backward()` do DDP all-reduce, mixed-precision
    scaling, accumulation and clipping unchanged (a second `backward()` per forward is not all-reduced under DDP).
    """
    surrogate = sum((p * g.detach().to(p.dtype)).sum() for p, g in zip(params, grads, strict=True))
    return surrogate - surrogate.detach() + value.detach()

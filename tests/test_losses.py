"""`trl_gta.losses`: the supervised guess loss and the rules that combine the SFT and RL gradients."""

import math

import pytest
import torch

from trl_gta import losses
from trl_gta.losses import (
    CONFLICT_STRATEGIES,
    ConflictDecision,
    accumulate_gradients,
    combine_gradients,
    conflict_decision,
    gradient_dots,
    gradient_surrogate,
    guess_cross_entropy,
    rows_with_reward_signal,
)


def manual_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    terms = [
        -log_probs[b, t, targets[b, t]]
        for b in range(targets.shape[0])
        for t in range(targets.shape[1])
        if targets[b, t] != ignore_index
    ]
    return torch.stack(terms).mean()


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1).double() for g in grads])


# ---------------------------------------------------------------- guess_cross_entropy


def test_sequence_sum_is_the_papers_per_example_log_likelihood():
    """Sum over each example's guess tokens, mean over the examples that have any (a fully ignored row is none)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7)
    targets = torch.randint(0, 7, (3, 4))
    targets[0, 3] = -100
    targets[2, :] = -100
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    per_example = [-sum(log_probs[b, t, targets[b, t]] for t in range(4) if targets[b, t] != -100) for b in range(2)]
    expected = (per_example[0] + per_example[1]) / 2
    assert guess_cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    token_mean = guess_cross_entropy(logits, targets, reduction="token_mean")
    assert token_mean.item() == pytest.approx((per_example[0] + per_example[1]).item() / 7, rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        guess_cross_entropy(logits, targets, reduction="mean")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_guess_cross_entropy_is_the_mean_over_supervised_positions(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 11) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 11, (3, 5))
    targets[0, :3] = -100
    targets[1, 4] = -100
    targets[2, :] = -100
    loss = guess_cross_entropy(logits, targets, reduction="token_mean")
    assert loss.dtype == torch.float32  # computed in float32 even from bf16 logits
    expected = manual_cross_entropy(logits.detach().float(), targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # a sum (or a mean over all positions) would differ: 6 supervised positions out of 15
    assert (targets != -100).sum() == 6
    loss.backward()
    assert logits.grad is not None and logits.grad[2].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


@pytest.mark.parametrize("reduction", ["sequence_sum", "token_mean"])
def test_row_weights_equal_repeating_the_rows(reduction):
    """A row computed once for k identical examples, weighted k, gives the loss of the k rows themselves."""
    torch.manual_seed(6)
    logits = torch.randn(3, 4, 9)
    targets = torch.randint(0, 9, (3, 4))
    targets[1, 2:] = -100  # rows of different target lengths
    counts = torch.tensor([3, 1, 2])
    repeated = guess_cross_entropy(
        logits.repeat_interleave(counts, dim=0), targets.repeat_interleave(counts, dim=0), reduction
    )
    weighted = guess_cross_entropy(logits, targets, reduction, weights=counts)
    assert weighted.item() == pytest.approx(repeated.item(), rel=1e-6)
    assert weighted.item() != pytest.approx(guess_cross_entropy(logits, targets, reduction).item(), rel=1e-3)


def test_guess_cross_entropy_custom_ignore_index():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, -1, -1], [-1, 3, 4, 5]])
    loss = guess_cross_entropy(logits, targets, reduction="token_mean", ignore_index=-1)
    assert loss.item() == pytest.approx(manual_cross_entropy(logits, targets, ignore_index=-1).item(), rel=1e-6)


def test_guess_cross_entropy_all_ignored_is_zero_and_attached():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    targets = torch.full((2, 3), -100)
    loss = guess_cross_entropy(logits, targets)
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_guess_cross_entropy_matches_a_model_lm_loss_after_shift():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 9)
    labels = torch.tensor([[-100, -100, 3, 4, 5, 1], [-100, -100, -100, 2, 2, -100]])
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1))
    loss = guess_cross_entropy(logits[:, :-1], labels[:, 1:], reduction="token_mean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------- rows_with_reward_signal


def trl_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """TRL 1.16's group advantages (sum_then_normalize, scale_rewards="group"), as its trainer computes them."""
    from trl.trainer.utils import nanstd

    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    std = nanstd(grouped, dim=1).repeat_interleave(num_generations)
    return (rewards - mean) / (std + 1e-4)


@pytest.mark.parametrize("num_generations", [8, 16])
@pytest.mark.parametrize("thirds", [1, 2, 4, 5])
def test_constant_rewards_in_thirds_carry_no_signal_though_trl_leaves_residue(num_generations, thirds):
    """The case that an exact test on |A| > 0 gets wrong: TRL's advantages of a constant 1/3 are not zero."""
    rewards = torch.full((2 * num_generations, 1), thirds / 3)
    advantages = trl_advantages(rewards.sum(1), num_generations)
    assert advantages.abs().max() > 0  # float residue over (std + 1e-4)
    signal = rows_with_reward_signal(rewards, torch.ones(1), num_generations)
    assert signal.dtype == torch.bool and not signal.any()


def test_reward_signal_is_per_group_of_the_weighted_sum():
    # group 0: both functions vary but their weighted sum is constant; group 1: one row differs; group 2: constant
    rewards = torch.tensor(
        [[1.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.0, 0.5]]
        + [[1 / 3, 0.0], [1 / 3, 0.0], [2 / 3, 0.0], [1 / 3, 0.0]]
        + [[1.0, 1.0]] * 4
    )
    signal = rows_with_reward_signal(rewards, torch.tensor([0.5, 1.0]), 4)
    assert signal.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_reward_signal_ignores_unscorable_rows():
    nan = float("nan")
    rewards = torch.tensor([[1.0], [nan], [1.0], [1.0]] + [[0.0], [nan], [1.0], [nan]] + [[nan], [nan], [2.0], [nan]])
    signal = rows_with_reward_signal(rewards, torch.ones(1), 4)
    # group 0: scorable rows equal; group 1: two scorable rows differ (not the unscorable ones); group 2: one value
    assert signal.tolist() == [False] * 4 + [True, False, True, False] + [False] * 4


def test_reward_signal_normalize_then_sum_is_batch_wide():
    """normalize_then_sum normalises the summed rewards over the batch: one varying group gives every row a signal."""
    rewards = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0], [0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert rows_with_reward_signal(rewards, torch.ones(2), 4, "normalize_then_sum").all()
    flat = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1 / 3]] * 4)
    assert not rows_with_reward_signal(flat, torch.ones(2), 4, "normalize_then_sum").any()
    with pytest.raises(ValueError, match="aggregation"):
        rows_with_reward_signal(flat, torch.ones(2), 4, "mean")


# ---------------------------------------------------------------- combine_gradients


def conflicting_pair():
    """Two parameters' gradients whose global cosine is negative."""
    sft = [torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([3.0, 0.5, -2.0])]
    rl = [torch.tensor([[-2.0, 0.0], [1.0, 1.0]]), torch.tensor([-1.0, 0.0, 1.0])]
    return sft, rl


def agreeing_pair():
    sft = [torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([3.0, 0.5, -2.0])]
    rl = [torch.tensor([[2.0, 1.0], [1.0, 0.0]]), torch.tensor([1.0, 0.0, -1.0])]
    return sft, rl


def expected_cosine(sft, rl) -> float:
    a, b = flat(sft), flat(rl)
    return float(a @ b / (a.norm() * b.norm()))


def combined(sft, rl, strategy, **kwargs):
    """Run the in-place combination on copies; return the decision, the result and the untouched SFT copy."""
    sft_copy, rl_copy = [s.clone() for s in sft], [r.clone() for r in rl]
    decision = combine_gradients(sft_copy, rl_copy, strategy, **kwargs)
    for s, original in zip(sft_copy, sft, strict=True):
        assert torch.equal(s, original)  # only the RL list is written
    return decision, rl_copy


def test_conflicting_gradients_drop_keeps_the_rl_gradient_in_place():
    sft, rl = conflicting_pair()
    cosine = expected_cosine(sft, rl)
    assert cosine < 0
    targets = [r.clone() for r in rl]
    pointers = [t.data_ptr() for t in targets]
    decision = combine_gradients(sft, targets, "drop")
    assert decision.conflict is True and (decision.sft_coef, decision.signal_coef) == (0.0, 0.0)
    assert decision.cosine == pytest.approx(cosine, abs=1e-12)
    assert [t.data_ptr() for t in targets] == pointers  # no copy
    assert all(torch.equal(t, r) for t, r in zip(targets, rl, strict=True))


def test_conflicting_gradients_project_removes_the_conflicting_component():
    sft, rl = conflicting_pair()
    decision, out = combined(sft, rl, "project")
    assert decision.conflict is True
    g_sft, g_rl, g_out = flat(sft), flat(rl), flat(out)
    g_sft_proj = g_out - g_rl
    assert float(g_sft_proj @ g_rl) == pytest.approx(0.0, abs=1e-6)
    # PCGrad: g_sft minus its component along g_rl
    expected = g_sft - (g_sft @ g_rl) / (g_rl @ g_rl) * g_rl
    assert torch.allclose(g_sft_proj, expected, atol=1e-6)
    assert decision.signal_coef == pytest.approx(-float(g_sft @ g_rl / (g_rl @ g_rl)))
    # the result's component along g_rl is the RL gradient's own
    assert float(g_out @ g_rl) == pytest.approx(float(g_rl @ g_rl), rel=1e-6)
    # the part orthogonal to g_rl is kept
    assert g_sft_proj.norm() > 0.1
    assert [g.shape for g in out] == [g.shape for g in sft]


def test_conflicting_gradients_none_returns_the_sum():
    sft, rl = conflicting_pair()
    decision, out = combined(sft, rl, "none")
    assert decision.conflict is True  # the cosine is reported whatever the strategy
    for g, s, r in zip(out, sft, rl, strict=True):
        assert torch.equal(g, s + r)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_agreeing_gradients_are_summed_by_every_strategy(strategy):
    sft, rl = agreeing_pair()
    assert expected_cosine(sft, rl) > 0
    decision, out = combined(sft, rl, strategy)
    assert decision.conflict is False
    assert decision.cosine == pytest.approx(expected_cosine(sft, rl), abs=1e-12)
    for g, s, r in zip(out, sft, rl, strict=True):
        assert torch.equal(g, s + r)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_without_a_policy_gradient_a_negative_cosine_is_no_conflict(strategy):
    """All advantages zero: the RL gradient is only the KL pull towards the reference; the SFT gradient is kept."""
    sft, rl = conflicting_pair()
    decision, out = combined(sft, rl, strategy, rl_has_policy_gradient=False)
    assert decision.conflict is False
    assert decision.cosine == pytest.approx(expected_cosine(sft, rl), abs=1e-12)  # still reported
    for g, s, r in zip(out, sft, rl, strict=True):
        assert torch.equal(g, s + r)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_orthogonal_gradients_do_not_conflict(strategy):
    decision, out = combined([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, -3.0])], strategy)
    assert decision.cosine == 0.0 and decision.conflict is False
    assert torch.equal(out[0], torch.tensor([1.0, -3.0]))


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_zero_rl_gradient_keeps_the_sft_gradient(strategy):
    sft = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    rl = [torch.zeros(2), torch.zeros(1, 1)]
    decision, out = combined(sft, rl, strategy)
    assert decision.cosine == 0.0 and decision.conflict is False
    for g, s in zip(out, sft, strict=True):
        assert torch.equal(g, s) and not torch.isnan(g).any()


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_zero_sft_gradient_keeps_the_rl_gradient(strategy):
    sft = [torch.zeros(2), torch.zeros(1, 1)]
    rl = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    decision, out = combined(sft, rl, strategy)
    assert decision.cosine == 0.0 and decision.conflict is False
    for g, r in zip(out, rl, strict=True):
        assert torch.equal(g, r) and not torch.isnan(g).any()


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_both_zero(strategy):
    decision, out = combined([torch.zeros(3)], [torch.zeros(3)], strategy)
    assert decision.cosine == 0.0 and decision.conflict is False and torch.equal(out[0], torch.zeros(3))


def test_cosine_is_global_over_all_parameters():
    # per parameter the gradients conflict on the first and agree on the second, but globally they agree
    sft = [torch.tensor([1.0]), torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 1, 2)]
    rl = [torch.tensor([-1.0]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.ones(2, 1, 2)]
    decision, out = combined(sft, rl, "drop")
    assert decision.cosine == pytest.approx(expected_cosine(sft, rl), abs=1e-12)
    assert decision.cosine == pytest.approx(5.0 / (math.sqrt(10.0) * math.sqrt(10.0)), abs=1e-12)
    assert decision.conflict is False
    assert all(torch.equal(g, s + r) for g, s, r in zip(out, sft, rl, strict=True))
    # and the other way round: agreeing on one parameter, globally conflicting
    sft = [torch.tensor([1.0]), torch.tensor([[3.0, 0.0], [0.0, 0.0]])]
    rl = [torch.tensor([1.0]), torch.tensor([[-2.0, 0.0], [0.0, 1.0]])]
    decision, out = combined(sft, rl, "drop")
    assert decision.cosine == pytest.approx(-5.0 / (math.sqrt(10.0) * math.sqrt(6.0)), abs=1e-12)
    assert decision.conflict is True
    assert all(torch.equal(g, r) for g, r in zip(out, rl, strict=True))
    projected = flat(combined(sft, rl, "project")[1]) - flat(rl)
    assert float(projected @ flat(rl)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_policy_gradient_signal_decides_and_the_whole_rl_gradient_is_applied(strategy):
    """The cosine is taken with the signal (the policy term); the update adds the whole RL gradient, and `project`
    removes from the SFT gradient its component along the signal."""
    sft = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5, -1.0]])]
    signal = [torch.tensor([-1.0, -1.0]), torch.tensor([[0.0, 1.0]])]  # conflicts with sft
    kl = [torch.tensor([2.0, 2.0]), torch.tensor([[1.0, 0.0]])]
    rl = [s + k for s, k in zip(signal, kl, strict=True)]  # agrees with sft: the KL pull hides the conflict
    assert expected_cosine(sft, rl) > 0 > expected_cosine(sft, signal)
    rl_copy = [r.clone() for r in rl]
    decision = combine_gradients(sft, rl_copy, strategy, signal_grads=signal)
    assert decision.cosine == pytest.approx(expected_cosine(sft, signal), abs=1e-12)
    g_s, g_sig, g_r = flat(sft), flat(signal), flat(rl)
    expected = {
        "drop": g_r,
        "project": g_r + g_s - (g_s @ g_sig) / (g_sig @ g_sig) * g_sig,
        "none": g_r + g_s,
    }[strategy]
    assert torch.allclose(flat(rl_copy), expected, atol=1e-6)
    # with the whole RL gradient as the signal there is no conflict: the sum
    rl_copy = [r.clone() for r in rl]
    assert combine_gradients(sft, rl_copy, strategy).conflict is False
    assert torch.allclose(flat(rl_copy), g_r + g_s)


def test_none_entries_are_zero_gradients_in_every_norm():
    """A parameter the SFT loss does not reach (None) still counts in ‖g_r‖² and is rescaled by `project`."""
    sft = [torch.tensor([1.0, 0.0]), None]
    rl = [torch.tensor([-1.0, 0.0]), torch.tensor([0.0, 3.0])]
    assert gradient_dots(sft, rl) == (-1.0, 1.0, 10.0)
    rl_copy = [r.clone() for r in rl]
    decision = combine_gradients(sft, rl_copy, "project")
    assert decision.cosine == pytest.approx(-1 / math.sqrt(10))
    g_s, g_r = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64), flat(rl)
    assert torch.allclose(flat(rl_copy), g_r + g_s - (g_s @ g_r) / (g_r @ g_r) * g_r)
    assert gradient_dots([None], [None]) == (0.0, 0.0, 0.0)


def test_accumulate_gradients_sums_in_place_with_none_as_zero():
    first = [torch.ones(2), None, None]
    buffer = accumulate_gradients(None, first)
    pointer = buffer[0].data_ptr()
    buffer = accumulate_gradients(buffer, [torch.ones(2), torch.full((1,), 2.0), None])
    assert buffer[0].data_ptr() == pointer and torch.equal(buffer[0], torch.full((2,), 2.0))
    assert torch.equal(buffer[1], torch.full((1,), 2.0)) and buffer[2] is None


def test_unknown_strategy_raises():
    sft, rl = agreeing_pair()
    with pytest.raises(ValueError, match="Unknown conflict strategy 'pcgrad'"):
        combine_gradients(sft, rl, "pcgrad")


def test_mismatched_gradient_lists_raise():
    with pytest.raises(ValueError):
        combine_gradients([torch.ones(2)], [torch.ones(2), torch.ones(3)], "none")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_dots_are_accurate_without_whole_float64_copies(monkeypatch, dtype):
    """Half-precision tensors are dotted in float32 chunks (made tiny here), summed per tensor in float64."""
    monkeypatch.setattr(losses, "_DOT_CHUNK", 7)
    torch.manual_seed(5)
    sft = [torch.randn(5, 6).to(dtype), torch.randn(31).to(dtype)]
    rl = [torch.randn(5, 6).to(dtype), torch.randn(31).to(dtype)]
    dot, sft_sq, rl_sq = gradient_dots(sft, rl)
    a, b = flat(sft), flat(rl)  # float64 reference of the same (rounded) values
    assert dot == pytest.approx(float(a @ b), rel=1e-5)
    assert sft_sq == pytest.approx(float(a @ a), rel=1e-5)
    assert rl_sq == pytest.approx(float(b @ b), rel=1e-5)


def test_conflict_decision_coefficients():
    assert conflict_decision(-2.0, 4.0, 4.0, "drop") == ConflictDecision(-0.5, True, 0.0, 0.0)
    assert conflict_decision(-2.0, 4.0, 4.0, "project") == ConflictDecision(-0.5, True, 1.0, 0.5)
    assert conflict_decision(-2.0, 4.0, 4.0, "none") == ConflictDecision(-0.5, True, 1.0, 0.0)
    assert conflict_decision(2.0, 4.0, 4.0, "drop") == ConflictDecision(0.5, False, 1.0, 0.0)
    assert conflict_decision(-2.0, 4.0, 4.0, "drop", rl_has_policy_gradient=False).conflict is False


# ---------------------------------------------------------------- gradient_surrogate


def test_gradient_surrogate_has_the_given_value_and_gradients():
    torch.manual_seed(3)
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    grads = [torch.randn(3, 2), torch.randn(4)]
    value = torch.tensor(1.2345)
    surrogate = gradient_surrogate(params, grads, value)
    assert surrogate.item() == pytest.approx(1.2345, abs=1e-6)
    assert surrogate.requires_grad
    got = torch.autograd.grad(surrogate, params)
    for g, expected in zip(got, grads, strict=True):
        assert torch.allclose(g, expected, atol=1e-6)


def test_gradient_surrogate_detaches_value_and_grads():
    torch.manual_seed(4)
    param = torch.randn(5, requires_grad=True)
    other = torch.randn(5, requires_grad=True)
    value = (other**2).sum()  # attached to another graph: must not contribute gradients
    grads = [other * 2]  # a grad tensor attached to the graph must be treated as a constant
    surrogate = gradient_surrogate([param], grads, value)
    assert surrogate.item() == pytest.approx(value.item(), rel=1e-6)
    surrogate.backward()
    assert torch.allclose(param.grad, (other * 2).detach())
    assert other.grad is None


def test_gradient_surrogate_in_low_precision_params():
    param = torch.randn(4, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.tensor([1.0, -2.0, 0.5, 4.0])
    surrogate = gradient_surrogate([param], [grad], torch.tensor(0.25))
    (got,) = torch.autograd.grad(surrogate, [param])
    assert got.dtype == torch.bfloat16
    assert torch.equal(got.float(), grad)
    assert surrogate.float().item() == pytest.approx(0.25, abs=1e-2)

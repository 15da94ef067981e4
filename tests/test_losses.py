"""`trl_gta.losses`: the supervised guess loss and the rules that combine the SFT and RL gradients."""

import math

import pytest
import torch

from trl_gta.losses import CONFLICT_STRATEGIES, combine_gradients, gradient_surrogate, guess_cross_entropy


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


def test_conflicting_gradients_drop_returns_the_rl_gradient():
    sft, rl = conflicting_pair()
    cosine = expected_cosine(sft, rl)
    assert cosine < 0
    out = combine_gradients(sft, rl, "drop")
    assert out.conflict is True
    assert out.cosine == pytest.approx(cosine, abs=1e-12)
    assert len(out.grads) == 2
    for g, r in zip(out.grads, rl, strict=True):
        assert g.shape == r.shape and torch.equal(g, r)
    out.grads[0].add_(1.0)  # a copy, not the caller's tensor
    assert torch.equal(rl[0], conflicting_pair()[1][0])


def test_conflicting_gradients_project_removes_the_conflicting_component():
    sft, rl = conflicting_pair()
    out = combine_gradients(sft, rl, "project")
    assert out.conflict is True
    g_sft, g_rl, g_out = flat(sft), flat(rl), flat(out.grads)
    g_sft_proj = g_out - g_rl
    assert float(g_sft_proj @ g_rl) == pytest.approx(0.0, abs=1e-6)
    # PCGrad: g_sft minus its component along g_rl
    expected = g_sft - (g_sft @ g_rl) / (g_rl @ g_rl) * g_rl
    assert torch.allclose(g_sft_proj, expected, atol=1e-6)
    # the result's component along g_rl is the RL gradient's own
    assert float(g_out @ g_rl) == pytest.approx(float(g_rl @ g_rl), rel=1e-6)
    # the part orthogonal to g_rl is kept
    assert g_sft_proj.norm() > 0.1
    assert [g.shape for g in out.grads] == [g.shape for g in sft]


def test_conflicting_gradients_none_returns_the_sum():
    sft, rl = conflicting_pair()
    out = combine_gradients(sft, rl, "none")
    assert out.conflict is True  # the cosine is reported whatever the strategy
    for g, s, r in zip(out.grads, sft, rl, strict=True):
        assert torch.equal(g, s + r)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_agreeing_gradients_are_summed_by_every_strategy(strategy):
    sft, rl = agreeing_pair()
    assert expected_cosine(sft, rl) > 0
    out = combine_gradients(sft, rl, strategy)
    assert out.conflict is False
    assert out.cosine == pytest.approx(expected_cosine(sft, rl), abs=1e-12)
    for g, s, r in zip(out.grads, sft, rl, strict=True):
        assert torch.equal(g, s + r)


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_orthogonal_gradients_do_not_conflict(strategy):
    sft, rl = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, -3.0])]
    out = combine_gradients(sft, rl, strategy)
    assert out.cosine == 0.0 and out.conflict is False
    assert torch.equal(out.grads[0], torch.tensor([1.0, -3.0]))


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_zero_rl_gradient_keeps_the_sft_gradient(strategy):
    sft = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    rl = [torch.zeros(2), torch.zeros(1, 1)]
    out = combine_gradients(sft, rl, strategy)
    assert out.cosine == 0.0 and out.conflict is False
    for g, s in zip(out.grads, sft, strict=True):
        assert torch.equal(g, s) and not torch.isnan(g).any()


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_zero_sft_gradient_keeps_the_rl_gradient(strategy):
    sft = [torch.zeros(2), torch.zeros(1, 1)]
    rl = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    out = combine_gradients(sft, rl, strategy)
    assert out.cosine == 0.0 and out.conflict is False
    for g, r in zip(out.grads, rl, strict=True):
        assert torch.equal(g, r) and not torch.isnan(g).any()


@pytest.mark.parametrize("strategy", CONFLICT_STRATEGIES)
def test_both_zero(strategy):
    out = combine_gradients([torch.zeros(3)], [torch.zeros(3)], strategy)
    assert out.cosine == 0.0 and out.conflict is False and torch.equal(out.grads[0], torch.zeros(3))


def test_cosine_is_global_over_all_parameters():
    # per parameter the gradients conflict on the first and agree on the second, but globally they agree
    sft = [torch.tensor([1.0]), torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 1, 2)]
    rl = [torch.tensor([-1.0]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.ones(2, 1, 2)]
    out = combine_gradients(sft, rl, "drop")
    assert out.cosine == pytest.approx(expected_cosine(sft, rl), abs=1e-12)
    assert out.cosine == pytest.approx(5.0 / (math.sqrt(10.0) * math.sqrt(10.0)), abs=1e-12)
    assert out.conflict is False
    assert all(torch.equal(g, s + r) for g, s, r in zip(out.grads, sft, rl, strict=True))
    # and the other way round: agreeing on one parameter, globally conflicting
    sft = [torch.tensor([1.0]), torch.tensor([[3.0, 0.0], [0.0, 0.0]])]
    rl = [torch.tensor([1.0]), torch.tensor([[-2.0, 0.0], [0.0, 1.0]])]
    out = combine_gradients(sft, rl, "drop")
    assert out.cosine == pytest.approx(-5.0 / (math.sqrt(10.0) * math.sqrt(6.0)), abs=1e-12)
    assert out.conflict is True
    assert all(torch.equal(g, r) for g, r in zip(out.grads, rl, strict=True))
    projected = flat(combine_gradients(sft, rl, "project").grads) - flat(rl)
    assert float(projected @ flat(rl)) == pytest.approx(0.0, abs=1e-6)


def test_unknown_strategy_raises():
    sft, rl = agreeing_pair()
    with pytest.raises(ValueError, match="Unknown conflict strategy 'pcgrad'"):
        combine_gradients(sft, rl, "pcgrad")


def test_mismatched_gradient_lists_raise():
    with pytest.raises(ValueError):
        combine_gradients([torch.ones(2)], [torch.ones(2), torch.ones(3)], "none")


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

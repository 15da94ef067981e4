"""A hand-made reference for one optimizer step of GTATrainer: record what the trainer saw, redo the step by hand.

`record_steps` wraps a trainer so that every optimizer step keeps its micro-batches (as `compute_loss` received them)
and the trainable parameters before and after it. `reference_update` recomputes, from the parameters before, each
micro-batch's SFT and RL gradients with plain `torch.autograd.grad`, combines them at the given scope (per step: sum
over micro-batches, mean over processes, one decision; per micro-batch: one decision each, then sum and mean),
clips the result like `torch.nn.utils.clip_grad_norm_` and returns the SGD update `-lr * g`.

The supervised loss is recomputed row by row (one forward per completion row, no deduplication): the mean over the
micro-batch's rows of each row's summed guess negative log-likelihood. The policy term alone (for
`conflict_signal="policy_gradient"`) is TRL's loss rerun with `beta = 0`, a forward of its own. A step has a policy
gradient when some advantage is far from float residue (|A| > 1e-2).
"""

import torch
from transformers import TrainerCallback

from trl_gta.losses import ConflictDecision, combine_gradients


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def _detached(inputs: dict) -> dict:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def record_steps(trainer) -> list[dict]:
    """Each optimizer step as `{"before": params, "inputs": [micro-batch inputs], "after": params}`."""
    steps: list[dict] = []

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps.append({"before": _snapshot(trainer.model), "inputs": []})

        def on_step_end(self, args, state, control, **kwargs):
            steps[-1]["after"] = _snapshot(trainer.model)

    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, *args, **kwargs):
        if model.training:
            steps[-1]["inputs"].append(_detached(inputs))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_compute_loss
    trainer.add_callback(Recorder())
    return steps


def row_by_row_guess_loss(model, inputs: dict, reduction: str = "sequence_sum") -> torch.Tensor:
    """L_SFT of a micro-batch from one forward per completion row: each row's prompt (padding removed) followed by
    its gold-guess target, the negative log-likelihood of the target tokens, averaged over rows (`sequence_sum`) or
    over all target tokens of all rows (`token_mean`)."""
    total, tokens = 0.0, 0
    rows = inputs["prompt_ids"].size(0)
    for r in range(rows):
        prompt = inputs["prompt_ids"][r][inputs["prompt_mask"][r].bool()]
        target = inputs["gta_target_ids"][r][inputs["gta_target_mask"][r].bool()]
        logits = model(input_ids=torch.cat([prompt, target])[None]).logits[0].float()
        logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        total = total - logprobs.gather(1, target[:, None]).sum()
        tokens += len(target)
    return total / (rows if reduction == "sequence_sum" else tokens)


def micro_batch_gradients(trainer, model, inputs: dict, accumulation: int, policy: bool = False) -> tuple:
    """The weighted, accumulation-scaled SFT and RL gradients of one micro-batch, by `torch.autograd.grad`; with
    `policy`, also the gradient of the RL loss's policy term alone (TRL's loss with `beta = 0`)."""
    model.train()
    trainer.current_gradient_accumulation_steps = accumulation
    params = list(trainable(model).values())
    sft = trainer.args.sft_weight * row_by_row_guess_loss(model, inputs, trainer.args.sft_loss_reduction)
    losses = [sft / accumulation, trainer._rl_term(model, inputs)]  # rl_weight x TRL's loss (+ what a test adds)
    if policy:
        beta, trainer.beta = trainer.beta, 0.0
        try:
            losses.append(trainer._rl_term(model, inputs))
        finally:
            trainer.beta = beta
    grads = [torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True) for loss in losses]
    return tuple([g.clone() for g in gradient] for gradient in grads)


def has_policy_gradient(inputs: dict) -> bool:
    return bool(inputs["advantages"].abs().max() > 1e-2)


def _mean_of_sums(per_rank: list[list[list[torch.Tensor]]]) -> list[torch.Tensor]:
    """Sum over micro-batches, mean over ranks, per parameter."""
    ranks = [[torch.stack(parts).sum(0) for parts in zip(*micro, strict=True)] for micro in per_rank]
    return [torch.stack(parts).mean(0) for parts in zip(*ranks, strict=True)]


def reference_update(
    trainer,
    model,
    before: dict,
    inputs_per_rank: list[list[dict]],
    scope: str,
    strategy: str,
    signal: str = "rl_loss",
) -> tuple[dict[str, torch.Tensor], list[ConflictDecision]]:
    """The SGD update of one optimizer step recomputed by hand, and the decision(s) the rule took."""
    with torch.no_grad():
        for name, p in trainable(model).items():
            p.copy_(before[name])
    accumulation = len(inputs_per_rank[0])
    policy = signal == "policy_gradient"
    grads = [
        [micro_batch_gradients(trainer, model, x, accumulation, policy) for x in micro] for micro in inputs_per_rank
    ]
    if scope == "step":
        sft = _mean_of_sums([[g[0] for g in micro] for micro in grads])
        combined = _mean_of_sums([[g[1] for g in micro] for micro in grads])
        signal_grads = _mean_of_sums([[g[2] for g in micro] for micro in grads]) if policy else None
        any_policy = any(has_policy_gradient(x) for micro in inputs_per_rank for x in micro)
        decisions = [combine_gradients(sft, combined, strategy, any_policy, signal_grads)]
    else:
        decisions = []
        for micro, rank_inputs in zip(grads, inputs_per_rank, strict=True):
            for g, x in zip(micro, rank_inputs, strict=True):
                signal_grads = g[2] if policy else None
                decisions.append(combine_gradients(g[0], g[1], strategy, has_policy_gradient(x), signal_grads))
        combined = _mean_of_sums([[g[1] for g in micro] for micro in grads])
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in combined]))
    coef = min(1.0, trainer.args.max_grad_norm / (float(norm) + 1e-6))
    lr = trainer.args.learning_rate
    update = {name: -lr * coef * g for name, g in zip(trainable(model), combined, strict=True)}
    return update, decisions

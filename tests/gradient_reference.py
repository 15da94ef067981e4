"""A hand-made reference for one optimizer step of GTATrainer: record what the trainer saw, redo the step by hand.

`record_steps` wraps a trainer so that every optimizer step keeps its micro-batches (as `compute_loss` received them)
and the trainable parameters before and after it. `reference_update` recomputes, from the parameters before, each
micro-batch's SFT and RL gradients with plain `torch.autograd.grad`, combines them at the given scope (per step: sum
over micro-batches, mean over processes, one decision; per micro-batch: one decision each, then sum and mean),
clips the result like `torch.nn.utils.clip_grad_norm_` and returns the SGD update `-lr * g`.
"""

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

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


def micro_batch_gradients(trainer, model, inputs: dict, accumulation: int) -> tuple[list, list]:
    """The weighted, accumulation-scaled SFT and RL gradients of one micro-batch, by `torch.autograd.grad`."""
    model.train()
    trainer.current_gradient_accumulation_steps = accumulation
    params = list(trainable(model).values())
    sft = trainer.args.sft_weight * trainer._guess_loss(model, inputs) / accumulation
    rl = trainer.args.rl_weight * GRPOTrainer.compute_loss(trainer, model, inputs)
    grads = [torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True) for loss in (sft, rl)]
    return [g.clone() for g in grads[0]], [g.clone() for g in grads[1]]


def _mean_of_sums(per_rank: list[list[list[torch.Tensor]]]) -> list[torch.Tensor]:
    """Sum over micro-batches, mean over ranks, per parameter."""
    ranks = [[torch.stack(parts).sum(0) for parts in zip(*micro, strict=True)] for micro in per_rank]
    return [torch.stack(parts).mean(0) for parts in zip(*ranks, strict=True)]


def reference_update(
    trainer, model, before: dict, inputs_per_rank: list[list[dict]], scope: str, strategy: str
) -> tuple[dict[str, torch.Tensor], list[ConflictDecision]]:
    """The SGD update of one optimizer step recomputed by hand, and the decision(s) the rule took."""
    with torch.no_grad():
        for name, p in trainable(model).items():
            p.copy_(before[name])
    accumulation = len(inputs_per_rank[0])
    grads = [[micro_batch_gradients(trainer, model, x, accumulation) for x in micro] for micro in inputs_per_rank]
    if scope == "step":
        sft = _mean_of_sums([[s for s, _ in micro] for micro in grads])
        combined = _mean_of_sums([[r for _, r in micro] for micro in grads])
        policy = any(bool(x["advantages"].abs().max() > 0) for micro in inputs_per_rank for x in micro)
        decisions = [combine_gradients(sft, combined, strategy, rl_has_policy_gradient=policy)]
    else:
        decisions = []
        for micro, rank_inputs in zip(grads, inputs_per_rank, strict=True):
            for (s, r), x in zip(micro, rank_inputs, strict=True):
                decisions.append(combine_gradients(s, r, strategy, bool(x["advantages"].abs().max() > 0)))
        combined = _mean_of_sums([[r for _, r in micro] for micro in grads])
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in combined]))
    coef = min(1.0, trainer.args.max_grad_norm / (float(norm) + 1e-6))
    lr = trainer.args.learning_rate
    update = {name: -lr * coef * g for name, g in zip(trainable(model), combined, strict=True)}
    return update, decisions

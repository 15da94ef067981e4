from contextlib import nullcontext

import pytest
import torch
from conftest import gta_args, length_reward
from gradient_reference import record_steps
from trl.trainer import utils as trl_utils

import trl_gta.trainer as trainer_module
from trl_gta.padding import group_by_length, score_labelled_positions_only, trim_padding


def padded_batch() -> dict:
    """3 rows: prompts left-padded to 4 columns (2 pad every row), completions right-padded to 5 (2 pad every row)."""
    completion_mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return {
        "prompt_ids": torch.tensor([[0, 0, 7, 8], [0, 0, 0, 9], [0, 0, 6, 6]]),
        "prompt_mask": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]]),
        "completion_ids": torch.arange(15).view(3, 5) * completion_mask,
        "completion_mask": completion_mask,
        "tool_mask": completion_mask.clone(),
        "old_per_token_logps": torch.randn(3, 5),
        "advantages": torch.tensor([0.5, -1.0, 0.5]),
        "importance_sampling_ratio": torch.ones(3, 1),  # per sequence: not per token
        "gta_target_ids": torch.arange(15).view(3, 5),  # per row, as wide as the completions by chance
        "num_items_in_batch": torch.tensor(6),
        "texts": ["a", "b", "c"],
    }


def test_trim_padding_drops_exactly_the_columns_that_pad_every_row():
    batch = padded_batch()
    trimmed = trim_padding(batch)
    assert torch.equal(trimmed["prompt_ids"], batch["prompt_ids"][:, 2:])
    assert torch.equal(trimmed["prompt_mask"], batch["prompt_mask"][:, 2:])
    for key in ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps"):
        assert torch.equal(trimmed[key], batch[key][:, :3]), key
    for key in ("advantages", "importance_sampling_ratio", "gta_target_ids", "num_items_in_batch", "texts"):
        assert trimmed[key] is batch[key], key
    assert batch["completion_ids"].shape == (3, 5)  # the input is left as it was


def test_trim_padding_keeps_one_column_when_no_row_has_a_token():
    batch = padded_batch()
    batch["completion_mask"] = torch.zeros(3, 5, dtype=torch.long)
    assert trim_padding(batch)["completion_ids"].shape == (3, 1)


def test_group_by_length_sorts_each_step_and_moves_rows_whole():
    lengths = [1, 4, 2, 3, 5, 1, 2, 2]  # 4 micro-batches of 2 rows, 2 per optimizer step
    rows = torch.arange(8)
    masks = torch.stack([torch.arange(6) < n for n in lengths]).long()
    micro_batches = [
        {
            "completion_mask": masks[i : i + 2],
            "row": rows[i : i + 2],
            "name": [f"row {r}" for r in range(i, i + 2)],
            "num_items_in_batch": torch.tensor(20),
            "missing": None,
        }
        for i in range(0, 8, 2)
    ]
    grouped = group_by_length(micro_batches, window=2)
    assert len(grouped) == 4 and all(len(b["row"]) == 2 for b in grouped)
    order = [r for b in grouped for r in b["row"].tolist()]
    assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:]) == [4, 5, 6, 7]  # no row leaves its step
    assert [lengths[r] for r in order[:4]] == [4, 3, 2, 1] and [lengths[r] for r in order[4:]] == [5, 2, 2, 1]
    for batch in grouped:
        assert batch["name"] == [f"row {r}" for r in batch["row"].tolist()]
        assert torch.equal(batch["completion_mask"], masks[batch["row"]])
        assert batch["num_items_in_batch"].item() == 20 and batch["missing"] is None


def test_group_by_length_refuses_a_window_that_does_not_divide_the_micro_batches():
    batch = {"completion_mask": torch.ones(2, 3)}
    with pytest.raises(ValueError, match="do not split into optimizer steps of 2"):
        group_by_length([batch] * 3, window=2)


def test_cpu_scoring_of_labelled_positions_gives_the_same_log_probs_and_gradients(make_trainer, monkeypatch):
    """TRL's fused head scores the completion tokens only inside the block (not every prompt and padding position),
    with the same log-probs and gradients; outside it, TRL's own choice is back."""
    trainer = make_trainer(trainer_kwargs={"reward_funcs": [length_reward]})
    model = trainer.model
    input_ids = torch.randint(3, 300, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0  # left padding of the prompt
    attention_mask[2, -2:] = 0  # right padding of the completion
    scored = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(
        trl_utils._ChunkedLogProbFunction, "apply", lambda hidden, *a: scored.append(len(hidden)) or apply(hidden, *a)
    )
    results = {}
    for compact in (False, True):
        switch = score_labelled_positions_only if compact else (lambda device: nullcontext())  # TRL's own path
        monkeypatch.setattr(trainer_module, "score_labelled_positions_only", switch)
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep=4, compute_entropy=True
        )
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad((logps * 0.7 + entropies * 0.3).sum(), params)
        results[compact] = logps, entropies, grads
    assert scored == [3 * 8, 4 + 4 + 2]  # every position but the last, then the completion's real tokens
    for got, want in zip(results[True][:2], results[False][:2], strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip(results[True][2], results[False][2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored after the block


def test_scoring_switch_is_left_alone_off_a_cpu():
    original = trl_utils._use_triton
    with score_labelled_positions_only(torch.device("meta")):
        assert trl_utils._use_triton is original
    with score_labelled_positions_only(torch.device("cpu")):
        assert trl_utils._use_triton(torch.device("cpu"))
    assert trl_utils._use_triton is original


def test_trimmed_and_grouped_micro_batches_give_the_same_update(make_trainer, monkeypatch):
    """4 prompts x 4 completions of varied lengths in 4 micro-batches per step: the plain layout (TRL's random split,
    full width), trimmed micro-batches, and micro-batches grouped by length then trimmed update the weights alike."""
    layouts = {"plain": (False, False), "trimmed": (True, False), "grouped": (True, True)}
    updates, widths, lengths = {}, {}, {}
    for name, (trim, group) in layouts.items():
        if not trim:
            monkeypatch.setattr(trainer_module, "trim_padding", lambda batch: batch)
        trainer = make_trainer(
            trainer_kwargs={"reward_funcs": [length_reward]},
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            per_device_train_batch_size=4,
            gradient_accumulation_steps=4,
            max_completion_length=16,
            generation_kwargs={"exponential_decay_length_penalty": (2, 1.5)},  # EOS ever likelier: lengths vary
            max_steps=1,
            group_by_completion_length=group,
            seed=3,
        )
        steps = record_steps(trainer)
        trainer.train()
        monkeypatch.undo()
        (step,) = steps
        updates[name] = {key: step["after"][key] - step["before"][key] for key in step["before"]}
        widths[name] = [x["completion_ids"].size(1) for x in step["inputs"]]
        lengths[name] = [x["completion_mask"].sum(dim=1).tolist() for x in step["inputs"]]
    assert len(set(widths["plain"])) == 1 and min(widths["trimmed"]) < widths["plain"][0], widths
    assert sum(widths["grouped"]) <= sum(widths["trimmed"]), widths
    grouped = lengths["grouped"]
    assert all(min(a) >= max(b) for a, b in zip(grouped, grouped[1:], strict=False)), grouped  # longest first
    for name in ("trimmed", "grouped"):
        for key, expected in updates["plain"].items():
            torch.testing.assert_close(updates[name][key], expected, rtol=1e-4, atol=1e-7)


def test_grouping_needs_whole_optimizer_steps_within_a_generation(tmp_path):
    with pytest.raises(ValueError, match=r"steps_per_generation \(3\) must be a multiple"):
        gta_args(tmp_path, group_by_completion_length=True, gradient_accumulation_steps=2, steps_per_generation=3)

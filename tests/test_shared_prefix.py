"""The shared prompt prefix computed once gives the plain forward's outputs, gradients and generations."""

import pytest
import torch
from conftest import tiny_model
from trl.trainer.utils import add_fused_lm_head

from trl_gta.shared_prefix import (
    cache_argument,
    drop_prefix,
    forward_with_shared_prefix,
    generate_with_shared_prefix,
    shared_prefix_generation,
    shared_prefix_length,
)

LEFT_IDS = torch.tensor([[0, 0, 7, 8, 9, 10, 11], [7, 8, 9, 12, 13, 14, 15], [0, 7, 8, 9, 16, 17, 18]])
LEFT_MASK = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])


def test_prefix_length_left_and_right_padding():
    assert shared_prefix_length(LEFT_IDS, LEFT_MASK) == 3
    assert shared_prefix_length(LEFT_IDS, LEFT_MASK, limit=2) == 2
    right_ids = torch.tensor([[7, 8, 5, 0], [7, 8, 6, 6]])
    assert shared_prefix_length(right_ids, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])) == 2
    assert shared_prefix_length(torch.tensor([[1, 2], [3, 2]]), torch.ones(2, 2, dtype=torch.long)) == 0
    # a row shorter than the common run caps it
    assert shared_prefix_length(torch.tensor([[7, 8, 9], [0, 0, 7]]), torch.tensor([[1, 1, 1], [0, 0, 1]])) == 1


def test_padding_inside_a_row_is_refused():
    with pytest.raises(ValueError, match="in one run"):
        shared_prefix_length(torch.tensor([[1, 0, 2]]), torch.tensor([[1, 0, 1]]))


def test_drop_prefix_keeps_left_padding_in_place():
    assert drop_prefix(LEFT_IDS, LEFT_MASK, 3).tolist() == [[0, 0, 10, 11], [12, 13, 14, 15], [0, 16, 17, 18]]


@pytest.fixture(params=["qwen2", "llama"])
def model(request, tokenizer):
    return tiny_model(tokenizer, arch=request.param).float()


def _plain(model, ids, mask, **kwargs):
    return model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0), **kwargs)


def test_forward_outputs_and_gradients_match_the_plain_forward(model):
    """Every kept real token's logits (column j is the input's j + k) and the gradients they send."""
    params = [p for p in model.parameters() if p.requires_grad]
    kept = drop_prefix(LEFT_MASK, LEFT_MASK, 3).bool()
    plain = _plain(model, LEFT_IDS, LEFT_MASK).logits[:, 3:][kept]
    plain_grads = torch.autograd.grad(plain.logsumexp(-1).sum(), params)
    outputs, k = forward_with_shared_prefix(model, LEFT_IDS, LEFT_MASK)
    assert k == 3
    shared = outputs.logits[kept]
    torch.testing.assert_close(shared, plain)
    shared_grads = torch.autograd.grad(shared.logsumexp(-1).sum(), params)
    for got, want in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_fused_log_probs_match_and_keep_their_columns(model):
    """TRL's RL forward: labels scored by the fused LM head, read from the right (`[:, -logits_to_keep:]`)."""
    add_fused_lm_head(model)
    labels = LEFT_IDS.masked_fill(LEFT_MASK == 0, -100)
    labels[:, :-2] = -100
    plain = _plain(model, LEFT_IDS, LEFT_MASK, labels=labels, fused_lm_head=True).log_probs[:, -2:]
    shared, k = forward_with_shared_prefix(model, LEFT_IDS, LEFT_MASK, labels=labels, fused_lm_head=True)
    assert k == 2  # row 0's first scored token (column 5) is predicted from column 4, its third real token
    torch.testing.assert_close(shared.log_probs[:, -2:], plain)


def test_limit_leaves_every_row_its_scored_positions(model):
    """Identical prompts would share everything: the limit keeps the positions that predict the scored tokens."""
    ids = torch.tensor([[7, 8, 9, 10, 11], [7, 8, 9, 10, 12]])
    mask = torch.ones_like(ids)
    plain = _plain(model, ids, mask, logits_to_keep=3).logits
    shared, k = forward_with_shared_prefix(model, ids, mask, limit=2, logits_to_keep=3)
    assert k == 2
    torch.testing.assert_close(shared.logits, plain)


def test_generation_matches_plain_generation(model, tokenizer):
    ids, mask = LEFT_IDS.clone(), LEFT_MASK.clone()
    ids[mask == 0] = tokenizer.pad_token_id
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
    shared = generate_with_shared_prefix(model, model.generate, ids, mask, **settings)
    assert shared.shape == plain.shape
    assert torch.equal(shared[:, ids.size(1) :], plain[:, ids.size(1) :])
    with shared_prefix_generation(model):
        patched = model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert "generate" not in vars(model)  # the patch is gone after the block
    assert torch.equal(patched, shared)


def test_cache_argument_follows_the_forward_signature():
    class Renamed:  # transformers' newer name
        def forward(self, input_ids, cache=None, **kwargs): ...

    class Legacy:
        def forward(self, input_ids, past_key_values=None, **kwargs): ...

    class Wrapped:  # a PEFT model: `forward(*args, **kwargs)` over its base model
        def forward(self, *args, **kwargs): ...

        def get_base_model(self):
            return Renamed()

    assert [cache_argument(m) for m in (Renamed(), Legacy(), Wrapped())] == ["cache", "past_key_values", "cache"]

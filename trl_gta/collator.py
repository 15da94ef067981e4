"""Teacher-forced batches of `prompt + <guess>GOLD</guess>` for the supervised guess loss.

The prompt is tokenized exactly as TRL's GRPOTrainer does and the target is tokenized on its own and appended, the
way sampled tokens are appended during generation, so the supervised loss sees the token sequence the policy would
have to sample.
"""

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .prompts import tokenize_prompt
from .reply_format import GTA_TAGS, GUESS_TARGET, guess_follower, target_continuation


def target_token_ids(
    tokenizer, label: str, response_prefix: str = "", template: str = GUESS_TARGET, following: str = ""
) -> list[int]:
    """Token ids of the teacher-forced target for `label`, after the response prefix.

    `following` is what comes after the target in a whole reply (`"<think>"` after the guess block). The target is
    then tokenized in that context and cut after the last token carrying a target character, so a token that
    straddles the boundary (BPE often merges `></guess>` and `<think>` into `><`) is kept whole: the model is taught
    the tokens it samples in a well-formed reply, not a tokenization that never occurs there.
    """
    text = target_continuation(template.format(label=label), response_prefix)
    if not following:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(text + following, add_special_tokens=False, return_offsets_mapping=True)
    last = max(i for i, (start, _) in enumerate(encoded["offset_mapping"]) if start < len(text))
    return encoded["input_ids"][: last + 1]


def label_free_targets(tokenizer, label: str, response_prefix: str, template: str) -> tuple[list[int], list[int]]:
    """Target ids and their labels with every token that carries a character of the label name set to -100.

    Used by the format warm-up: the model learns the tags and layout of the reply, not which label is right.
    """
    pieces = template.split("{label}")
    spans, position = [], 0
    for piece in pieces[:-1]:
        position += len(piece)
        spans.append((position, position + len(label)))
        position += len(label)
    text = label.join(pieces)
    continuation = target_continuation(text, response_prefix)
    shift = len(text) - len(continuation)
    encoded = tokenizer(continuation, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        -100
        if any(first + shift < span_end and last + shift > span_start for span_start, span_end in spans)
        else token
        for token, (first, last) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
    ]
    return encoded["input_ids"], labels


class GTACollator:
    """Collate GTA rows (`prompt`, `label`, optional `response_prefix`) into `input_ids`, `attention_mask`, `labels`.

    `labels` is -100 everywhere but on the target (by default the gold guess block), so the model's own LM loss is
    the guess cross-entropy. Works as `data_collator` of TRL's `SFTTrainer` with `remove_unused_columns=False` and
    `dataset_kwargs={"skip_prepare_dataset": True}`.

    Args:
        tokenizer: The tokenizer (it needs a pad token).
        target_template: The supervised reply, with `{label}` (default: the gold guess block). SFT baselines use
            e.g. `"<answer>{label}</answer>"` with `append_eos=True`.
        append_eos: Supervise an end-of-sequence token after the target.
        chat_template_kwargs: Passed to the chat template, as in training.
        pad_to_multiple_of: Pad the batch width to a multiple of this.
        supervise_labels: False leaves the label names inside the target unsupervised (the format warm-up).
        following: What follows the target in a whole reply, which it is tokenized with (default: `<think>` after
            the guess block, else nothing).

    Example:
        ```python
        batch = GTACollator(tokenizer)([rows[0], rows[1]])  # input_ids, attention_mask, labels
        ```
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        target_template: str = GUESS_TARGET,
        append_eos: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
        pad_to_multiple_of: int | None = None,
        supervise_labels: bool = True,
        following: str | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token; set tokenizer.pad_token (e.g. to the eos token).")
        self.tokenizer = tokenizer
        self.target_template = target_template
        self.append_eos = append_eos
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.pad_to_multiple_of = pad_to_multiple_of
        self.supervise_labels = supervise_labels
        self.following = (
            (guess_follower(GTA_TAGS) if target_template == GUESS_TARGET else "") if following is None else following
        )

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, targets = [], []
        for row in rows:
            prompt_ids = list(tokenize_prompt(self.tokenizer, row["prompt"], **self.chat_template_kwargs))
            prefix = row.get("response_prefix") or ""
            if self.supervise_labels:
                target_ids = target_labels = target_token_ids(
                    self.tokenizer, row["label"], prefix, self.target_template, self.following
                )
            else:
                target_ids, target_labels = label_free_targets(
                    self.tokenizer, row["label"], prefix, self.target_template
                )
            if self.append_eos:
                target_ids = [*target_ids, self.tokenizer.eos_token_id]
                target_labels = [*target_labels, self.tokenizer.eos_token_id]
            sequences.append(prompt_ids + target_ids)
            targets.append([-100] * len(prompt_ids) + target_labels)
        width = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in sequences]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences]),
            "labels": torch.tensor([t + [-100] * (width - len(t)) for t in targets]),
        }

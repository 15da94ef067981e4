"""Reward functions for GRPO-style training, in TRL's reward-function signature.

Each takes `completions` (plain strings or chat messages) plus the dataset columns TRL passes as keyword arguments,
and returns one float per completion. When the dataset has a `response_prefix` column (the start of the reply that
the prompt already opened, e.g. `<guess>`), the prefix and the completion are scored together.
"""

from collections.abc import Callable, Sequence

from .reply_format import (
    ANSWER_TAGS,
    GTA_TAGS,
    THINK_ANSWER_TAGS,
    block_span,
    completion_text,
    extract_block,
    is_well_formed,
    match_label,
    normalize_label,
)

RewardFunc = Callable[..., list[float]]


def full_responses(completions: Sequence, response_prefix: Sequence[str] | None = None) -> list[str]:
    """Prefix + completion text for each completion (the prefix column may be absent)."""
    prefixes = response_prefix if response_prefix is not None else [""] * len(completions)
    return [
        (prefix or "") + completion_text(completion) for prefix, completion in zip(prefixes, completions, strict=True)
    ]


def make_format_reward(tags: tuple[str, ...], name: str | None = None) -> RewardFunc:
    """A reward of 1.0 for a completion made of exactly one block per tag, in order, else 0.0."""

    def format_reward(completions: Sequence, response_prefix: Sequence[str] | None = None, **kwargs) -> list[float]:
        return [float(is_well_formed(text, tags)) for text in full_responses(completions, response_prefix)]

    format_reward.__name__ = name or f"{'_'.join(tags)}_format_reward"
    format_reward.__doc__ = f"1.0 when the completion is exactly {''.join(f'<{t}>..</{t}>' for t in tags)}, else 0.0."
    return format_reward


gta_format_reward = make_format_reward(GTA_TAGS, "gta_format_reward")
think_answer_format_reward = make_format_reward(THINK_ANSWER_TAGS, "think_answer_format_reward")
answer_format_reward = make_format_reward(ANSWER_TAGS, "answer_format_reward")

FORMAT_REWARDS: dict[tuple[str, ...], RewardFunc] = {
    GTA_TAGS: gta_format_reward,
    THINK_ANSWER_TAGS: think_answer_format_reward,
    ANSWER_TAGS: answer_format_reward,
}


def make_partial_format_reward(tags: tuple[str, ...], name: str | None = None) -> RewardFunc:
    """Partial format credit: 1/len(tags) for each block that appears exactly once and after the previous one.

    A fair start for RL from a model that never writes the whole format: each well-placed block already earns
    reward, so the groups are not all zero. Use it beside the strict format reward, not instead of it.
    """

    def partial_format_reward(
        completions: Sequence, response_prefix: Sequence[str] | None = None, **kwargs
    ) -> list[float]:
        rewards = []
        for text in full_responses(completions, response_prefix):
            position, credit = 0, 0
            for tag in tags:
                span = block_span(text[position:], tag)
                if span is not None and text.count(f"<{tag}>") == 1 and text.count(f"</{tag}>") == 1:
                    credit, position = credit + 1, position + span[1]
            rewards.append(credit / len(tags))
        return rewards

    partial_format_reward.__name__ = name or f"{'_'.join(tags)}_partial_format_reward"
    return partial_format_reward


gta_partial_format_reward = make_partial_format_reward(GTA_TAGS, "gta_partial_format_reward")


def format_reward_for(tags: tuple[str, ...]) -> RewardFunc:
    """The format reward of a tag sequence (a shared instance for the built-in ones, so logs keep one name)."""
    return FORMAT_REWARDS.get(tuple(tags)) or make_format_reward(tuple(tags))


def answer_accuracy_reward(
    completions: Sequence, label: Sequence[str], response_prefix: Sequence[str] | None = None, **kwargs
) -> list[float]:
    """1.0 when the single `<answer>` block equals the gold label after normalisation, else 0.0."""
    rewards = []
    for text, gold in zip(full_responses(completions, response_prefix), label, strict=True):
        answer = extract_block(text, "answer", unique=True)
        rewards.append(float(answer is not None and normalize_label(answer) == normalize_label(str(gold))))
    return rewards


def make_valid_label_reward(labels: Sequence[str] | None = None) -> RewardFunc:
    """A reward of 1.0 when the single `<answer>` block names a label of the set (any one), else 0.0.

    Shaping for a fair start: it pays for answering with *a* label of the set, so a policy drifting towards answers
    outside it (a copied format description, a fixed sentence) is pulled back to where the accuracy reward can tell
    its completions apart. It never pays more for the right label: that is the accuracy reward's job.

    Args:
        labels: The label set, compared after `normalize_label`. None reads it per row from a `label_set` dataset
            column (one list of names per row), for data that mixes label sets.

    Returns:
        A reward function in TRL's signature (`completions`, optional `response_prefix` and `label_set` columns),
        one float per completion, named `valid_label_reward`.

    Example:
        >>> reward = make_valid_label_reward(["sport", "tech"])
        >>> reward(["<answer>Sport</answer>", "<answer>cooking</answer>", "<answer>tech</answer><answer>x</answer>"])
        [1.0, 0.0, 0.0]
    """
    fixed = list(labels) if labels is not None else None

    def valid_label_reward(
        completions: Sequence,
        response_prefix: Sequence[str] | None = None,
        label_set: Sequence[Sequence[str]] | None = None,
        **kwargs,
    ) -> list[float]:
        if fixed is None and label_set is None:
            raise ValueError(
                "valid_label_reward has no label set: pass labels, or give the dataset a label_set column."
            )
        sets = [fixed] * len(completions) if fixed is not None else label_set
        return [
            float(match_label(extract_block(text, "answer", unique=True), list(names)) is not None)
            for text, names in zip(full_responses(completions, response_prefix), sets, strict=True)
        ]

    return valid_label_reward

"""The reply format, in one place: the tags, the gold-guess target, what follows the guess, the label-set rules, and
the parsing of tagged replies (`<guess>..</guess><think>..</think><answer>..</answer>`).

Everything here is pure string work, shared by the trainer, the rewards, the collator and the classifier, so that a
reply is written and judged the same way wherever it appears.
"""

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

GTA_TAGS: tuple[str, ...] = ("guess", "think", "answer")
THINK_ANSWER_TAGS: tuple[str, ...] = ("think", "answer")
ANSWER_TAGS: tuple[str, ...] = ("answer",)
GUESS_TARGET = "<guess>{label}</guess>"
"""The teacher-forced target of the supervised guess loss, and what the classifier's guess mode scores."""
ANSWER_TARGET = "<answer>{label}</answer>"
"""The answer slot filled with a label: the SFT baseline's whole target, and what labels decoding scores."""
ANSWER_OPEN, ANSWER_CLOSE = ANSWER_TARGET.split("{label}")
"""The tags around the answer: labels decoding stops once the reply holds the opening one."""
CLASSIFY_MODES: tuple[str, ...] = ("answer", "guess", "adaptive")
"""Which part of a reply gives the label: the generated answer, the guess read without sampling, or the guess when
confident and the answer otherwise."""
ANSWER_DECODINGS: tuple[str, ...] = ("labels", "free")
"""How answer mode reads the answer once the reply opens it: every label of the set scored exactly as its
continuation (the most probable is the answer), or the answer decoded freely (a text outside the set is no label)."""

_STRIP_CHARS = string.whitespace + string.punctuation


def normalize_label(text: str) -> str:
    """Case-fold, collapse inner white space and strip surrounding white space and punctuation.

    Two labels are "the same answer" exactly when their normalised forms are equal.
    """
    return " ".join(text.strip(_STRIP_CHARS).casefold().split())


def guess_follower(tags: Sequence[str]) -> str:
    """The opening tag that follows the guess block in a whole reply (`"<think>"` for GTA), or "" when none does.

    The guess target is tokenized in this context, because BPE merges across the block's edge (`></guess><`)."""
    tags = tuple(tags)
    return f"<{tags[tags.index('guess') + 1]}>" if "guess" in tags[:-1] else ""


def first_label_slot(tags: Sequence[str]) -> tuple[str, str]:
    """The reply text (with `{label}`) that guess mode scores, and the closing tag that ends its label.

    A format with a guess block has it first: `<guess>{label}</guess>`. A format without one (the baselines:
    `answer`, `think_answer`) has the answer slot as its only label slot, reached with every block before it written
    empty: `<think></think><answer>{label}</answer>`, the no-think reply (as Qwen3's `enable_thinking=False`)."""
    tags = tuple(tags)
    if "guess" in tags:
        return GUESS_TARGET, "</guess>"
    if "answer" not in tags:
        raise ValueError(f"The reply format {tags} has no guess or answer block to read a label from.")
    before = tags[: tags.index("answer")]
    return "".join(f"<{tag}></{tag}>" for tag in before) + ANSWER_TARGET, "</answer>"


def target_continuation(target: str, response_prefix: str = "") -> str:
    """The part of `target` that follows a response prefix the prompt already contains."""
    if not target.startswith(response_prefix):
        raise ValueError(f"The response prefix {response_prefix!r} is not the start of the target {target!r}.")
    return target[len(response_prefix) :]


def check_label_set(labels: Sequence[str]) -> list[str]:
    """The labels as a list of strings, refusing an empty set, empty names and names that normalise alike.

    Args:
        labels: The label names, in the order the prompt lists them.

    Returns:
        The names as strings, in the same order.

    Raises:
        ValueError: The set is empty, a name is empty after normalisation, or two names normalise to the same
            string (a reply naming either could not be told apart).
    """
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("The label set is empty.")
    seen: dict[str, str] = {}
    for label in labels:
        key = normalize_label(label)
        if not key:
            raise ValueError(f"Label {label!r} is empty after normalisation (case, white space, punctuation).")
        if key in seen:
            raise ValueError(f"Labels {seen[key]!r} and {label!r} normalise to the same string {key!r}.")
        seen[key] = label
    return labels


@lru_cache(maxsize=32)
def _format_regex(tags: tuple[str, ...]) -> re.Pattern:
    blocks = r"\s*".join(rf"<{tag}>(.*?)</{tag}>" for tag in tags)
    return re.compile(rf"\s*{blocks}\s*", re.DOTALL)


def is_well_formed(text: str, tags: tuple[str, ...] = GTA_TAGS) -> bool:
    """True when `text` is exactly one block per tag, in order, with only white space between and around them."""
    if any(text.count(f"<{tag}>") != 1 or text.count(f"</{tag}>") != 1 for tag in tags):
        return False
    return _format_regex(tags).fullmatch(text) is not None


def extract_block(text: str, tag: str, *, unique: bool = False) -> str | None:
    """Content of the first `<tag>..</tag>` block, stripped; None when absent (or, with `unique`, not unique)."""
    if unique and (text.count(f"<{tag}>") != 1 or text.count(f"</{tag}>") != 1):
        return None
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    start += len(tag) + 2
    end = text.find(f"</{tag}>", start)
    return None if end < 0 else text[start:end].strip()


def block_span(text: str, tag: str) -> tuple[int, int] | None:
    """Character span `[start, end)` of the first complete `<tag>..</tag>` block, tags included."""
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    end = text.find(f"</{tag}>", start + len(tag) + 2)
    return None if end < 0 else (start, end + len(tag) + 3)


@dataclass(frozen=True)
class GTAOutput:
    """A parsed GTA completion. Fields are None when their block is missing."""

    guess: str | None
    think: str | None
    answer: str | None
    is_well_formed: bool


def parse_gta(text: str) -> GTAOutput:
    """Parse a GTA completion; never raises. The answer counts only when its block is unique."""
    return GTAOutput(
        guess=extract_block(text, "guess"),
        think=extract_block(text, "think"),
        answer=extract_block(text, "answer", unique=True),
        is_well_formed=is_well_formed(text, GTA_TAGS),
    )


def completion_text(completion: str | list[dict] | dict) -> str:
    """The text of a plain-string or chat-style completion (`[{"role": "assistant", "content": ...}]`)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else ""
        if isinstance(content, list):  # content blocks: keep the text ones
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(content if isinstance(content, str) else "")
    return "".join(parts)


def match_label(text: str | None, labels: list[str] | tuple[str, ...]) -> str | None:
    """The label of `labels` that `text` names (after normalisation), or None."""
    if text is None:
        return None
    target = normalize_label(text)
    return next((label for label in labels if normalize_label(label) == target), None)

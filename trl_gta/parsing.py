"""Parsing of tagged model outputs (`<guess>..</guess><think>..</think><answer>..</answer>`).

Everything here is pure string work, shared by the rewards, the trainer's metrics and the classifier, so that a
completion is judged the same way wherever it is read.
"""

import re
import string
from dataclasses import dataclass
from functools import lru_cache

GTA_TAGS: tuple[str, ...] = ("guess", "think", "answer")
THINK_ANSWER_TAGS: tuple[str, ...] = ("think", "answer")
ANSWER_TAGS: tuple[str, ...] = ("answer",)

_STRIP_CHARS = string.whitespace + string.punctuation


def normalize_label(text: str) -> str:
    """Case-fold, collapse inner white space and strip surrounding white space and punctuation.

    Two labels are "the same answer" exactly when their normalised forms are equal.
    """
    return " ".join(text.strip(_STRIP_CHARS).casefold().split())


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

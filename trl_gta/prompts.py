"""Prompt templates: one object decides the instructions, the label list, the asked-for format and the reply prefix.

The same template builds training prompts, evaluation prompts and the classifier's prompts, and is saved with a
checkpoint (`to_dict`/`from_dict`), so a trained model is always asked the question it was trained on.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

from .reply_format import ANSWER_TAGS, GTA_TAGS, THINK_ANSWER_TAGS, guess_follower

DEFAULT_INSTRUCTION = "Classify the text. Labels: {labels}.\nReply as {format}\nText: {text}"
PLACEHOLDERS = {"guess": "first guess", "think": "one short sentence", "answer": "final label"}
PROMPT_FORMATS: dict[str, tuple[str, ...]] = {
    "gta": GTA_TAGS,
    "think_answer": THINK_ANSWER_TAGS,
    "answer": ANSWER_TAGS,
}


@dataclass
class GTAPromptTemplate:
    """How a text and the label set become a prompt.

    `instruction` is a user message with `{labels}`, `{format}` and `{text}` placeholders. A non-empty
    `response_prefix` (e.g. `"<guess>"`) opens the assistant's reply inside the prompt; TRL cannot pre-fill a chat
    assistant turn, so such prompts are chat-templated strings that end with the prefix.
    """

    tags: tuple[str, ...] = GTA_TAGS
    instruction: str = DEFAULT_INSTRUCTION
    system_prompt: str | None = None
    response_prefix: str = ""
    label_separator: str = ", "
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tags = tuple(self.tags)
        for placeholder in ("{labels}", "{text}"):
            if placeholder not in self.instruction:
                raise ValueError(f"The prompt instruction must contain {placeholder}: {self.instruction!r}")
        full_reply = self.format_spec()
        if self.response_prefix and not full_reply.startswith(self.response_prefix):
            raise ValueError(
                f"response_prefix {self.response_prefix!r} must be the start of the asked-for reply {full_reply!r}"
            )

    @classmethod
    def for_format(cls, prompt_format: str = "gta", **kwargs: Any) -> "GTAPromptTemplate":
        """The default template for a named output format: `gta`, `think_answer` (GRPO baseline) or `answer`."""
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"Unknown prompt_format {prompt_format!r}; expected one of {sorted(PROMPT_FORMATS)}")
        return cls(tags=PROMPT_FORMATS[prompt_format], **kwargs)

    @property
    def guess_follower(self) -> str:
        """The opening tag that follows the guess block in a whole reply (`"<think>"` for GTA), else ""."""
        return guess_follower(self.tags)

    def format_spec(self) -> str:
        return "".join(f"<{tag}>{PLACEHOLDERS.get(tag, '...')}</{tag}>" for tag in self.tags)

    def messages(self, text: str, labels: list[str]) -> list[dict[str, str]]:
        """The conversation for one text (without the response prefix)."""
        user = self.instruction.format(labels=self.label_separator.join(labels), format=self.format_spec(), text=text)
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": user}]

    def prompt(self, text: str, labels: list[str], tokenizer=None) -> list[dict[str, str]] | str:
        """A TRL prompt: the conversation, or, with a response prefix, the templated string ending in the prefix."""
        if not self.response_prefix:
            return self.messages(text, labels)
        if tokenizer is None:
            raise ValueError("A response_prefix needs the tokenizer to render the chat template into the prompt.")
        rendered = tokenizer.apply_chat_template(
            self.messages(text, labels), add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        bos = tokenizer.bos_token
        if bos and rendered.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
            rendered = rendered[len(bos) :]  # the tokenizer adds it again when TRL tokenizes the string
        return rendered + self.response_prefix

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tags": list(self.tags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GTAPromptTemplate":
        return cls(**{**data, "tags": tuple(data.get("tags", GTA_TAGS))})


def ensure_pad_token(tokenizer):
    """Give a tokenizer without a pad token its end-of-sequence token as pad (batching needs one); returns it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenize_prompt(tokenizer, prompt: list[dict] | str, **chat_template_kwargs: Any) -> list[int]:
    """Token ids of a prompt exactly as TRL's GRPOTrainer tokenizes it (so teacher forcing matches sampling)."""
    if isinstance(prompt, str):
        return tokenizer(text=prompt)["input_ids"]
    return tokenizer.apply_chat_template(
        [prompt], add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs
    )["input_ids"][0]


class TextFitter:
    """Cuts texts (never the instructions or label list) so that every prompt fits `max_prompt_tokens`.

    Raises `ValueError` at construction when the prompt without any text already exceeds the limit.
    """

    def __init__(self, template: GTAPromptTemplate, labels: list[str], tokenizer, max_prompt_tokens: int) -> None:
        self.template, self.labels, self.tokenizer, self.max_prompt_tokens = (
            template,
            labels,
            tokenizer,
            max_prompt_tokens,
        )
        self.overhead = self._prompt_length("")
        if self.overhead > max_prompt_tokens:
            raise ValueError(
                f"The instructions and label list alone take {self.overhead} tokens, more than max_prompt_tokens="
                f"{max_prompt_tokens}; raise the limit or shorten the instruction or the label names."
            )

    def _prompt_length(self, text: str) -> int:
        prompt = self.template.prompt(text, self.labels, self.tokenizer)
        return len(tokenize_prompt(self.tokenizer, prompt, **self.template.chat_template_kwargs))

    def __call__(self, text: str) -> tuple[str, bool]:
        """The text, cut to fit if needed, and whether it was cut."""
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        budget = self.max_prompt_tokens - self.overhead
        if len(text_ids) <= budget - 2:  # far from the limit: the parts' token counts add up to within a token or two
            return text, False
        keep = min(len(text_ids), budget)
        while keep > 0:
            candidate = self.tokenizer.decode(text_ids[:keep]) if keep < len(text_ids) else text
            if candidate.endswith("\ufffd") and not text.startswith(candidate):
                keep -= 1  # the cut fell inside a multi-byte character
                continue
            if self._prompt_length(candidate) <= self.max_prompt_tokens:
                return candidate, keep < len(text_ids)
            keep -= 1
        return "", True


def fitted_prompts(
    template: GTAPromptTemplate,
    texts: list[str],
    labels: list[str],
    tokenizer=None,
    max_prompt_tokens: int | None = None,
) -> tuple[list[list[dict[str, str]] | str], list[bool]]:
    """Each text's prompt, the text cut first so the prompt fits `max_prompt_tokens`, and whether it was cut.

    The one way texts become prompts, for training rows and for the classifier alike.
    """
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("max_prompt_tokens needs a tokenizer to count tokens.")
    fitter = TextFitter(template, labels, tokenizer, max_prompt_tokens) if max_prompt_tokens is not None else None
    prompts, truncated = [], []
    for text in texts:
        cut = False
        if fitter is not None:
            text, cut = fitter(text)
        prompts.append(template.prompt(text, labels, tokenizer))
        truncated.append(cut)
    return prompts, truncated

"""`GTAClassifier`: run a GTA-trained causal LM as a text classifier.

Every mode runs the prompt part shared by all texts (instructions and label list) once, keeps it as a KV cache, and
runs only each text's own tokens (and the template's closing tokens) over a copy of it. Three modes:
- `answer`: greedily decode the reply `<guess>..</guess><think>..</think><answer>..</answer>`. With
  `answer_decoding="labels"` decoding stops where the answer opens, and every label of the set is scored exactly as
  the continuation `label</answer>` over the reply's cache (the scorer of guess mode): the most probable label is the
  answer, so every text gets a label of the set. With `"free"` the answer is decoded too, up to the closing
  `</answer>` (or end of sequence), and a text outside the set is no label. Steps also check drafts of the next
  tokens taken from earlier replies, keeping only the tokens greedy decoding would choose.
- `guess`: no sampling; the distribution over the label set in the reply's first label slot (the guess; the answer
  slot for formats without a guess) is read from the model in batched forward passes over a KV cache of the prompt
  part shared by all texts, computed once. A label's probability is that of decoding it constrained to the label
  set: the labels' tokens form a trie, and at each point where labels diverge the model's next-token probabilities
  are renormalized over the labels' next tokens. When the first tokens of the labels differ, that is a single forward
  of each text's own tokens. It equals the labels' full-sequence likelihoods normalized over the set when the model
  puts all its mass on the label set, which is what the guess cross-entropy trains.
- `adaptive`: guess first, and think (decode as in answer mode) only for texts whose top guess probability is below a
  threshold.
"""

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from peft import PeftModel

from .checkpoint import GTA_CONFIG_FILE, HOW_TO_DESCRIBE, GTACheckpointMetadata
from .prompts import GTAPromptTemplate, ensure_pad_token, fitted_prompts, tokenize_prompt
from .reply_format import (
    ANSWER_CLOSE,
    ANSWER_DECODINGS,
    ANSWER_OPEN,
    ANSWER_TARGET,
    CLASSIFY_MODES,
    extract_block,
    first_label_slot,
    match_label,
    target_continuation,
)
from .shared_prefix import cache_argument

logger = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 256
"""The reply budget when a checkpoint states none: the recipes' (answer mode stops at `</answer>` anyway)."""
DRAFT_KEY_TOKENS = 4
"""Decoding drafts from earlier replies: the longest run of a reply's last tokens looked up."""
DRAFT_TOKENS = 12
"""The most tokens drafted for a row in one step."""
DRAFT_MEMORY = 50_000
"""The most token runs remembered from earlier replies (the oldest are forgotten first)."""
STEP_COST_IN_TOKENS = 16
"""What a decoding step costs beyond its tokens, counted in tokens: reading the weights once per step (measured on a
2-core CPU with SmolLM2-135M: a step of 16 rows x 1 token cost about as much as 32 tokens' worth of compute). It
weighs a wider step with drafts against a plain one."""


@dataclass
class GTAPrediction:
    """One text's prediction.

    Args:
        label: A label of the set, or None when the model gave no valid label (free decoding only).
        guess: Answer mode: the generated `<guess>` text; guess and adaptive modes: the most probable label.
        guess_probs: Guess and adaptive modes: each label's probability in the first label slot (the guess).
        answer_probs: Labels decoding, for the texts decoded: each label's probability as the answer.
        think: The `<think>` text, when the text was decoded.
        answer: The `<answer>` text, when decoded and unique; with labels decoding, the label chosen.
        generated_tokens: Tokens decoded for this text, the one that ends the reply included: the token completing
            `</answer>` (`<answer>` with labels decoding), or the end-of-sequence token, or none when the budget ran
            out first. 0 when it did not think.
        text_truncated: Whether the text was cut to fit `max_prompt_tokens`.
        raw_output: The decoded reply, response prefix included, up to and including `</answer>` (with labels
            decoding: the reply as scored, its answer slot holding the label chosen).
    """

    label: str | None
    guess: str | None = None
    guess_probs: dict[str, float] | None = None
    answer_probs: dict[str, float] | None = None
    think: str | None = None
    answer: str | None = None
    generated_tokens: int = 0
    text_truncated: bool = False
    raw_output: str | None = field(default=None, repr=False)


def label_branch_points(sequences: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """The points where token sequences diverge (the branching nodes of their trie): path -> distinct next tokens.

    Decoding constrained to the sequences chooses only at these points, so they are the only places the model's
    next-token distribution (renormalized over the allowed tokens) has to be read."""
    children: dict[tuple[int, ...], list[int]] = {}
    for sequence in sequences:
        for depth, token in enumerate(sequence):
            following = children.setdefault(tuple(sequence[:depth]), [])
            if token not in following:
                following.append(token)
    return {path: following for path, following in children.items() if len(following) > 1}


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for sequence in sequences[1:]:
        length = next((i for i in range(length) if sequence[i] != first[i]), length)
    return length


class GTAClassifier:
    """A causal LM used as a text classifier: the model, its tokenizer, the label set and the prompt template it was
    trained with, so that it is asked the question it learnt to answer.

    Args:
        model: A causal LM trained to reply `<guess>..</guess><think>..</think><answer>..</answer>`.
        tokenizer: Its tokenizer (given the end-of-sequence token as pad when it has none).
        labels: The label set, in the order the prompt lists it.
        template: The prompt template of training (default: `GTAPromptTemplate()`).
        max_prompt_tokens: Cut texts (never the instructions) so every prompt fits; None keeps texts whole.
        max_new_tokens: Default reply budget of `predict` (default: training's `max_completion_length` when loaded
            from a checkpoint, else `DEFAULT_MAX_NEW_TOKENS`).

    Example:
        ```python
        classifier = GTAClassifier.from_pretrained("gta-out")
        classifier.predict(["wake me up at seven"], mode="guess")[0].label
        ```
    """

    def __init__(
        self,
        model: "PreTrainedModel | PeftModel",
        tokenizer: PreTrainedTokenizerBase,
        labels: Sequence[str],
        template: GTAPromptTemplate | None = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.model, self.tokenizer = model, ensure_pad_token(tokenizer)
        self.labels = list(labels)
        self.template = template or GTAPromptTemplate()
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        self._prefix_cache: tuple[tuple[int, ...], DynamicCache] | None = None
        self._cache_argument = cache_argument(model)
        self._continuations: dict[tuple[int, ...], tuple[int, ...]] = {}  # token run -> what followed it last
        self._answer_targets: dict[str, list[list[int]]] = {}  # opening -> labels decoding's continuations
        self._told_about_the_answer_slot = False

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        labels: Sequence[str] | None = None,
        max_prompt_tokens: int | None = None,
        merge_adapter: bool = True,
        template: GTAPromptTemplate | None = None,
        **model_kwargs: Any,
    ) -> "GTAClassifier":
        """Load a classifier from a folder (or a Hub id, where the Hub is reachable).

        Args:
            path_or_hub_id: A checkpoint of `trl-gta train`, any method (label set, template and reply budget from
                its `gta_config.json`), or a model or LoRA adapter folder without one (`labels` and `template`
                required: its format is not guessed). An adapter is loaded on its base model.
            labels: The label set; overrides the checkpoint's.
            max_prompt_tokens: Cut texts so every prompt fits.
            merge_adapter: Merge an adapter into the weights, so inference runs no adapter layers. A quantized base
                keeps its adapter, since merging into quantized weights would round the adapter away.
            template: The prompt template the model was trained with; overrides the checkpoint's.
            **model_kwargs: Passed to `from_pretrained` of the model (e.g. `dtype`, `device_map`).

        Returns:
            The classifier, its model in eval mode.

        Raises:
            OSError: The folder or model cannot be loaded (offline, a Hub id fails with this).
            ValueError: No `gta_config.json` and no `template` (the format is unknown), no label set is known, or
                the checkpoint's `gta_config.json` is invalid.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        is_dir = os.path.isdir(path_or_hub_id)
        if not is_dir and (path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") > 1):
            raise OSError(f"Could not load a model: folder {path_or_hub_id!r} not found.")
        metadata = GTACheckpointMetadata.load(path_or_hub_id) if is_dir else None
        if metadata is None and template is None:
            raise ValueError(
                f"{path_or_hub_id} has no {GTA_CONFIG_FILE}, so its reply format is unknown: {HOW_TO_DESCRIBE}."
            )
        labels = list(labels) if labels is not None else (metadata.labels if metadata else None)
        if not labels:
            raise ValueError(f"{path_or_hub_id} carries no label set ({GTA_CONFIG_FILE}); pass labels=[...].")
        try:
            if is_dir and os.path.exists(os.path.join(path_or_hub_id, "adapter_config.json")):
                from peft import AutoPeftModelForCausalLM

                model = AutoPeftModelForCausalLM.from_pretrained(path_or_hub_id, **model_kwargs)
                if merge_adapter and getattr(model.get_base_model(), "hf_quantizer", None) is None:
                    model = model.merge_and_unload()
            else:
                model = AutoModelForCausalLM.from_pretrained(path_or_hub_id, **model_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
        except OSError as error:
            where = "folder" if is_dir else "Hub id (is the Hub reachable?)"
            raise OSError(f"Could not load a model from {where} {path_or_hub_id!r}: {error}") from error
        model.eval()
        return cls(
            model,
            tokenizer,
            labels,
            template or metadata.prompt_template,
            max_prompt_tokens,
            metadata.max_completion_length if metadata else None,
        )

    # ------------------------------------------------------------------------------------------------ prompts
    def _prompt_ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        prompts, truncated = fitted_prompts(
            self.template, list(texts), self.labels, self.tokenizer, self.max_prompt_tokens
        )
        kwargs = self.template.chat_template_kwargs
        return [list(tokenize_prompt(self.tokenizer, prompt, **kwargs)) for prompt in prompts], truncated

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------------ guess
    def _shared_prefix_cache(self, prefix: tuple[int, ...]):
        """KV cache of the prompt part every text shares (instructions and label list), computed once."""
        if self._prefix_cache is None or self._prefix_cache[0] != prefix:
            cache = DynamicCache(config=self.model.config)
            with torch.no_grad():  # the model fills the cache in place
                self.model(
                    input_ids=torch.tensor([prefix], device=self._device),
                    use_cache=True,
                    **{self._cache_argument: cache},
                )
            self._prefix_cache = (prefix, cache)
        return self._prefix_cache[1]

    def _slot_tokens(self, texts: Sequence[str], closing: str) -> list[list[int]]:
        """Per text (a label slot filled with a label, and what follows it), the tokens that decide "the slot holds
        this label": the label's tokens and the one that closes them (the first reaching the last `closing`),
        tokenized as in a whole reply."""
        continuations = []
        for text in texts:
            boundary = text.rindex(closing)
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > boundary)
            continuations.append(encoded["input_ids"][: stop + 1])
        return continuations

    @cached_property
    def _label_continuations(self) -> list[list[int]]:
        """Per label, the reply tokens after the prompt that guess mode scores: the first label slot of the format
        holding the label (see `first_label_slot`), and the opening tag that follows a guess (BPE merges across
        `></guess><`). Computed once: labels, template and tokenizer are fixed for a classifier."""
        target, closing = first_label_slot(self.template.tags)
        prefix, following = self.template.response_prefix, self.template.guess_follower
        texts = [target_continuation(target.format(label=label), prefix) + following for label in self.labels]
        return self._slot_tokens(texts, closing)

    def _answer_continuations(self, opening: str) -> list[list[int]]:
        """Per label, the tokens labels decoding scores after a reply: `opening` (what the reply still lacks of
        `<answer>`: "" when it wrote the whole tag), then `label</answer>`."""
        if opening not in self._answer_targets:
            texts = [
                opening + target_continuation(ANSWER_TARGET.format(label=label), ANSWER_OPEN) for label in self.labels
            ]
            self._answer_targets[opening] = self._slot_tokens(texts, ANSWER_CLOSE)
        return self._answer_targets[opening]

    def _last_position(self, length: int) -> torch.Tensor:
        # as an index tensor, not `1`: the gathered hidden state is contiguous, so the LM head runs as one matmul
        # instead of a batched matmul over a broadcast weight (measured 8x slower on CPU)
        return torch.tensor([length - 1], device=self._device)

    def _prefix_cache_copy(self, prompt_ids: list[list[int]], shared: int) -> DynamicCache:
        """A batch-sized copy of the shared-prefix cache (the `shared` first tokens, which all prompts share)."""
        cache = copy.deepcopy(self._shared_prefix_cache(tuple(prompt_ids[0][:shared])))
        cache.batch_repeat_interleave(len(prompt_ids))
        return cache

    def _forward_rows(
        self, cache: DynamicCache, context_mask: torch.Tensor, rows: list[list[int]], starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run each row's tokens over `cache` (its columns masked by `context_mask`), the first at position
        `starts[row]`.

        Rows are left-padded, so every row ends on the last column; padding is masked out and the positions continue
        the row's own, so a row's logits are those of its whole sequence.

        Returns:
            The logits of the last position `(batch, 1, vocab)`, the attention mask of the cache now, the positions
            of the new columns `(batch, width)` and each row's next position.
        """
        device, pad = self._device, self.tokenizer.pad_token_id
        lengths = torch.tensor([len(row) for row in rows], device=device)
        width = max(len(row) for row in rows)
        padding = width - lengths
        columns = torch.arange(width, device=device)
        positions = starts[:, None] + (columns - padding[:, None]).clamp(min=0)
        mask = torch.cat([context_mask, (columns >= padding[:, None]).long()], dim=1)
        logits = self.model(
            input_ids=torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=device),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=self._last_position(width),
            **{self._cache_argument: cache},
        ).logits
        return logits, mask, positions, starts + lengths

    @torch.no_grad()
    def _slot_scores(
        self,
        cache: DynamicCache,
        context_mask: torch.Tensor,
        rows: list[list[int]],
        starts: torch.Tensor,
        targets: list[list[int]],
    ) -> torch.Tensor:
        """Log-probability of each label under decoding constrained to the label set, (rows, labels): each row's
        tokens run over `cache` (see `_forward_rows`), then each label's `targets` tokens.

        Only the trie's branch points need the model: one forward of the rows' tokens (last position only), plus one
        small pass per deeper branch point (labels sharing leading tokens). The exact scorer of guess mode and of
        labels decoding."""
        common = _common_prefix_length(targets)  # e.g. the tokens of "<guess>": part of every continuation
        device, batch = self._device, len(rows)
        extra = targets[0][:common]
        tail_logits, mask, _, next_positions = self._forward_rows(
            cache, context_mask, [row + extra for row in rows], starts
        )
        scores = torch.zeros(batch, len(self.labels), device=device)
        for path, next_tokens in label_branch_points([t[common:] for t in targets]).items():
            if path:  # a deeper branch point: run its path over the cache, then crop the cache back
                length = len(path)
                logits = self.model(
                    input_ids=torch.tensor([list(path)] * batch, device=device),
                    attention_mask=torch.cat([mask, mask.new_ones(batch, length)], dim=1),
                    position_ids=next_positions[:, None] + torch.arange(length, device=device),
                    use_cache=True,
                    logits_to_keep=self._last_position(length),
                    **{self._cache_argument: cache},
                ).logits
                cache.crop(-length)
            else:
                logits = tail_logits
            logprobs = logits[:, -1, next_tokens].float().log_softmax(-1)
            for index, target in enumerate(targets):
                branch = target[common : common + len(path)]
                if tuple(branch) == path:
                    scores[:, index] += logprobs[:, next_tokens.index(target[common + len(path)])]
        return scores

    def _guess_scores(self, prompt_ids: list[list[int]], shared: int) -> torch.Tensor:
        """Log-probability of each label in the first label slot, right after the prompt, (texts, labels)."""
        batch = len(prompt_ids)
        return self._slot_scores(
            self._prefix_cache_copy(prompt_ids, shared),
            torch.ones(batch, shared, dtype=torch.long, device=self._device),
            [ids[shared:] for ids in prompt_ids],
            torch.full((batch,), shared, device=self._device),
            self._label_continuations,
        )

    # ------------------------------------------------------------------------------------------------ answer
    @cached_property
    def _stop_token_ids(self) -> set[int]:
        """Tokens that end a reply: the tokenizer's end-of-sequence token and the generation config's."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        return {self.tokenizer.eos_token_id, *configured} - {None}

    def forget_drafts(self) -> None:
        """Forget the drafts learnt from earlier replies. Drafts leave a greedy reply as it is up to float rounding,
        but they change the shapes of the decoding steps and so the last bits of the probabilities; a caller whose
        output must not depend on what was classified before (`predict_file`, per chunk, whichever process or run
        labels it) starts here."""
        self._continuations.clear()

    def _remember(self, reply: list[int]) -> None:
        """Note, for every run of up to `DRAFT_KEY_TOKENS` tokens of a finished reply, the tokens that followed it."""
        table = self._continuations
        for end in range(1, len(reply)):
            following = tuple(reply[end : end + DRAFT_TOKENS])
            for length in range(1, min(DRAFT_KEY_TOKENS, end) + 1):
                key = tuple(reply[end - length : end])
                table.pop(key, None)  # re-inserted last: the dict's order is the order of last use
                table[key] = following
        while len(table) > DRAFT_MEMORY:
            del table[next(iter(table))]

    def _draft(self, reply: list[int]) -> list[int]:
        """What followed the longest run of the reply's last tokens in an earlier reply (empty when none did)."""
        for length in range(min(DRAFT_KEY_TOKENS, len(reply)), 0, -1):
            following = self._continuations.get(tuple(reply[-length:]))
            if following:
                return list(following)
        return []

    @staticmethod
    def _step_width(drafts: list[list[int]]) -> int:
        """Tokens per row of the next step: 1, or 1 plus a draft length, whichever would decode the most tokens per
        unit of cost if every drafted token were right (a wide step costs every row its width)."""
        rows = len(drafts)
        best, best_rate = 1, rows / (STEP_COST_IN_TOKENS + rows)
        for width in sorted({1 + len(draft) for draft in drafts if draft}):
            rate = sum(1 + min(len(draft), width - 1) for draft in drafts) / (STEP_COST_IN_TOKENS + rows * width)
            if rate > best_rate:
                best, best_rate = width, rate
        return best

    def _split_reply(self, reply: list[int]) -> tuple[int, str]:
        """Where labels decoding scores a reply that stopped: the reply tokens kept, and what the answer slot still
        needs opened before a label (`""` when the reply wrote `<answer>` whole).

        A reply ending in a token that goes past `<answer>` keeps the tokens before it and reopens from there; one
        that never opened the answer (end of sequence, or the budget ran out) keeps what it wrote, and `<answer>` is
        written for it."""
        if ANSWER_OPEN in self.template.response_prefix:  # the prompt opened the answer: nothing was decoded
            return 0, ""
        kept = len(reply) - (bool(reply) and reply[-1] in self._stop_token_ids)
        text = self.tokenizer.decode(reply[:kept])
        if ANSWER_OPEN not in text:
            return kept, ANSWER_OPEN
        end = text.index(ANSWER_OPEN) + len(ANSWER_OPEN)
        if end == len(text):
            return kept, ""
        before = self.tokenizer.decode(reply[: kept - 1])
        return kept - 1, text[len(before) : end]

    @staticmethod
    def _select_rows(cache: DynamicCache, rows: torch.Tensor, config) -> DynamicCache:
        """A new cache holding the given batch rows of `cache` (which is left as it is)."""
        selected = DynamicCache(config=config)
        for index, layer in enumerate(cache.layers):
            selected.update(layer.keys[rows], layer.values[rows], index)
        return selected

    @torch.no_grad()
    def _decode(
        self, prompt_ids: list[list[int]], shared: int, max_new_tokens: int, score_labels: bool = False
    ) -> tuple[list[list[int]], list[tuple[int, str, torch.Tensor] | None]]:
        """Greedy replies over the cached shared prefix (token ids), and with `score_labels` each reply's answer
        scores.

        One forward of the texts' own tokens, then steps over the rows still open. A row closes at an end-of-sequence
        token or at the token that completes the closing tag of the template's last block (`</answer>`; with
        `score_labels`, the opening `<answer>`), and leaves the batch (its cache row is dropped), so a step costs only
        the open rows.

        With `score_labels`, the rows that close are scored before they leave: over their cache rows, with the
        columns from the last reply token kept on masked out (see `_split_reply`), that token and each label's
        continuation run through `_slot_scores`. A row's entry is (reply tokens kept, the opening written for it,
        the labels' log-probabilities).

        Replies in one format repeat themselves (tags, often a label and the words around it), so a step may also
        check a draft of each row's next tokens: what followed the same tokens in an earlier reply (as in
        prompt-lookup decoding). The step runs the row's next token and its draft in one pass and keeps the draft's
        tokens up to the first one that differs from the argmax at its position, plus that argmax: exactly the tokens
        one-token steps would have chosen. Rejected positions stay in the cache, masked out.

        Decoding is plain argmax: a sampling or penalty setting of the model's generation config does not apply."""
        device, pad, batch = self._device, self.tokenizer.pad_token_id, len(prompt_ids)
        cache = self._prefix_cache_copy(prompt_ids, shared)
        starts = torch.full((batch,), shared, device=device)
        logits, mask, tail_positions, positions = self._forward_rows(
            cache,
            torch.ones(batch, shared, dtype=torch.long, device=device),
            [ids[shared:] for ids in prompt_ids],
            starts,
        )
        column_positions = torch.cat([torch.arange(shared, device=device).expand(batch, shared), tail_positions], 1)
        reply_starts = positions.tolist()  # per text, the position of its first reply token
        stop = ANSWER_OPEN if score_labels else ANSWER_CLOSE
        rows = list(range(batch))  # open rows, in the cache's row order
        replies: list[list[int]] = [[] for _ in prompt_ids]
        scored: list[tuple[int, str, torch.Tensor] | None] = [None] * batch
        new_tokens = [[token] for token in logits[:, -1].argmax(-1).tolist()]  # per open row, decoded last step
        answer_open = score_labels and ANSWER_OPEN in self.template.response_prefix
        while True:
            keep, drafts, closed = [], [], []
            for index, row in enumerate(rows):
                reply = replies[row]
                for token in [] if answer_open else new_tokens[index]:
                    reply.append(token)
                    if (
                        token in self._stop_token_ids
                        or stop in self.tokenizer.decode(reply)
                        or len(reply) == max_new_tokens
                    ):
                        self._remember(reply)
                        closed.append(index)
                        break
                else:
                    if answer_open:
                        closed.append(index)
                        continue
                    keep.append(index)
                    drafts.append(self._draft(reply)[: max_new_tokens - len(reply) - 1])
            if score_labels and closed:
                self._score_closed(
                    prompt_ids, replies, scored, cache, mask, column_positions, rows, closed, reply_starts
                )
            if not keep:
                break
            kept = torch.tensor(keep, device=device)
            if len(keep) < len(rows):
                cache.batch_select_indices(kept)
                mask, positions, column_positions = mask[kept], positions[kept], column_positions[kept]
            rows = [rows[index] for index in keep]
            width = self._step_width(drafts)
            drafts = [draft[: width - 1] for draft in drafts]
            step_ids = [
                [replies[row][-1], *draft] + [pad] * (width - 1 - len(draft))
                for row, draft in zip(rows, drafts, strict=True)
            ]
            step_positions = positions[:, None] + torch.arange(width, device=device)
            mask = torch.cat(
                [mask, mask.new_tensor([[1] * (1 + len(d)) + [0] * (width - 1 - len(d)) for d in drafts])], 1
            )
            column_positions = torch.cat([column_positions, step_positions], 1)
            best = (
                self.model(
                    input_ids=torch.tensor(step_ids, device=device),
                    attention_mask=mask,
                    position_ids=step_positions,
                    use_cache=True,
                    **{self._cache_argument: cache},
                )
                .logits.argmax(-1)
                .tolist()
            )
            new_tokens, accepted = [], []
            for draft, argmax in zip(drafts, best, strict=True):
                right = next((k for k, token in enumerate(draft) if token != argmax[k]), len(draft))
                new_tokens.append([*draft[:right], argmax[right]])
                accepted.append(right)
            accepted_tensor = torch.tensor(accepted, device=device)
            mask[:, -width:] = (torch.arange(width, device=device) <= accepted_tensor[:, None]).long()
            positions = positions + 1 + accepted_tensor
        return replies, scored

    def _score_closed(
        self,
        prompt_ids: list[list[int]],
        replies: list[list[int]],
        scored: list,
        cache: DynamicCache,
        mask: torch.Tensor,
        column_positions: torch.Tensor,
        rows: list[int],
        closed: list[int],
        reply_starts: list[int],
    ) -> None:
        """Score the answer of the replies that closed this step (`closed`: indices into the open `rows`), into
        `scored`. Rows needing the same opening are scored together over a copy of their cache rows."""
        groups: dict[str, list[tuple[int, int, int, int]]] = {}  # opening -> (index, kept, last token, its position)
        for index in closed:
            row = rows[index]
            kept, opening = self._split_reply(replies[row])
            last = replies[row][kept - 1] if kept else prompt_ids[row][-1]
            groups.setdefault(opening, []).append((index, kept, last, reply_starts[row] + kept - 1))
        for opening, members in groups.items():
            indices = torch.tensor([m[0] for m in members], device=self._device)
            starts = torch.tensor([m[3] for m in members], device=self._device)
            context = mask[indices] * (column_positions[indices] < starts[:, None])  # from the last kept token on
            scores = self._slot_scores(
                self._select_rows(cache, indices, self.model.config),
                context,
                [[m[2]] for m in members],
                starts,
                self._answer_continuations(opening),
            )
            for (index, kept, _, _), row_scores in zip(members, scores, strict=True):
                scored[rows[index]] = (kept, opening, row_scores)

    # ------------------------------------------------------------------------------------------------ predict
    def predict(
        self,
        texts: Sequence[str],
        mode: str = "answer",
        batch_size: int = 8,
        guess_batch_size: int = 16,
        confidence_threshold: float = 0.9,
        max_new_tokens: int | None = None,
        fallback_to_guess: bool = False,
        progress: bool = False,
        answer_decoding: str = "labels",
    ) -> list[GTAPrediction]:
        """Classify `texts`.

        Args:
            texts: The texts.
            mode: `"answer"` decodes the reply greedily and takes its answer; `"guess"` reads the guess distribution
                over the label set without decoding; `"adaptive"` keeps the guess when its top probability is at least
                `confidence_threshold` and thinks (decodes) for the others. A format without a guess block (the
                baselines: `answer`, `think_answer`) has guess mode read its answer slot, reached with the blocks
                before it written empty (`<think></think><answer>`), and adaptive mode keep that when confident.
            batch_size: Texts decoded at a time.
            guess_batch_size: Texts scored at a time in guess mode.
            confidence_threshold: Adaptive mode's threshold: 0 never thinks, any value above 1 always thinks.
            max_new_tokens: Reply budget (default: the classifier's, i.e. training's `max_completion_length`).
            fallback_to_guess: With free decoding in answer mode, take the generated guess when the answer is missing
                or invalid (adaptive mode always falls back to the guess).
            progress: Show a progress bar.
            answer_decoding: For the texts decoded (answer mode, and adaptive mode's thinking): `"labels"` decodes
                the guess and the think freely, stops where the answer opens, and scores every label exactly as the
                answer (`answer_probs`), so every text gets a label of the set; `"free"` decodes the answer too and
                reads it (a text outside the set gives no label).

        Returns:
            One `GTAPrediction` per text, in order. With free decoding, a missing or invalid answer gives
            `label=None` (counted as wrong in metrics) unless a fallback applies.
        """
        if mode not in CLASSIFY_MODES:
            raise ValueError(f"mode must be one of {CLASSIFY_MODES}, got {mode!r}.")
        if answer_decoding not in ANSWER_DECODINGS:
            raise ValueError(f"answer_decoding must be one of {ANSWER_DECODINGS}, got {answer_decoding!r}.")
        max_new_tokens = max_new_tokens or self.max_new_tokens
        prompt_ids, truncated = self._prompt_ids(texts)
        predictions = [GTAPrediction(label=None, text_truncated=cut) for cut in truncated]
        if not texts:
            return predictions
        self.model.eval()
        if mode != "answer" and "guess" not in self.template.tags and not self._told_about_the_answer_slot:
            self._told_about_the_answer_slot = True
            logger.warning(
                "The reply format %s has no guess: %s mode reads the answer slot right after the prompt (%s)%s.",
                "/".join(self.template.tags),
                mode,
                first_label_slot(self.template.tags)[0],
                ", keeps it when confident and decodes the reply otherwise" if mode == "adaptive" else "",
            )
        bar = tqdm(total=len(texts), desc=f"classify ({mode})", disable=not progress)
        # every tail keeps at least one token (a single text, or identical ones, share their whole prompt)
        shared = min(_common_prefix_length(prompt_ids), min(len(ids) for ids in prompt_ids) - 1)
        by_length = sorted(range(len(texts)), key=lambda i: len(prompt_ids[i]))  # batches with little padding
        if mode in ("guess", "adaptive"):
            for start in range(0, len(texts), guess_batch_size):
                rows = by_length[start : start + guess_batch_size]
                probs = self._guess_scores([prompt_ids[i] for i in rows], shared).softmax(dim=-1).tolist()
                for index, row_probs in zip(rows, probs, strict=True):
                    prediction = predictions[index]
                    prediction.guess_probs = dict(zip(self.labels, row_probs, strict=True))
                    prediction.guess = prediction.label = max(prediction.guess_probs, key=prediction.guess_probs.get)
                if mode == "guess":
                    bar.update(len(rows))
        if mode == "guess":
            bar.close()
            return predictions
        to_think = by_length
        if mode == "adaptive":
            to_think = [i for i in by_length if max(predictions[i].guess_probs.values()) < confidence_threshold]
            bar.update(len(texts) - len(to_think))
        labels_decoding = answer_decoding == "labels"
        for start in range(0, len(to_think), batch_size):
            indices = to_think[start : start + batch_size]
            replies, scored = self._decode([prompt_ids[i] for i in indices], shared, max_new_tokens, labels_decoding)
            for index, tokens, answer_scores in zip(indices, replies, scored, strict=True):
                prediction = predictions[index]
                prediction.generated_tokens = len(tokens)
                if labels_decoding:
                    kept, opening, logprobs = answer_scores
                    prediction.answer_probs = dict(zip(self.labels, logprobs.softmax(-1).tolist(), strict=True))
                    answer = max(prediction.answer_probs, key=prediction.answer_probs.get)
                    written = self.tokenizer.decode(tokens[:kept], skip_special_tokens=True) + opening
                    filled = ANSWER_TARGET.format(label=answer)
                    reply = self.template.response_prefix + written + target_continuation(filled, ANSWER_OPEN)
                    self._read_reply(prediction, reply, mode, fallback_to_guess)
                    prediction.answer = prediction.label = answer  # whatever else the reply holds
                else:
                    reply = self.template.response_prefix + self.tokenizer.decode(tokens, skip_special_tokens=True)
                    self._read_reply(prediction, reply, mode, fallback_to_guess)
            bar.update(len(indices))
        bar.close()
        return predictions

    def _read_reply(self, prediction: GTAPrediction, reply: str, mode: str, fallback_to_guess: bool) -> None:
        """Fill a prediction from its decoded reply: the answer's label, else (when allowed) the guess."""
        guess_label = (
            prediction.guess if mode == "adaptive" else match_label(extract_block(reply, "guess"), self.labels)
        )
        prediction.raw_output = reply
        prediction.think = extract_block(reply, "think")
        prediction.answer = extract_block(reply, "answer", unique=True)
        if mode == "answer":
            prediction.guess = extract_block(reply, "guess")
        prediction.label = match_label(prediction.answer, self.labels)
        if prediction.label is None and (fallback_to_guess or mode == "adaptive"):
            prediction.label = guess_label

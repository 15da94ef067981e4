"""`GTAClassifier`: run a GTA-trained causal LM as a text classifier.

Every mode runs the prompt part shared by all texts (instructions and label list) once, keeps it as a KV cache, and
runs only each text's own tokens (and the template's closing tokens) over a copy of it. Three modes:
- `answer`: greedily decode the whole `<guess>..</guess><think>..</think><answer>..</answer>` reply, stopping at the
  closing `</answer>` (or end of sequence); the label is the answer. Steps also check drafts of the next tokens taken
  from earlier replies, keeping only the tokens greedy decoding would choose.
- `guess`: no sampling; the guess distribution over the label set is read from the model in batched forward passes
  over a KV cache of the prompt part shared by all texts, computed once. A label's probability is that of decoding
  its guess (the gold-guess target the model was trained on) constrained to the label set: the labels' tokens form
  a trie, and at each point where labels diverge the model's next-token probabilities are renormalized over the
  labels' next tokens. When the first tokens of the labels differ, that is a single forward of each text's own
  tokens. It equals the labels' full-sequence likelihoods normalized over the set when the model puts all its mass
  on the label set, which is what the guess cross-entropy trains.
- `adaptive`: guess first, and think (decode as in answer mode) only for texts whose top guess probability is below a
  threshold.
"""

import copy
import inspect
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

from .checkpoint import GTA_CONFIG_FILE, GTACheckpointMetadata
from .prompts import GTAPromptTemplate, ensure_pad_token, fitted_prompts, tokenize_prompt
from .reply_format import CLASSIFY_MODES, GUESS_TARGET, extract_block, match_label, target_continuation

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
        label: A label of the set, or None when the model gave no valid label.
        guess: Answer mode: the generated `<guess>` text; guess and adaptive modes: the most probable label.
        guess_probs: Guess and adaptive modes: each label's probability as the guess.
        think: The `<think>` text, when the text was decoded.
        answer: The `<answer>` text, when decoded and unique.
        generated_tokens: Tokens decoded for this text, the one that ends the reply included: the token completing
            `</answer>`, or the end-of-sequence token, or none when the budget ran out first. 0 when it did not think.
        text_truncated: Whether the text was cut to fit `max_prompt_tokens`.
        raw_output: The decoded reply, response prefix included, up to and including `</answer>`.
    """

    label: str | None
    guess: str | None = None
    guess_probs: dict[str, float] | None = None
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


def _cache_argument(model) -> str:
    """The forward's name for a KV cache: transformers renamed `past_key_values` to `cache`, and drops the old name
    in 5.40 (a model that ignored it would score the texts without their prompt)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's kwargs pass through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


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
        self._cache_argument = _cache_argument(model)
        self._continuations: dict[tuple[int, ...], tuple[int, ...]] = {}  # token run -> what followed it last

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        labels: Sequence[str] | None = None,
        max_prompt_tokens: int | None = None,
        merge_adapter: bool = True,
        **model_kwargs: Any,
    ) -> "GTAClassifier":
        """Load a classifier from a folder (or a Hub id, where the Hub is reachable).

        Args:
            path_or_hub_id: A GTA checkpoint (label set, template and reply budget from its `gta_config.json`), a
                plain model folder (`labels` required; default template) or a LoRA adapter folder (loaded on its
                base model).
            labels: The label set; overrides the checkpoint's.
            max_prompt_tokens: Cut texts so every prompt fits.
            merge_adapter: Merge an adapter into the weights, so inference runs no adapter layers. A quantized base
                keeps its adapter, since merging into quantized weights would round the adapter away.
            **model_kwargs: Passed to `from_pretrained` of the model (e.g. `dtype`, `device_map`).

        Returns:
            The classifier, its model in eval mode.

        Raises:
            OSError: The folder or model cannot be loaded (offline, a Hub id fails with this).
            ValueError: No label set is known, or the checkpoint's `gta_config.json` is invalid.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        is_dir = os.path.isdir(path_or_hub_id)
        if not is_dir and (path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") > 1):
            raise OSError(f"Could not load a model: folder {path_or_hub_id!r} not found.")
        metadata = GTACheckpointMetadata.load(path_or_hub_id) if is_dir else None
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
            metadata.prompt_template if metadata else None,
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

    @cached_property
    def _label_continuations(self) -> list[list[int]]:
        """Per label, the reply tokens after the prompt that decide "the guess is this label": the label's tokens
        and the token that closes them (the first one reaching `</guess>`), tokenized as in a whole reply.
        Computed once: labels, template and tokenizer are fixed for a classifier."""
        prefix, following = self.template.response_prefix, self.template.guess_follower
        continuations = []
        for label in self.labels:
            text = target_continuation(GUESS_TARGET.format(label=label), prefix) + following
            boundary = text.rindex("</guess>")
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > boundary)
            continuations.append(encoded["input_ids"][: stop + 1])
        return continuations

    def _last_position(self, length: int) -> torch.Tensor:
        # as an index tensor, not `1`: the gathered hidden state is contiguous, so the LM head runs as one matmul
        # instead of a batched matmul over a broadcast weight (measured 8x slower on CPU)
        return torch.tensor([length - 1], device=self._device)

    def _run_tails(
        self, prompt_ids: list[list[int]], shared: int, extra: Sequence[int] = ()
    ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """Run each prompt's own tokens (after the `shared` first ones, which all prompts share), followed by `extra`,
        over a batch-sized copy of the shared-prefix cache.

        Tails are left-padded, so every row ends on the last column; padding is masked out and the positions continue
        the prefix's, so a row's logits are those of its whole prompt.

        Returns:
            The logits of the last position `(batch, 1, vocab)`, the cache (prefix and tails), its attention mask
            `(batch, shared + width)` and each row's tail length.
        """
        device, pad, batch = self._device, self.tokenizer.pad_token_id, len(prompt_ids)
        tails = [ids[shared:] + list(extra) for ids in prompt_ids]
        tail_lengths = torch.tensor([len(t) for t in tails], device=device)
        width = max(len(t) for t in tails)
        padding = width - tail_lengths
        tail_ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=device)
        columns = torch.arange(width, device=device)
        mask = torch.cat(
            [torch.ones(batch, shared, dtype=torch.long, device=device), (columns >= padding[:, None]).long()], dim=1
        )
        cache = copy.deepcopy(self._shared_prefix_cache(tuple(prompt_ids[0][:shared])))
        cache.batch_repeat_interleave(batch)
        logits = self.model(
            input_ids=tail_ids,
            attention_mask=mask,
            position_ids=shared + (columns - padding[:, None]).clamp(min=0),
            use_cache=True,
            logits_to_keep=self._last_position(width),
            **{self._cache_argument: cache},
        ).logits
        return logits, cache, mask, tail_lengths

    @torch.no_grad()
    def _guess_scores(self, prompt_ids: list[list[int]], shared: int) -> torch.Tensor:
        """Log-probability of each label under decoding constrained to the label set, (texts, labels).

        Only the trie's branch points need the model: one forward of the texts' tails (last position only), plus one
        small pass per deeper branch point (labels sharing leading tokens), over the cached shared prefix."""
        targets = self._label_continuations
        common = _common_prefix_length(targets)  # e.g. the tokens of "<guess>": part of every continuation
        device, batch = self._device, len(prompt_ids)
        tail_logits, cache, context_mask, tail_lengths = self._run_tails(prompt_ids, shared, targets[0][:common])
        scores = torch.zeros(batch, len(self.labels), device=device)
        for path, next_tokens in label_branch_points([t[common:] for t in targets]).items():
            if path:  # a deeper branch point: run its path over the cache, then crop the cache back
                length = len(path)
                logits = self.model(
                    input_ids=torch.tensor([list(path)] * batch, device=device),
                    attention_mask=torch.cat([context_mask, context_mask.new_ones(batch, length)], dim=1),
                    position_ids=(shared + tail_lengths)[:, None] + torch.arange(length, device=device),
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

    # ------------------------------------------------------------------------------------------------ answer
    @cached_property
    def _stop_token_ids(self) -> set[int]:
        """Tokens that end a reply: the tokenizer's end-of-sequence token and the generation config's."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        configured = [configured] if isinstance(configured, int) else list(configured or [])
        return {self.tokenizer.eos_token_id, *configured} - {None}

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

    @torch.no_grad()
    def _decode(self, prompt_ids: list[list[int]], shared: int, max_new_tokens: int) -> tuple[list[str], list[int]]:
        """Greedy replies over the cached shared prefix, and the tokens generated for each.

        One forward of the texts' own tokens, then steps over the rows still open. A row closes at an end-of-sequence
        token or at the token that completes the closing tag of the template's last block (`</answer>`), and leaves
        the batch (its cache row is dropped), so a step costs only the open rows.

        Replies in one format repeat themselves (tags, often a label and the words around it), so a step may also
        check a draft of each row's next tokens: what followed the same tokens in an earlier reply (as in
        prompt-lookup decoding). The step runs the row's next token and its draft in one pass and keeps the draft's
        tokens up to the first one that differs from the argmax at its position, plus that argmax: exactly the tokens
        one-token steps would have chosen. Rejected positions stay in the cache, masked out.

        Decoding is plain argmax: a sampling or penalty setting of the model's generation config does not apply."""
        logits, cache, mask, tail_lengths = self._run_tails(prompt_ids, shared)
        closing, pad = f"</{self.template.tags[-1]}>", self.tokenizer.pad_token_id
        positions = shared + tail_lengths  # the position of each open row's next token
        rows = list(range(len(prompt_ids)))  # open rows, in the cache's row order
        replies: list[list[int]] = [[] for _ in prompt_ids]
        new_tokens = [[token] for token in logits[:, -1].argmax(-1).tolist()]  # per open row, decoded last step
        while True:
            keep, drafts = [], []
            for index, row in enumerate(rows):
                reply = replies[row]
                for token in new_tokens[index]:
                    reply.append(token)
                    if (
                        token in self._stop_token_ids
                        or closing in self.tokenizer.decode(reply)
                        or len(reply) == max_new_tokens
                    ):
                        self._remember(reply)
                        break
                else:
                    keep.append(index)
                    drafts.append(self._draft(reply)[: max_new_tokens - len(reply) - 1])
            if not keep:
                break
            kept = torch.tensor(keep, device=self._device)
            if len(keep) < len(rows):
                cache.batch_select_indices(kept)
                mask, positions = mask[kept], positions[kept]
            rows = [rows[index] for index in keep]
            width = self._step_width(drafts)
            drafts = [draft[: width - 1] for draft in drafts]
            step_ids = [
                [replies[row][-1], *draft] + [pad] * (width - 1 - len(draft))
                for row, draft in zip(rows, drafts, strict=True)
            ]
            mask = torch.cat(
                [mask, mask.new_tensor([[1] * (1 + len(d)) + [0] * (width - 1 - len(d)) for d in drafts])], 1
            )
            best = (
                self.model(
                    input_ids=torch.tensor(step_ids, device=self._device),
                    attention_mask=mask,
                    position_ids=positions[:, None] + torch.arange(width, device=self._device),
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
            accepted_tensor = torch.tensor(accepted, device=self._device)
            mask[:, -width:] = (torch.arange(width, device=self._device) <= accepted_tensor[:, None]).long()
            positions = positions + 1 + accepted_tensor
        texts = [self.tokenizer.decode(reply, skip_special_tokens=True) for reply in replies]
        return texts, [len(reply) for reply in replies]

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
    ) -> list[GTAPrediction]:
        """Classify `texts`.

        Args:
            texts: The texts.
            mode: `"answer"` decodes the whole reply greedily and takes its answer; `"guess"` reads the guess
                distribution over the label set without decoding; `"adaptive"` keeps the guess when its top
                probability is at least `confidence_threshold` and thinks (decodes) for the others.
            batch_size: Texts decoded at a time.
            guess_batch_size: Texts scored at a time in guess mode.
            confidence_threshold: Adaptive mode's threshold: 0 never thinks, any value above 1 always thinks.
            max_new_tokens: Reply budget (default: the classifier's, i.e. training's `max_completion_length`).
            fallback_to_guess: In answer mode, take the generated guess when the answer is missing or invalid
                (adaptive mode always falls back to the guess).
            progress: Show a progress bar.

        Returns:
            One `GTAPrediction` per text, in order. A missing or invalid answer gives `label=None` (counted as wrong
            in metrics) unless a fallback applies.
        """
        if mode not in CLASSIFY_MODES:
            raise ValueError(f"mode must be one of {CLASSIFY_MODES}, got {mode!r}.")
        max_new_tokens = max_new_tokens or self.max_new_tokens
        prompt_ids, truncated = self._prompt_ids(texts)
        predictions = [GTAPrediction(label=None, text_truncated=cut) for cut in truncated]
        if not texts:
            return predictions
        self.model.eval()
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
        prefix = self.template.response_prefix
        for start in range(0, len(to_think), batch_size):
            indices = to_think[start : start + batch_size]
            outputs, counts = self._decode([prompt_ids[i] for i in indices], shared, max_new_tokens)
            for index, output, count in zip(indices, outputs, counts, strict=True):
                reply = prefix + output
                prediction = predictions[index]
                guess_label = (
                    prediction.guess if mode == "adaptive" else match_label(extract_block(reply, "guess"), self.labels)
                )
                prediction.raw_output = reply
                prediction.think = extract_block(reply, "think")
                prediction.answer = extract_block(reply, "answer", unique=True)
                prediction.generated_tokens = count
                if mode == "answer":
                    prediction.guess = extract_block(reply, "guess")
                prediction.label = match_label(prediction.answer, self.labels)
                if prediction.label is None and (fallback_to_guess or mode == "adaptive"):
                    prediction.label = guess_label
            bar.update(len(indices))
        bar.close()
        return predictions

"""`GTAClassifier`: run a GTA-trained causal LM as a text classifier.

Three modes:
- `answer`: generate the whole `<guess>..</guess><think>..</think><answer>..</answer>` reply; the label is the answer.
- `guess`: no sampling; every label is scored as the continuation of the prompt (the gold-guess target the model was
  trained on) in batched forward passes over a KV cache of the prompt part shared by all texts, computed once.
- `adaptive`: guess first, and think (generate) only for texts whose top guess probability is below a threshold.
"""

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .collator import GUESS_TARGET, target_continuation
from .parsing import extract_block, match_label
from .prompts import GTAPromptTemplate, TextFitter, tokenize_prompt

GTA_CONFIG_FILE = "gta_config.json"
MODES = ("answer", "guess", "adaptive")


@dataclass
class GTAPrediction:
    """One text's prediction. `label` is a label of the set, or None when the model gave no valid label."""

    label: str | None
    guess: str | None = None
    guess_probs: dict[str, float] | None = None
    think: str | None = None
    answer: str | None = None
    generated_tokens: int = 0
    text_truncated: bool = False
    raw_output: str | None = field(default=None, repr=False)


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for sequence in sequences[1:]:
        length = next((i for i in range(length) if sequence[i] != first[i]), length)
    return length


class GTAClassifier:
    """A causal LM + tokenizer + label set + the prompt template it was trained with."""

    def __init__(
        self,
        model,
        tokenizer,
        labels: Sequence[str],
        template: GTAPromptTemplate | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.labels = list(labels)
        self.template = template or GTAPromptTemplate()
        self.fitter = (
            TextFitter(self.template, self.labels, tokenizer, max_prompt_tokens) if max_prompt_tokens else None
        )
        self._prefix_cache: tuple[tuple[int, ...], object] | None = None

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        labels: Sequence[str] | None = None,
        max_prompt_tokens: int | None = None,
        **model_kwargs,
    ) -> "GTAClassifier":
        """Load a GTA checkpoint (labels and template from its `gta_config.json`), a plain model folder (labels
        required, default template) or a LoRA adapter folder (loaded on its base model)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        is_dir = os.path.isdir(path_or_hub_id)
        if not is_dir and (path_or_hub_id.startswith((".", "/", "~")) or path_or_hub_id.count("/") > 1):
            raise OSError(f"Could not load a model: folder {path_or_hub_id!r} not found.")
        metadata = {}
        if is_dir and os.path.exists(os.path.join(path_or_hub_id, GTA_CONFIG_FILE)):
            with open(os.path.join(path_or_hub_id, GTA_CONFIG_FILE)) as f:
                metadata = json.load(f)
        labels = list(labels) if labels is not None else metadata.get("labels")
        if not labels:
            raise ValueError(f"{path_or_hub_id} carries no label set ({GTA_CONFIG_FILE}); pass labels=[...].")
        template = GTAPromptTemplate.from_dict(metadata["prompt_template"]) if "prompt_template" in metadata else None
        try:
            if is_dir and os.path.exists(os.path.join(path_or_hub_id, "adapter_config.json")):
                from peft import AutoPeftModelForCausalLM

                model = AutoPeftModelForCausalLM.from_pretrained(path_or_hub_id, **model_kwargs)
            else:
                model = AutoModelForCausalLM.from_pretrained(path_or_hub_id, **model_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
        except OSError as error:
            where = "folder" if is_dir else "Hub id (is the Hub reachable?)"
            raise OSError(f"Could not load a model from {where} {path_or_hub_id!r}: {error}") from error
        model.eval()
        return cls(model, tokenizer, labels, template, max_prompt_tokens)

    # ------------------------------------------------------------------------------------------------ prompts
    def _prompt_ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        ids, truncated = [], []
        for text in texts:
            cut = False
            if self.fitter is not None:
                text, cut = self.fitter(text)
            prompt = self.template.prompt(text, self.labels, self.tokenizer)
            ids.append(list(tokenize_prompt(self.tokenizer, prompt, **self.template.chat_template_kwargs)))
            truncated.append(cut)
        return ids, truncated

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------------ guess
    def _shared_prefix_cache(self, prefix: tuple[int, ...]):
        """KV cache of the prompt part every text shares (instructions and label list), computed once."""
        if self._prefix_cache is None or self._prefix_cache[0] != prefix:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([prefix], device=self._device), use_cache=True)
            self._prefix_cache = (prefix, out.past_key_values)
        return self._prefix_cache[1]

    def _label_continuations(self) -> list[list[int]]:
        """Per label, the reply tokens after the prompt that decide "the guess is this label": the label's tokens
        and the token that closes them (the first one reaching `</guess>`), tokenized as in a whole reply."""
        prefix, following = self.template.response_prefix, self.template.guess_follower
        continuations = []
        for label in self.labels:
            text = target_continuation(GUESS_TARGET.format(label=label), prefix) + following
            boundary = text.rindex("</guess>")
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            stop = next(i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > boundary)
            continuations.append(encoded["input_ids"][: stop + 1])
        return continuations

    @torch.no_grad()
    def _guess_scores(self, prompt_ids: list[list[int]], shared: int) -> torch.Tensor:
        """Log-probability that the guess block holds each label, (texts, labels)."""
        targets = self._label_continuations()
        common = _common_prefix_length(targets)  # e.g. the tokens of "<guess>": part of every continuation
        tails = [ids[shared:] + targets[0][:common] for ids in prompt_ids]
        continuations = [t[common:] for t in targets]
        device, pad = self._device, self.tokenizer.pad_token_id
        batch = len(tails)

        cache = copy.deepcopy(self._shared_prefix_cache(tuple(prompt_ids[0][:shared])))
        cache.batch_repeat_interleave(batch)
        tail_width = max(len(t) for t in tails)
        tail_ids = torch.tensor([t + [pad] * (tail_width - len(t)) for t in tails], device=device)
        tail_mask = torch.tensor([[1] * len(t) + [0] * (tail_width - len(t)) for t in tails], device=device)
        shared_mask = torch.ones(batch, shared, dtype=torch.long, device=device)
        positions = shared + torch.arange(tail_width, device=device).expand(batch, -1)
        out = self.model(
            input_ids=tail_ids,
            attention_mask=torch.cat([shared_mask, tail_mask], dim=1),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        tail_lengths = tail_mask.sum(dim=1)
        last_logits = out.logits[torch.arange(batch, device=device), tail_lengths - 1].float().log_softmax(-1)
        first_tokens = torch.tensor([c[0] for c in continuations], device=device)
        scores = last_logits[:, first_tokens]  # (batch, labels)

        # the rest of each label's continuation: one small forward per label over the shared cache, cropped back
        # after each, so the texts' caches are never copied once per label
        cache = out.past_key_values
        context_mask = torch.cat([shared_mask, tail_mask], dim=1)
        for index, continuation in enumerate(continuations):
            if len(continuation) < 2:
                continue
            length = len(continuation) - 1
            logits = (
                self.model(
                    input_ids=torch.tensor([continuation[:-1]] * batch, device=device),
                    attention_mask=torch.cat([context_mask, context_mask.new_ones(batch, length)], dim=1),
                    position_ids=(shared + tail_lengths).unsqueeze(1) + torch.arange(length, device=device),
                    past_key_values=cache,
                    use_cache=True,
                )
                .logits.float()
                .log_softmax(-1)
            )
            following = torch.tensor(continuation[1:], device=device)
            scores[:, index] += logits[:, torch.arange(length, device=device), following].sum(dim=1)
            cache.crop(-length)
        return scores

    # ------------------------------------------------------------------------------------------------ answer
    @torch.no_grad()
    def _generate(
        self, prompt_ids: list[list[int]], max_new_tokens: int, **generate_kwargs
    ) -> tuple[list[str], list[int]]:
        device, pad = self._device, self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
        generate_kwargs.setdefault("do_sample", False)
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            **generate_kwargs,
        )[:, width:]
        eos = self.tokenizer.eos_token_id
        texts, counts = [], []
        for row in output.tolist():
            count = row.index(eos) + 1 if eos in row else len(row)
            texts.append(self.tokenizer.decode(row[:count], skip_special_tokens=True))
            counts.append(count)
        return texts, counts

    # ------------------------------------------------------------------------------------------------ predict
    def predict(
        self,
        texts: Sequence[str],
        mode: str = "answer",
        batch_size: int = 8,
        guess_batch_size: int = 64,
        confidence_threshold: float = 0.9,
        max_new_tokens: int = 64,
        fallback_to_guess: bool = False,
        progress: bool = False,
        **generate_kwargs,
    ) -> list[GTAPrediction]:
        """Classify `texts`.

        `guess_batch_size` texts are scored together (guess scoring runs one small pass per label over a batch, so
        wide batches amortize it). In `answer` mode a missing or invalid answer gives `label=None` (counted as
        wrong in metrics), unless `fallback_to_guess`, which takes the generated guess instead. In `adaptive` mode
        texts whose top guess probability is at least `confidence_threshold` keep the guess; the others think,
        falling back to the guess when their answer is invalid. `confidence_threshold=0` never thinks, any value
        above 1 always thinks.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        prompt_ids, truncated = self._prompt_ids(texts)
        predictions = [GTAPrediction(label=None, text_truncated=cut) for cut in truncated]
        if not texts:
            return predictions
        self.model.eval()
        bar = tqdm(total=len(texts), desc=f"classify ({mode})", disable=not progress)
        if mode in ("guess", "adaptive"):
            shared = max(_common_prefix_length(prompt_ids) - 1, 1)  # keep at least one token in every tail
            for start in range(0, len(texts), guess_batch_size):
                rows = prompt_ids[start : start + guess_batch_size]
                probs = self._guess_scores(rows, shared).softmax(dim=-1).tolist()
                for offset, row_probs in enumerate(probs):
                    prediction = predictions[start + offset]
                    prediction.guess_probs = dict(zip(self.labels, row_probs, strict=True))
                    prediction.guess = prediction.label = max(prediction.guess_probs, key=prediction.guess_probs.get)
                if mode == "guess":
                    bar.update(len(rows))
        if mode == "guess":
            bar.close()
            return predictions
        if mode == "adaptive":
            bar.update(sum(max(p.guess_probs.values()) >= confidence_threshold for p in predictions))
            to_think = [i for i, p in enumerate(predictions) if max(p.guess_probs.values()) < confidence_threshold]
        else:
            to_think = list(range(len(texts)))
        prefix = self.template.response_prefix
        for start in range(0, len(to_think), batch_size):
            indices = to_think[start : start + batch_size]
            outputs, counts = self._generate([prompt_ids[i] for i in indices], max_new_tokens, **generate_kwargs)
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

"""`GTATrainer`: TRL's GRPOTrainer plus a supervised guess loss, guess-span masking and gradient-conflict rules.

Eight hooks, each small:
- `_prepare_inputs`: each micro-batch without the columns that pad all its rows, and with
  `group_by_completion_length`, the long completions of a step in the same micro-batches (`padding.py`);
- `_generate_and_score_completions`: mask the sampled guess span out of the RL loss (through `tool_mask`) and
  attach the teacher-forced gold-guess targets to every row;
- `_calculate_rewards`: decide from the rewards which rows carry a policy gradient (groups whose rewards differ), and
  log what TRL does not (the rollouts' guess accuracy and truncated prompts; TRL already logs each reward function's
  mean);
- `compute_loss`: TRL's GRPO loss + the guess cross-entropy, their gradients kept apart where the conflict rule
  needs them (see `losses.py` for the rule);
- `_get_per_token_logps_and_entropies`: replay the RL forward's outputs, so that the policy term alone
  (`conflict_signal="policy_gradient"`) is computed by TRL's own loss without a second forward; with
  `share_prompt_prefix`, compute the rows' common prompt prefix once (`shared_prefix.py`); on a CPU, let TRL's LM
  head score the completion tokens only;
- `_generate_single_turn`: with `share_prompt_prefix`, the rollouts compute the prompts' common prefix once too;
- `_clip_grad_norm` / `_get_grad_norm`: with `conflict_scope="step"`, apply the rule once per optimizer step to the
  accumulated, process-averaged gradients, before clipping;
- `checkpoint_metadata` / `_load_optimizer_and_scheduler`: what every checkpoint carries (labels, prompt template,
  reply budget; saved by `SavesCheckpointMetadata`), checked on resume.

Step scope (default): the RL loss goes through the trainer's own `backward()` (loss scaling, DDP all-reduce and
accumulation into `p.grad` unchanged), the SFT gradient accumulates over the window in one extra buffer (and the
policy term's in another, for `conflict_signal="policy_gradient"` with a KL/entropy term), and at the sync step the
buffers are averaged over processes, compared and combined into `p.grad` in place.
Micro-batch scope: both gradients of the micro-batch are taken with `torch.autograd.grad`, combined per process, and
returned as a surrogate loss whose single `backward()` DDP all-reduces.
"""

import logging
from typing import Any

import torch
import torch.distributed as dist
from datasets import Dataset, IterableDataset
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import GRPOTrainer

from .checkpoint import GTACheckpointMetadata, SavesCheckpointMetadata, library_versions
from .collator import target_token_ids
from .config import GTAConfig
from .dataset import LABEL_SET_COLUMN, check_columns, dataset_label_set, first_row
from .losses import (
    ConflictDecision,
    accumulate_gradients,
    combine_gradients,
    conflict_decision,
    gradient_dots,
    gradient_surrogate,
    guess_cross_entropy,
    rows_with_reward_signal,
)
from .model_card import TAGS
from .padding import group_by_length, score_labelled_positions_only, trim_padding
from .prompts import GTAPromptTemplate
from .reply_format import extract_block, normalize_label
from .rewards import RewardFunc, answer_accuracy_reward, full_responses, gta_format_reward
from .shared_prefix import SharedPrefixModel, forward_with_shared_prefix, shared_prefix_generation
from .spans import guess_span_mask

logger = logging.getLogger(__name__)


def _named_eval_datasets(eval_dataset) -> list[tuple[str, Any]]:
    if isinstance(eval_dataset, dict):
        return [(f"evaluation ({name!r})", dataset) for name, dataset in eval_dataset.items()]
    return [("evaluation", eval_dataset)] if eval_dataset is not None else []


class GTATrainer(SavesCheckpointMetadata, GRPOTrainer):
    """Guess-Think-Answer trainer, constructed like `trl.GRPOTrainer`.

    Args:
        model: A model id or path, or a `PreTrainedModel` (as for `GRPOTrainer`).
        reward_funcs: Reward functions in TRL's signature. Default: `[gta_format_reward, answer_accuracy_reward]`.
        args: A `GTAConfig` (default: one named after the model).
        train_dataset: Rows with a `prompt` and a string `label` (and `response_prefix` when the prompt opens the
            reply), as `build_gta_dataset` makes them.
        eval_dataset: Same layout as `train_dataset`.
        processing_class: The tokenizer.
        prompt_template: The template the dataset was built with; saved with the model so `GTAClassifier` asks the
            same question. Default: the GTA template with the dataset's `response_prefix` and
            `args.chat_template_kwargs`.
        **kwargs: Passed to `GRPOTrainer` (`peft_config`, `callbacks`, ...).

    The label set comes from `args.labels`, else from the dataset built by `build_gta_dataset`.

    Example:
        ```python
        trainer = GTATrainer(model, args=GTAConfig("out"), train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        trainer.save_model()  # weights + gta_config.json + model card
        ```
    """

    _tag_names = TAGS

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        args: GTAConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        prompt_template: GTAPromptTemplate | None = None,
        **kwargs: Any,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GTAConfig(f"{str(name).split('/')[-1]}-GTA")
        if not isinstance(args, GTAConfig):
            raise TypeError(f"GTATrainer needs a GTAConfig, got {type(args).__name__}.")
        use_default_rewards = reward_funcs is None and kwargs.get("environment_factory") is None
        needs_label = args.sft_weight > 0 or use_default_rewards  # the guess target, the default accuracy reward
        for name, dataset in (("training", train_dataset), *_named_eval_datasets(eval_dataset)):
            if dataset is not None:  # no training dataset at all: GRPOTrainer's own error below
                check_columns(dataset, f"The {name} dataset", ("prompt", "label") if needs_label else ("prompt",))
        labels = args.labels or (dataset_label_set(train_dataset) if train_dataset is not None else None)
        if labels is None and args.sft_weight > 0 and train_dataset is not None:
            raise ValueError(
                f"Unknown label set: pass GTAConfig(labels=[...]) or build the dataset with build_gta_dataset "
                f"(its `{LABEL_SET_COLUMN}` column carries the label set)."
            )
        if use_default_rewards:
            reward_funcs = [gta_format_reward, answer_accuracy_reward]
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.labels: list[str] | None = list(labels) if labels is not None else None
        if prompt_template is None:
            prefix = first_row(train_dataset).get("response_prefix") if train_dataset is not None else None
            prompt_template = GTAPromptTemplate(
                response_prefix=prefix or "", chat_template_kwargs=dict(args.chat_template_kwargs or {})
            )
        self.prompt_template = prompt_template
        self.eval_results: dict[str, dict] = {}  # name -> metrics, shown in the model card when set
        self.dataset_names: list[str] = []  # shown in the model card
        self._target_cache: dict[tuple[str, str], list[int]] = {}
        self._trainable_params: list[torch.Tensor] | None = None
        self._decomposable = self._check_gradient_setup()
        self._check_prefix_sharing()
        # step scope: the SFT (and policy-term) gradient accumulated over the current window, and whether any of its
        # rows carries a reward signal
        self._sft_grads: list[torch.Tensor | None] | None = None
        self._signal_grads: list[torch.Tensor | None] | None = None
        self._window_signal: torch.Tensor | None = None
        self._reward_signal: torch.Tensor | None = None  # all processes' rows, from _calculate_rewards
        self._replayed_logps: tuple | None = None  # the RL forward's outputs, replayed for the policy term
        self._capture_logps = False

    def _zero_stage(self) -> int | None:
        """DeepSpeed's ZeRO stage, None without DeepSpeed."""
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return plugin.zero_stage if self.is_deepspeed_enabled and plugin is not None else None

    @staticmethod
    def _reentrant(args: GTAConfig) -> bool:
        return bool((args.gradient_checkpointing_kwargs or {}).get("use_reentrant"))

    def _check_gradient_setup(self) -> bool:
        """Whether the SFT and RL gradients can be kept apart here; raise if the conflict rule needs it and cannot.

        `conflict_strategy="none"` (and `sft_weight=0`) needs no gradient surgery: where the gradients cannot be kept
        apart it trains on the plain weighted sum with one backward and logs no cosine.
        """
        args = self.args
        if args.sft_weight == 0:
            return False
        if self.is_fsdp_enabled or self._zero_stage() == 3:
            reason = (
                "needs whole per-parameter gradients, which DeepSpeed ZeRO-3 and FSDP shard. Use DDP (or ZeRO-1/2 "
                "with conflict_scope='micro_batch')"
            )
        elif args.gradient_checkpointing and self._reentrant(args):  # set by the user, or TRL (LoRA + ZeRO-3)
            reason = (
                "needs torch.autograd.grad, which reentrant gradient checkpointing cannot serve. Set "
                "gradient_checkpointing_kwargs={'use_reentrant': False}"
            )
        elif self.is_deepspeed_enabled and args.conflict_scope == "step":
            reason = (
                "with conflict_scope='step' needs the optimizer step's gradients before clipping, but DeepSpeed "
                "reduces, clips and steps inside backward(). Use conflict_scope='micro_batch' (ZeRO-1/2)"
            )
        elif self.is_deepspeed_enabled and args.fp16:
            reason = (
                "needs the two gradients taken apart, and DeepSpeed applies its fp16 loss scale only inside its own "
                "backward(), so they could underflow. Use bf16"
            )
        else:
            return True
        if args.conflict_strategy != "none":
            raise ValueError(f"conflict_strategy={args.conflict_strategy!r} {reason}, or conflict_strategy='none'.")
        logger.info("GTA trains on the plain sum of the SFT and RL losses here; gta/grad_cosine is not logged.")
        return False

    def _check_prefix_sharing(self) -> None:
        """`share_prompt_prefix` builds a KV cache inside each forward: refuse where that cannot hold."""
        if not self.args.share_prompt_prefix:
            return
        reasons = {
            "activation checkpointing (its recomputed forward would extend the prefix cache again)": (
                self.args.gradient_checkpointing
            ),
            "several processes (each forward would run the wrapped model twice)": self.accelerator.num_processes > 1,
            "vLLM or continuous-batching generation": self.use_vllm or self.use_transformers_continuous_batching,
            "a vision-language model": self._is_vlm,
        }
        found = [reason for reason, present in reasons.items() if present]
        if found:
            raise ValueError(f"share_prompt_prefix does not work with {' or '.join(found)}; set it to False.")

    # ----------------------------------------------------------------------------------------------- rollouts
    def _generate_single_turn(self, *args, **kwargs):
        if not self.args.share_prompt_prefix:
            return super()._generate_single_turn(*args, **kwargs)
        with shared_prefix_generation(self.accelerator.unwrap_model(self.model_wrapped)):
            return super()._generate_single_turn(*args, **kwargs)

    def _guess_targets(self, label: str, prefix: str) -> list[int]:
        key = (label, prefix)
        if key not in self._target_cache:
            self._target_cache[key] = target_token_ids(
                self._tokenizer, label, prefix, following=self.prompt_template.guess_follower
            )
        return self._target_cache[key]

    def _prepare_inputs(self, generation_batch):
        if self._is_vlm:  # vision inputs align with the prompt's columns and split by image
            return super()._prepare_inputs(generation_batch)
        buffered = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        accumulation = self.args.gradient_accumulation_steps
        generated = self.model.training and self._buffered_inputs is not buffered  # TRL buffered a new generation
        if generated and self.args.group_by_completion_length and accumulation > 1:
            self._buffered_inputs = group_by_length(self._buffered_inputs, accumulation)
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
        return trim_padding(inputs)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        prefixes = [x.get("response_prefix") or "" for x in inputs]
        completion_mask = output["completion_mask"]
        if self.args.mask_guess_in_rl:
            lengths = completion_mask.sum(dim=1).tolist()
            keep = 1 - guess_span_mask(output["completion_ids"], lengths, self._tokenizer, prefixes)
            output["tool_mask"] = keep if "tool_mask" not in output else output["tool_mask"] * keep
            # the dapo-family losses divide by this count, which TRL took before the guess span was masked
            output["num_items_in_batch"] = self.accelerator.gather((completion_mask * output["tool_mask"]).sum()).sum()
        if self.args.sft_weight > 0:
            targets = [torch.tensor(self._guess_targets(x["label"], p)) for x, p in zip(inputs, prefixes, strict=True)]
            device = completion_mask.device
            output["gta_target_ids"] = pad_sequence(
                targets, batch_first=True, padding_value=self._tokenizer.pad_token_id
            ).to(device)
            output["gta_target_mask"] = pad_sequence(
                [torch.ones_like(t) for t in targets], batch_first=True, padding_value=0
            ).to(device)
            start = self.accelerator.process_index * len(inputs)  # TRL's own slice of the gathered rows
            output["gta_reward_signal"] = self._reward_signal[start : start + len(inputs)].to(device)
        self._reward_signal = None
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        self._reward_signal = rows_with_reward_signal(
            rewards,
            self.reward_weights.to(rewards.device),
            self.num_generations if mode == "train" else self.num_generations_eval,
            self.multi_objective_aggregation,
        )
        texts = full_responses(completions, [x.get("response_prefix") or "" for x in inputs])
        guesses = [extract_block(text, "guess") for text in texts]
        stats = torch.tensor(
            [
                sum(
                    g is not None and "label" in x and normalize_label(g) == normalize_label(str(x["label"]))
                    for g, x in zip(guesses, inputs, strict=True)
                ),
                sum(bool(x.get("text_truncated")) for x in inputs),
                len(texts),
            ],
            dtype=torch.float32,
            device=self.accelerator.device,
        )
        guess_ok, truncated, count = self.accelerator.gather(stats).view(-1, 3).sum(0).tolist()
        self._metrics[mode]["gta/guess_accuracy"].append(guess_ok / max(count, 1))
        self._metrics[mode]["gta/truncated_prompts"].append(truncated / max(count, 1))
        return rewards

    # ----------------------------------------------------------------------------------------------- loss
    def _guess_loss(self, model, inputs) -> torch.Tensor:
        """Exact cross-entropy of the gold guess: one forward row per distinct (prompt, target) in the micro-batch,
        weighted by the rows it stands for, so that L_SFT is the mean over the micro-batch's rows (and, micro-batches
        being equal in size, over the optimizer step's) however the shuffle spread the prompts."""
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        target_ids, target_mask = inputs["gta_target_ids"], inputs["gta_target_mask"]
        rows = torch.cat([prompt_ids, target_ids], dim=1)
        _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
        first = torch.full((int(inverse.max()) + 1,), rows.size(0), device=rows.device)
        first = first.scatter_reduce(0, inverse, torch.arange(rows.size(0), device=rows.device), reduce="amin")
        prompt_ids, prompt_mask = prompt_ids[first], prompt_mask[first]
        start = int(prompt_mask.any(dim=0).nonzero()[0])  # drop the columns that are padding in every kept row
        input_ids = torch.cat([prompt_ids[:, start:], target_ids[first]], dim=1)
        attention_mask = torch.cat([prompt_mask[:, start:], target_mask[first]], dim=1)
        targets = target_ids[first].masked_fill(target_mask[first] == 0, -100)
        # without sharing (limit 0) this is the plain forward, positions counted from each row's first real token
        limit = int(prompt_mask.sum(dim=1).min()) - 1 if self.args.share_prompt_prefix else 0
        with self.accelerator.autocast():
            outputs, _ = forward_with_shared_prefix(
                model, input_ids, attention_mask, limit, logits_to_keep=targets.size(1) + 1
            )
            logits = outputs.logits
        return guess_cross_entropy(logits[:, :-1], targets, self.args.sft_loss_reduction, weights=counts)

    def _sft_term(self, model, inputs) -> torch.Tensor:
        """`sft_weight * L_SFT`, scaled for gradient accumulation in training as TRL's RL loss is; logs `L_SFT`."""
        mode = "train" if self.model.training else "eval"
        sft_loss = self._guess_loss(model, inputs)
        self._metrics[mode]["gta/sft_loss"].append(self.accelerator.gather(sft_loss.detach()).mean().item())
        if mode == "train":
            sft_loss = sft_loss / self.current_gradient_accumulation_steps
        return self.args.sft_weight * sft_loss

    def _rl_term(self, model, inputs) -> torch.Tensor:
        return self.args.rl_weight * super().compute_loss(model, inputs)

    def _separate_signal(self) -> bool:
        """Whether the conflict cosine needs the policy term apart: asked for, and TRL's RL loss has other terms."""
        regularized = self.beta != 0.0 or self._entropy_bonus_enabled or self.aux_loss_enabled
        return self.args.conflict_signal == "policy_gradient" and regularized

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._replayed_logps is not None:
            return self._replayed_logps
        if self.args.share_prompt_prefix:  # TRL's labels score the completion: the prefix stays inside the prompt
            model = SharedPrefixModel(model)
        with score_labelled_positions_only(input_ids.device):
            outputs = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        if self._capture_logps:
            self._replayed_logps, self._capture_logps = outputs, False
        return outputs

    def _rl_terms(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`λ2 · L_RL` and, when the cosine needs it apart, `λ2 ·` its policy term alone (else None).

        Both come from TRL's own loss and one forward: the second computation replays the first's log-probs and
        entropies with the KL, entropy and auxiliary terms switched off, and the metrics it logs again are dropped.
        """
        if not self._separate_signal():
            return self._rl_term(model, inputs), None
        self._capture_logps = True
        metrics = self._metrics["train"]
        try:
            rl_term = self._rl_term(model, inputs)
            logged = {name: len(values) for name, values in metrics.items()}
            saved = self.beta, self._entropy_bonus_enabled, self.aux_loss_enabled
            self.beta, self._entropy_bonus_enabled, self.aux_loss_enabled = 0.0, False, False
            try:
                policy_term = self._rl_term(model, inputs)
            finally:
                self.beta, self._entropy_bonus_enabled, self.aux_loss_enabled = saved
                for name in list(metrics):
                    if name in logged:
                        del metrics[name][logged[name] :]
                    else:
                        del metrics[name]
        finally:
            self._capture_logps, self._replayed_logps = False, None
        return rl_term, policy_term

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.sft_weight == 0:
            return self.args.rl_weight * super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        decompose = (
            self._decomposable
            and self.model.training
            and torch.is_grad_enabled()
            and (self.args.conflict_strategy != "none" or self._is_logging_step())  # "none" only measures
        )
        if not decompose:
            return self._rl_term(model, inputs) + self._sft_term(model, inputs)
        if self._trainable_params is None:
            self._trainable_params = [p for p in model.parameters() if p.requires_grad]
        if self.args.conflict_scope == "step":
            return self._step_scope_loss(model, inputs)
        return self._micro_batch_loss(model, inputs)

    def _is_logging_step(self) -> bool:
        """Whether the trainer logs after the current optimizer step (transformers' DefaultFlowCallback's rule)."""
        step = self.state.global_step + 1
        return (step == 1 and self.args.logging_first_step) or (
            self.args.logging_strategy == "steps" and step % self.state.logging_steps == 0
        )

    def _scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss as the trainer's `backward()` would differentiate it: times the fp16 loss scale, if any."""
        scaler = self.accelerator.scaler
        return scaler.scale(loss) if scaler is not None else loss

    def _step_scope_loss(self, model, inputs) -> torch.Tensor:
        """Add this micro-batch's SFT gradient (and policy-term gradient) to the window's buffers; return the RL loss
        for the trainer's backward.

        The SFT graph is built and freed before the RL forward, so the two graphs never coexist.
        """
        params = self._trainable_params
        with self.accelerator.no_sync(model):  # its backward must not start DDP's all-reduce of p.grad
            sft_term = self._sft_term(model, inputs)
            rl_grads = [p.grad for p in params]  # the RL gradient accumulated so far in the window
            sft_grads = self._sft_grads or [None] * len(params)
            try:
                for p, g in zip(params, sft_grads, strict=True):
                    p.grad = g
                torch.autograd.backward(self._scaled(sft_term), inputs=params)  # accumulates in place
                self._sft_grads = [p.grad for p in params]
            finally:
                for p, g in zip(params, rl_grads, strict=True):
                    p.grad = g
        rl_term, policy_term = self._rl_terms(model, inputs)
        if policy_term is not None:  # autograd.grad fires no DDP hook: the trainer's backward below does, once
            grads = self._gradients(policy_term, params, retain_graph=True, materialize=False)
            self._signal_grads = accumulate_gradients(self._signal_grads, grads)
        signal = inputs["gta_reward_signal"].any().float()
        previous = self._window_signal
        self._window_signal = signal if previous is None else torch.maximum(previous, signal)
        return rl_term + sft_term.detach()

    def _combine_step_gradients(self) -> None:
        """Step scope, at the sync step: apply the conflict rule once to the window's gradients, into `p.grad`.

        `p.grad` holds the RL gradient, accumulated over the window and already averaged over processes by DDP; the
        SFT (and policy-term) buffers are averaged here. Every process then computes the same decision from the same
        numbers. Every trainable parameter counts: one a loss does not reach has a zero gradient from it.
        """
        if self._sft_grads is None:
            return
        params = self._trainable_params
        sft_grads, signal_grads, has_signal = self._sft_grads, self._signal_grads, self._window_signal
        self._sft_grads = self._signal_grads = self._window_signal = None
        signal_list = signal_grads or [None] * len(params)
        for p, s, g in zip(params, sft_grads, signal_list, strict=True):
            if p.grad is None and (s is not None or g is not None):  # not reached by the RL loss
                p.grad = torch.zeros_like(p)
        kept = [k for k, p in enumerate(params) if p.grad is not None]
        rl_grads = [params[k].grad for k in kept]
        sft_grads = [sft_grads[k] for k in kept]
        signal_grads = [signal_list[k] for k in kept] if signal_grads is not None else None
        if self.accelerator.num_processes > 1:
            buffers = [g for g in [*sft_grads, *(signal_grads or [])] if g is not None]
            works = [dist.all_reduce(g, async_op=True) for g in buffers]
            works.append(dist.all_reduce(has_signal, op=dist.ReduceOp.MAX, async_op=True))
            for work in works:
                work.wait()
            torch._foreach_div_(buffers, float(self.accelerator.num_processes))
        has_policy_gradient = bool(has_signal > 0)
        rl_loss_decision = None
        if signal_grads is not None:  # what conflict_signal="rl_loss" would have decided, before rl_grads change
            rl_loss_decision = conflict_decision(
                *gradient_dots(sft_grads, rl_grads), self.args.conflict_strategy, has_policy_gradient
            )
        decision = combine_gradients(
            sft_grads, rl_grads, self.args.conflict_strategy, has_policy_gradient, signal_grads
        )
        self._log_decision(decision, rl_loss_decision, gather=False)

    def _log_decision(self, decision: ConflictDecision, rl_loss_decision: ConflictDecision | None, gather: bool):
        """Log the cosine and conflict (averaged over processes when `gather`); with a separate policy-term signal,
        also those that `conflict_signal="rl_loss"` would have had (`gta/rl_loss_*`)."""
        values = {"gta/grad_cosine": decision.cosine, "gta/conflict_rate": float(decision.conflict)}
        if rl_loss_decision is not None:
            values["gta/rl_loss_cosine"] = rl_loss_decision.cosine
            values["gta/rl_loss_conflict_rate"] = float(rl_loss_decision.conflict)
        numbers = list(values.values())
        if gather:
            stats = torch.tensor(numbers, device=self.accelerator.device)
            numbers = self.accelerator.gather(stats).view(-1, len(numbers)).mean(0).tolist()
        for name, value in zip(values, numbers, strict=True):
            self._metrics["train"][name].append(value)

    def _clip_grad_norm(self, model):
        self._combine_step_gradients()  # clipping acts on the combined gradient
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        self._combine_step_gradients()  # called instead of _clip_grad_norm when max_grad_norm <= 0
        return super()._get_grad_norm(model, grad_norm)

    def _micro_batch_loss(self, model, inputs) -> torch.Tensor:
        """Combine this micro-batch's two gradients on this process; return a surrogate carrying the combination.

        The RL gradient is taken first, so its (larger) graph is freed before the supervised forward; the combination
        is written into the RL gradient in place.
        """
        params = self._trainable_params
        rl_term, policy_term = self._rl_terms(model, inputs)
        signal_grads = None
        if policy_term is not None:
            signal_grads = self._gradients(policy_term, params, retain_graph=True)
        rl_grads = self._gradients(rl_term, params)
        sft_term = self._sft_term(model, inputs)
        sft_grads = self._gradients(sft_term, params)
        has_policy_gradient = bool(inputs["gta_reward_signal"].any())
        strategy = self.args.conflict_strategy
        rl_loss_decision = None
        if signal_grads is not None:
            rl_loss_decision = conflict_decision(*gradient_dots(sft_grads, rl_grads), strategy, has_policy_gradient)
        decision = combine_gradients(sft_grads, rl_grads, strategy, has_policy_gradient, signal_grads)
        del sft_grads, signal_grads
        if self.accelerator.scaler is not None:  # the trainer's backward scales the surrogate again
            torch._foreach_div_(rl_grads, self.accelerator.scaler.get_scale())
        self._log_decision(decision, rl_loss_decision, gather=True)
        return gradient_surrogate(params, rl_grads, rl_term + sft_term)

    def _gradients(
        self, loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False, materialize: bool = True
    ) -> list[torch.Tensor | None]:
        if not loss.requires_grad:
            return [torch.zeros_like(p) if materialize else None for p in params]
        return list(
            torch.autograd.grad(
                self._scaled(loss), params, retain_graph=retain_graph, allow_unused=True, materialize_grads=materialize
            )
        )

    # ----------------------------------------------------------------------------------------------- saving
    def checkpoint_metadata(self) -> GTACheckpointMetadata:
        """What a GTA checkpoint needs beyond the weights: label set, prompt template, generation budget, settings."""
        args = self.args
        settings = {"method": "gta" if args.sft_weight > 0 else "grpo"}
        settings |= {
            name: getattr(args, name)
            for name in (
                "sft_weight",
                "rl_weight",
                "conflict_strategy",
                "conflict_scope",
                "conflict_signal",
                "sft_loss_reduction",
                "mask_guess_in_rl",
                "num_generations",
                "num_iterations",
                "beta",
                "loss_type",
            )
        }
        return GTACheckpointMetadata(
            labels=self.labels,
            prompt_template=self.prompt_template,
            max_completion_length=args.max_completion_length,
            settings=settings,
            versions=library_versions(),
        )

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        saved = GTACheckpointMetadata.load(checkpoint) if checkpoint else None
        if saved is None:
            return
        if saved.labels != self.labels:
            raise ValueError(
                f"The checkpoint {checkpoint} was trained on labels {saved.labels}, but this run has "
                f"{self.labels}; resuming would train the guess on other targets."
            )
        self.prompt_template = saved.prompt_template

"""`GTAConfig`: `trl.GRPOConfig` plus the knobs of the GTA loss."""

from dataclasses import dataclass, field

from trl import GRPOConfig

from .losses import CONFLICT_SCOPES, CONFLICT_SIGNALS, CONFLICT_STRATEGIES, SFT_REDUCTIONS
from .reply_format import check_label_set


@dataclass
class GTAConfig(GRPOConfig):
    r"""
    Configuration class for [`GTATrainer`]: every [`trl.GRPOConfig`] parameter, plus the GTA loss
    `L = sft_weight * L_SFT + rl_weight * L_RL` and how the two gradients are combined.

    Parameters:
        sft_weight (`float`, *optional*, defaults to `1.0`):
            λ1, the weight of the supervised cross-entropy on the gold guess. `0` turns GTA into GRPO on the GTA
            format (with `mask_guess_in_rl=False`, the paper's "GTA(RL)" ablation).
        rl_weight (`float`, *optional*, defaults to `1.0`):
            λ2, the weight of the GRPO loss on the think and answer spans.
        conflict_strategy (`str`, *optional*, defaults to `"drop"`):
            What to do when the two gradients conflict (negative cosine): `"drop"` keeps the RL gradient only (the
            paper's rule), `"project"` removes from the SFT gradient its component along the RL gradient
            (PCGrad-style), `"none"` sums them (the cosine is still measured, on logging steps only). When no group
            in the rule's scope has rewards that differ, the RL gradient is only the KL/entropy pull towards the
            reference and never counts as a conflict.
        conflict_signal (`str`, *optional*, defaults to `"rl_loss"`):
            Which RL gradient the cosine is taken with: `"rl_loss"`, the whole RL loss's (policy + KL + entropy
            terms, the paper's L_RL read literally), or `"policy_gradient"`, its policy term alone (the update still
            applies the whole RL gradient). `"policy_gradient"` costs one more backward through the RL graph and one
            more gradient buffer when a KL, entropy or auxiliary term is on; without one the two are the same. The
            default is `"rl_loss"`: over a measured 32-step run at β = 0.01 the two never decided differently
            (docs/concepts.md).
        conflict_scope (`str`, *optional*, defaults to `"step"`):
            Where the rule acts. `"step"` (the paper's rule): once per optimizer step, on the SFT and RL gradients
            accumulated over the accumulation window and averaged over processes, before gradient clipping; costs
            one extra trainable-gradient buffer. `"micro_batch"`: on each micro-batch's gradients, per process, before
            DDP averages the combined gradient. DeepSpeed supports only `"micro_batch"`.
        sft_loss_reduction (`str`, *optional*, defaults to `"sequence_sum"`):
            How L_SFT reduces over guess tokens: `"sequence_sum"` sums each example's token log-likelihoods and
            averages over examples (the paper's L_SFT); `"token_mean"` averages over all guess tokens (a language-
            model loss; about 1/|guess tokens| of the paper's weight).
        mask_guess_in_rl (`bool`, *optional*, defaults to `True`):
            Exclude the guess span of sampled completions from the RL loss.
        share_prompt_prefix (`bool`, *optional*, defaults to `False`):
            Compute the prompt prefix that every row of a batch shares (instructions and label list) once per forward,
            for one row, and let every row attend to its keys and values: in generation, the RL loss and the guess
            loss. Same results up to float rounding, with far fewer tokens when the prompts are long and the texts
            short. One process, no activation checkpointing, transformers generation (not vLLM), text-only models.
        group_by_completion_length (`bool`, *optional*, defaults to `False`):
            Lay out each optimizer step's rollouts so that completions of similar length share a micro-batch (TRL
            splits them at random), and the micro-batches of short completions are computed short. Changes nothing
            without gradient accumulation; with it, leaves the gradient of the losses normalized per sequence or over
            the whole step (`dapo`, `dr_grpo`, `grpo`; `sft_loss_reduction="sequence_sum"`) unchanged, and reweights
            those averaged over each micro-batch (`bnpo`, `"token_mean"`, TRL's entropy bonus) as another random split
            would.
        labels (`list[str]` or `None`, *optional*):
            The label set. `None` takes it from a dataset built by `build_gta_dataset`.
    """

    sft_weight: float = field(
        default=1.0, metadata={"help": "λ1: weight of the supervised cross-entropy on the gold guess span."}
    )
    rl_weight: float = field(default=1.0, metadata={"help": "λ2: weight of the GRPO loss on think and answer spans."})
    conflict_strategy: str = field(
        default="drop",
        metadata={
            "help": "Gradient-conflict rule when cos(∇L_SFT, ∇L_RL) < 0: 'drop' keeps the RL gradient only (paper), "
            "'project' removes the SFT component along the RL gradient (PCGrad), 'none' sums them. Groups whose "
            "rewards are all equal (RL gradient = KL/entropy pull only) never count as a conflict.",
            "choices": list(CONFLICT_STRATEGIES),
        },
    )
    conflict_scope: str = field(
        default="step",
        metadata={
            "help": "Where the conflict rule acts: 'step' once per optimizer step on the accumulated, "
            "process-averaged gradients (paper); 'micro_batch' on each micro-batch's gradients, per process.",
            "choices": list(CONFLICT_SCOPES),
        },
    )
    conflict_signal: str = field(
        default="rl_loss",
        metadata={
            "help": "The RL gradient the conflict cosine is taken with: 'rl_loss' (policy + KL + entropy terms) or "
            "'policy_gradient' (the policy term alone; costs one more RL backward when beta > 0). The update applies "
            "the whole RL gradient either way.",
            "choices": list(CONFLICT_SIGNALS),
        },
    )
    sft_loss_reduction: str = field(
        default="sequence_sum",
        metadata={
            "help": "L_SFT over guess tokens: 'sequence_sum' (paper: sum per example, mean over examples) or "
            "'token_mean' (mean over all guess tokens).",
            "choices": list(SFT_REDUCTIONS),
        },
    )
    mask_guess_in_rl: bool = field(
        default=True, metadata={"help": "Exclude the guess span of sampled completions from the RL loss."}
    )
    share_prompt_prefix: bool = field(
        default=False,
        metadata={
            "help": "Compute the prompt prefix every row shares (instructions, label list) once per forward, in "
            "generation and both losses: same results up to rounding, far fewer tokens for long prompts and short "
            "texts. One process, no activation checkpointing, no vLLM."
        },
    )
    group_by_completion_length: bool = field(
        default=False,
        metadata={
            "help": "With gradient accumulation, put completions of similar length in the same micro-batch (TRL "
            "splits them at random), so that less padding is computed; same gradient for dapo, dr_grpo and grpo."
        },
    )
    labels: list[str] | None = field(
        default=None,
        metadata={"help": "The label set. Default: the label set carried by a dataset built with build_gta_dataset."},
    )

    def __post_init__(self) -> None:
        if self.conflict_strategy not in CONFLICT_STRATEGIES:
            raise ValueError(
                f"conflict_strategy must be one of {CONFLICT_STRATEGIES}, got {self.conflict_strategy!r}."
            )
        if self.conflict_scope not in CONFLICT_SCOPES:
            raise ValueError(f"conflict_scope must be one of {CONFLICT_SCOPES}, got {self.conflict_scope!r}.")
        if self.conflict_signal not in CONFLICT_SIGNALS:
            raise ValueError(f"conflict_signal must be one of {CONFLICT_SIGNALS}, got {self.conflict_signal!r}.")
        if self.sft_loss_reduction not in SFT_REDUCTIONS:
            raise ValueError(f"sft_loss_reduction must be one of {SFT_REDUCTIONS}, got {self.sft_loss_reduction!r}.")
        if self.sft_weight < 0 or self.rl_weight < 0:
            raise ValueError(f"sft_weight and rl_weight must be >= 0, got {self.sft_weight} and {self.rl_weight}.")
        if self.labels is not None:
            self.labels = check_label_set(self.labels)
        if self.ddp_find_unused_parameters is None:
            # the trainer's backward (RL loss or surrogate) reaches every trainable parameter
            self.ddp_find_unused_parameters = False
        super().__post_init__()
        if self.group_by_completion_length and self.steps_per_generation % self.gradient_accumulation_steps:
            raise ValueError(
                f"group_by_completion_length regroups the micro-batches of each optimizer step within one generation: "
                f"steps_per_generation ({self.steps_per_generation}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})."
            )

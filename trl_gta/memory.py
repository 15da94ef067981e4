"""The GPU memory a full fine-tune needs per DDP process, from the parameter count, for `trl-gta train --dry_run`.

Counted, per process: the weights; their gradients; AdamW's two moments (transformers' `Trainer` keeps them in the
parameters' dtype and keeps no float32 master copy: a float32 model trained under `bf16` autocast holds all three in
float32); GTA's extra gradient buffers (step scope: the supervised gradient, plus the policy term's with
`conflict_signal="policy_gradient"` and β > 0; micro-batch scope: both micro-batch gradients); and the reference
model TRL loads when β > 0, in the policy's dtype. Not counted: activations, the CUDA context, allocator slack: the
report says how much of the GPU is left for them. DDP replicates all of this on every GPU; DeepSpeed ZeRO and LoRA
are not estimated.
"""

import os
from dataclasses import dataclass

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Parameter counts of the recipes' models (counted here with torch.device("meta") from each config.json's
# architecture), so that a dry run can estimate memory offline, without the Hub.
KNOWN_PARAMETERS = {
    "Qwen/Qwen2.5-3B-Instruct": 3_085_938_688,
    "Qwen/Qwen3-4B": 4_022_468_096,
    "meta-llama/Llama-3.2-3B-Instruct": 3_212_749_824,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU of what a full fine-tune keeps resident, by part."""

    parameters: int
    value_bytes: int  # bytes per weight, gradient and optimizer value (the model's dtype)
    optimizer_states: int  # values per parameter: 2 for AdamW, 0 for plain SGD
    gta_buffers: int  # extra trainable-gradient buffers
    reference: bool  # a reference model for the KL term

    def parts(self) -> dict[str, int]:
        one = self.parameters * self.value_bytes
        return {
            "weights": one,
            "gradients": one,
            "optimizer states": self.optimizer_states * one,
            "GTA gradient buffers": self.gta_buffers * one,
            "reference model": one if self.reference else 0,
        }

    @property
    def total(self) -> int:
        return sum(self.parts().values())


def parameter_count(model_name_or_path: str) -> int | None:
    """The model's parameter count: from a local folder's `config.json` (built on the meta device, no weights), or
    the table of the recipes' models; None when neither knows it."""
    config_file = os.path.join(model_name_or_path, "config.json")
    if os.path.isfile(config_file):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_name_or_path))
        return sum(p.numel() for p in model.parameters())
    return KNOWN_PARAMETERS.get(model_name_or_path)


def gta_gradient_buffers(method: str, training_args) -> int:
    """How many trainable-gradient buffers GTA keeps beside `p.grad` (0 for GRPO, SFT and `conflict_strategy="none"`,
    which trains on the plain sum outside logging steps)."""
    if method != "gta" or training_args.sft_weight == 0 or training_args.conflict_strategy == "none":
        return 0
    signal = training_args.conflict_signal == "policy_gradient" and training_args.beta != 0
    return (1 if training_args.conflict_scope == "step" else 2) + signal


def estimate_full_finetune(method: str, training_args, model_args, parameters: int) -> MemoryEstimate | None:
    """The estimate for a full fine-tune, or None when the dtype or optimizer is not one it models."""
    value_bytes = DTYPE_BYTES.get(str(model_args.dtype))
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    states = 2 if optim.startswith("adamw") else 0 if optim == "sgd" else None
    if value_bytes is None or states is None:
        return None
    return MemoryEstimate(
        parameters=parameters,
        value_bytes=value_bytes,
        optimizer_states=states,
        gta_buffers=gta_gradient_buffers(method, training_args),
        reference=getattr(training_args, "beta", 0.0) != 0,
    )


def memory_report(
    method: str, training_args, model_args, distributed_type: str | None, gpu_memory_gib: float | None
) -> tuple[list[str], str | None]:
    """The dry run's memory lines, and a refusal (one line naming the fix) when the states alone exceed the GPU.

    Returns:
        `(lines, refusal)`: `refusal` is None when the recipe fits or cannot be estimated (a line says why).
    """
    if getattr(model_args, "use_peft", False) or distributed_type == "DEEPSPEED":
        return ["memory: not estimated (LoRA/QLoRA or DeepSpeed: the estimate covers full fine-tunes under DDP)"], None
    parameters = parameter_count(model_args.model_name_or_path or "")
    estimate = estimate_full_finetune(method, training_args, model_args, parameters) if parameters else None
    if estimate is None:
        reason = "unknown parameter count" if not parameters else f"dtype {model_args.dtype} / optim not modelled"
        return [f"memory: not estimated ({reason})"], None
    lines = [f"memory per GPU (full fine-tune, {parameters / 1e9:.2f}B parameters, {model_args.dtype}):"]
    lines += [f"  {name:<22} {size / GIB:7.1f} GiB" for name, size in estimate.parts().items() if size]
    lines.append(f"  {'total (no activations)':<22} {estimate.total / GIB:7.1f} GiB")
    if gpu_memory_gib is None:
        lines.append("  the recipe names no gpu_memory_gib: fit not checked")
        return lines, None
    left = gpu_memory_gib - estimate.total / GIB
    if left < 0:
        return lines, (
            f"the recipe needs {estimate.total / GIB:.1f} GiB per GPU before activations, more than its "
            f"gpu_memory_gib={gpu_memory_gib:g}: use a larger GPU, LoRA (use_peft), or DeepSpeed ZeRO with "
            "conflict_scope=micro_batch"
        )
    lines.append(f"  fits {gpu_memory_gib:g} GiB, leaving {left:.1f} GiB for activations")
    return lines, None

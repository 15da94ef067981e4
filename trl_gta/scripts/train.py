"""`trl-gta train`: GTA, or a baseline (GRPO, SFT), on a classification dataset, from a recipe and flags.

```bash
trl-gta train --config recipes/Qwen2.5-3B-Instruct/gta/config_sst5.yaml --dry_run
accelerate launch --config_file recipes/accelerate_configs/zero2.yaml -m trl_gta.cli train \\
    --config recipes/Qwen2.5-3B-Instruct/gta/config_sst5.yaml --learning_rate 5e-6
```

The method (`--method`, or the recipe's `method`) decides the config class: `GTAConfig` for gta and grpo,
`trl.SFTConfig` for sft. So parsing has two stages: the script arguments first (from the recipe and the flags), then
all three dataclasses. `--dry_run` checks what can be checked without weights and exits.
"""

import os
from collections.abc import Sequence

from . import UserError, parse_args


def _check(script_args) -> None:
    """What argparse does not check: a recipe's method (its choices apply to flags only), and TRL's dataset
    option that trl-gta's dataset loading does not take (the label set is the whole dataset's)."""
    from ..methods import METHODS

    if script_args.method not in METHODS:
        raise UserError(f"unknown method {script_args.method!r}; expected one of {', '.join(METHODS)}")
    if script_args.dataset_streaming:
        raise UserError("dataset_streaming is not supported: the label set is read from the whole dataset")


def _dry_run(script_args, training_args, model_args) -> None:
    """Check what can be checked without weights; what needs a GPU or the network becomes a warning."""
    import importlib.util

    import torch
    import yaml

    from ..memory import memory_report
    from ..methods import dataset_options
    from ..registry import available_datasets, load_classification_dataset, needs_hub

    warnings = []
    name = script_args.dataset_name
    try:
        if not needs_hub(name):  # read it: a missing column or a bad row shows now
            load_classification_dataset(name, script_args.dataset_train_split, **dataset_options(script_args))
        elif name not in available_datasets():
            warnings.append(f"dataset {name!r} is a Hub id: not checked offline")
    except ValueError as error:
        raise UserError(str(error).splitlines()[0]) from error
    accelerate = {}
    if script_args.accelerate_config:
        if not os.path.isfile(script_args.accelerate_config):
            raise UserError(f"accelerate config not found: {script_args.accelerate_config}")
        with open(script_args.accelerate_config) as f:
            accelerate = yaml.safe_load(f) or {}
    num_processes = int(accelerate.get("num_processes", 1))
    if script_args.method in ("gta", "grpo"):
        steps = training_args.steps_per_generation or training_args.gradient_accumulation_steps
        batch = training_args.per_device_train_batch_size * num_processes * steps
        if batch % training_args.num_generations:
            raise UserError(
                f"generation batch {batch} (per_device_train_batch_size x {num_processes} processes x "
                f"steps_per_generation {steps}) is not divisible by num_generations={training_args.num_generations}"
            )
    lines, refusal = memory_report(
        script_args.method, training_args, model_args, accelerate.get("distributed_type"), script_args.gpu_memory_gib
    )
    print("\n".join(lines))
    if refusal:
        raise UserError(refusal)
    if getattr(model_args, "load_in_4bit", False) and importlib.util.find_spec("bitsandbytes") is None:
        warnings.append("load_in_4bit needs bitsandbytes (pip install 'trl-gta[qlora]'); not installed here")
    if not os.path.isdir(model_args.model_name_or_path or ""):
        warnings.append(f"model {model_args.model_name_or_path!r} is a Hub id: not checked offline")
    if not torch.cuda.is_available():
        warnings.append("no GPU here: bf16 support is not checked, and memory is the estimate above")
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"dry run OK: method={script_args.method}, dataset={script_args.dataset_name}, processes={num_processes}")


def _load_model(model_args, training_args):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from ..prompts import ensure_pad_token

    kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": training_args.local_process_index})
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    except OSError as error:
        raise UserError(
            f"could not load model {model_args.model_name_or_path!r}: {str(error).splitlines()[0]}"
        ) from error
    return model, ensure_pad_token(tokenizer), get_peft_config(model_args)


def main(script_args, training_args, model_args) -> None:
    """Train, evaluate on the held-out split (answer mode, free and labels decoding, when `max_eval_samples` is set)
    and save; every method's checkpoint carries the metadata the classifier reads.

    Args:
        script_args: `trl_gta.methods.ScriptArguments`.
        training_args: `GTAConfig` (gta, grpo) or `trl.SFTConfig` (sft).
        model_args: `trl.ModelConfig`.
    """
    from ..evaluation import evaluate_classifier, write_results
    from ..methods import build_trainer, dataset_options, fair_start_options, prompt_template
    from ..registry import DatasetUnavailableError, load_classification_dataset

    _check(script_args)
    try:  # bad data, labels or lengths: one line before any training, not a traceback
        train_raw = load_classification_dataset(
            script_args.dataset_name,
            script_args.dataset_train_split,
            script_args.max_train_samples,
            training_args.seed,
            **dataset_options(script_args),
        )
        model, tokenizer, peft_config = _load_model(model_args, training_args)
        template = prompt_template(script_args, getattr(training_args, "chat_template_kwargs", None))
        trainer = build_trainer(
            script_args.method,
            model,
            tokenizer,
            train_raw,
            training_args,
            template,
            peft_config,
            script_args.max_prompt_tokens,
            script_args.partial_format_reward,
            **fair_start_options(script_args),
        )
    except (ValueError, DatasetUnavailableError) as error:
        raise UserError(str(error).splitlines()[0]) from error
    trainer.dataset_names = [script_args.dataset_name]
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if trainer.accelerator.is_main_process and script_args.max_eval_samples:
        from ..classifier import GTAClassifier

        test = load_classification_dataset(
            script_args.dataset_name,
            script_args.dataset_test_split,
            script_args.max_eval_samples,
            training_args.seed,
            **dataset_options(script_args),
        )
        saved = trainer.checkpoint_metadata()  # asked and read as the checkpoint will be, whatever the method
        model = trainer.accelerator.unwrap_model(trainer.model)
        classifier = GTAClassifier(
            model,
            tokenizer,
            saved.labels,
            saved.prompt_template,
            script_args.max_prompt_tokens,
            saved.max_completion_length,
        )
        gold = test.features["label"].int2str(test["label"])
        after = {}
        for decoding in ("free", "labels"):  # as `trl-gta eval`: the paper's reading first
            after[decoding], _ = evaluate_classifier(
                classifier, test["text"], gold, "answer", answer_decoding=decoding, progress=True
            )
        split = script_args.dataset_test_split
        trainer.eval_results = {f"{split} / answer ({decoding})": metrics for decoding, metrics in after.items()}
        write_results({"after": after}, training_args.output_dir)
    trainer.save_model(training_args.output_dir)


def _cpu_defaults(argv: list[str]) -> list[str]:
    """`argv` with TRL's slowing GPU defaults turned off where it leaves them unset, said in one line."""
    import sys

    from .cpu import cpu_default_flags, notice

    flags = cpu_default_flags(argv)
    if flags:
        print(f"trl-gta train: {notice(flags)}", file=sys.stderr)
    return flags + argv


def make_parser(prog: str | None = None, method: str = "gta"):
    """The parser of `trl-gta train` for `method`: `ScriptArguments`, the method's config class, `ModelConfig`."""
    from trl import ModelConfig, SFTConfig, TrlParser

    from ..config import GTAConfig
    from ..methods import ScriptArguments

    config_class = SFTConfig if method == "sft" else GTAConfig
    return TrlParser((ScriptArguments, config_class, ModelConfig), prog=prog)


def run(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Parse in two stages (the script arguments decide the config class), then train or dry-run."""
    import sys

    import torch
    from trl import TrlParser

    from ..methods import ScriptArguments

    argv = list(sys.argv[1:] if argv is None else argv)
    # stage 1, the script arguments alone; without help (-h goes on to the full parser) or abbreviations (a config
    # class's flag must never be read as an abbreviated script flag)
    first = TrlParser(ScriptArguments, prog=prog, add_help=False, allow_abbrev=False)
    script_args, _ = parse_args(first, argv, return_remaining_strings=True)
    _check(script_args)
    if script_args.dry_run and not torch.cuda.is_available():
        argv += ["--bf16", "false", "--use_cpu", "true"]  # validate the rest of a GPU recipe on a CPU machine
    elif not torch.cuda.is_available():
        argv = _cpu_defaults(argv)
    script_args, training_args, model_args = parse_args(make_parser(prog, script_args.method), argv)
    if script_args.dry_run:
        _dry_run(script_args, training_args, model_args)
    else:
        main(script_args, training_args, model_args)


if __name__ == "__main__":
    run()

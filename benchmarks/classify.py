#!/usr/bin/env python
"""Throughput of the classifier's modes against the baseline a user would write, and adaptive mode's threshold.

- baseline: `model.generate` on the whole left-padded prompts (the classifier's prompts, tokenized the same way),
  greedy, `--batch_size` texts at a time in input order, until every row of the batch has ended (end of sequence) or
  `--max_new_tokens`; the label is the reply's `<answer>`, read as answer mode reads it;
- answer, guess, adaptive: `GTAClassifier.predict` at the same batch size. Answer mode (free decoding) decodes over
  the cached shared prompt prefix and stops each text at `</answer>`; its labels are compared with the baseline's,
  text by text. Answer mode with labels decoding stops each text where `<answer>` opens and scores every label in
  the answer slot; its accuracy and weighted F1 are compared with free decoding's on the same texts.
- adaptive: the threshold is picked on a labelled dev split (the cheapest threshold keeping `--keep` of answer-mode
  dev accuracy), then applied to the test texts. The accuracy/tokens curve over thresholds is saved as a PNG.

Throughput is texts per second, the median of `--repeats` rounds; each round times every configuration once, in
turn, so the machine's slow spells hit all of them alike. Targets: answer >= 2x the baseline at identical
predictions, answer with labels decoding >= 1.8x, guess >= 15x the baseline. Writes `classify.json` (every metric)
and `classify.md` (the table the docs include) to `--out`; the last three lines printed are `answer_speedup=`,
`answer_labels_speedup=` and `guess_speedup=`.

    python benchmarks/classify.py --model outputs/quickstart --samples 96 | tee benchmarks/results/classify.txt
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trl_gta import GTAClassifier  # noqa: E402
from trl_gta.classifier import GTAPrediction  # noqa: E402
from trl_gta.evaluation import pick_threshold, prediction_metrics, threshold_curve  # noqa: E402
from trl_gta.prompts import fitted_prompts, tokenize_prompt  # noqa: E402
from trl_gta.registry import load_classification_dataset  # noqa: E402
from trl_gta.reply_format import extract_block, match_label  # noqa: E402


@torch.no_grad()
def generate_on_full_prompts(
    classifier: GTAClassifier, texts: list[str], batch_size: int, max_new_tokens: int
) -> list[GTAPrediction]:
    """The baseline: what a user would write with `model.generate`, the classifier's prompts and its reply parsing."""
    tokenizer, model, template = classifier.tokenizer, classifier.model, classifier.template
    prompts, truncated = fitted_prompts(template, texts, classifier.labels, tokenizer, classifier.max_prompt_tokens)
    prompt_ids = [tokenize_prompt(tokenizer, prompt, **template.chat_template_kwargs) for prompt in prompts]
    predictions = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.pad(
            {"input_ids": prompt_ids[start : start + batch_size]}, padding_side="left", return_tensors="pt"
        ).to(model.device)
        output = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            count = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            reply = template.response_prefix + tokenizer.decode(row[:count], skip_special_tokens=True)
            answer = extract_block(reply, "answer", unique=True)
            predictions.append(
                GTAPrediction(
                    label=match_label(answer, classifier.labels),
                    guess=extract_block(reply, "guess"),
                    think=extract_block(reply, "think"),
                    answer=answer,
                    generated_tokens=count,
                    raw_output=reply,
                )
            )
    for prediction, cut in zip(predictions, truncated, strict=True):
        prediction.text_truncated = cut
    return predictions


def timed_rounds(
    runs: dict[str, Callable[[], list[GTAPrediction]]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[GTAPrediction]]]:
    """Each run's seconds over `repeats` rounds, every round timing each run once in turn (so a slow spell of the
    machine hits them alike), and each run's predictions (greedy: the same every round)."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    predictions: dict[str, list[GTAPrediction]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            predictions[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return seconds, predictions


def closed_reply(reply: str) -> str:
    """A reply up to and including its first `</answer>` (all of it when there is none)."""
    end = reply.find("</answer>")
    return reply if end < 0 else reply[: end + len("</answer>")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/quickstart")
    parser.add_argument("--dataset", default="hwu64-scenario")
    parser.add_argument("--samples", type=int, default=96, help="test texts (and as many dev texts)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--keep", type=float, default=0.99, help="share of answer-mode dev accuracy to keep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--docs_img", default="docs/img", help="where the documentation site's copy of the plot goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classifier = GTAClassifier.from_pretrained(args.model, max_prompt_tokens=512)
    batch = args.batch_size
    # free decoding unless said: the baseline's reading, and the adaptive curve's (threshold_curve)
    kwargs = dict(batch_size=batch, guess_batch_size=batch, max_new_tokens=args.max_new_tokens, answer_decoding="free")

    def split(name: str):
        data = load_classification_dataset(args.dataset, name, args.samples, seed=0)
        return data["text"], data.features["label"].int2str(data["label"])

    dev_texts, dev_gold = split("dev")
    dev_curve = threshold_curve(
        classifier.predict(dev_texts, mode="guess", **kwargs),
        classifier.predict(dev_texts, mode="answer", **kwargs),
        dev_gold,
    )
    threshold = pick_threshold(dev_curve, target_accuracy=args.keep * dev_curve[-1]["accuracy"])

    texts, gold = split("test")
    runs = {  # name -> what it runs
        "baseline": lambda: generate_on_full_prompts(classifier, texts, batch, args.max_new_tokens),
        "answer": lambda: classifier.predict(texts, mode="answer", **kwargs),
        "answer_labels": lambda: classifier.predict(texts, mode="answer", **{**kwargs, "answer_decoding": "labels"}),
        "guess": lambda: classifier.predict(texts, mode="guess", **kwargs),
        "adaptive": lambda: classifier.predict(texts, mode="adaptive", confidence_threshold=threshold, **kwargs),
    }
    seconds, predictions = timed_rounds(runs, args.repeats)
    results = {}
    for name in runs:
        metrics = prediction_metrics(predictions[name], gold, classifier.labels, classifier.template.tags)
        metrics["seconds"] = seconds[name]
        metrics["texts_per_second"] = len(texts) / statistics.median(seconds[name])
        results[name] = metrics
    baseline, answer, answer_labels, guess, adaptive = (results[name] for name in runs)
    for name in runs:
        results[name]["speedup"] = results[name]["texts_per_second"] / baseline["texts_per_second"]
    pairs = list(zip(predictions["baseline"], predictions["answer"], strict=True))
    mismatches = [
        {"text": text, "baseline": b.label, "answer": a.label}
        for text, (b, a) in zip(texts, pairs, strict=True)
        if b.label != a.label
    ]
    same_labels = len(texts) - len(mismatches)
    same_replies = sum(closed_reply(b.raw_output) == a.raw_output for b, a in pairs)

    test_curve = threshold_curve(predictions["guess"], predictions["answer"], gold)
    print(f"{'threshold':>10} {'accuracy':>9} {'tokens':>8} {'thought':>8}   (test curve, every tenth point)")
    step = max(len(test_curve) // 10, 1)
    for point in [p for i, p in enumerate(test_curve) if i % step == 0 or i == len(test_curve) - 1]:
        print(
            f"{point['threshold']:>10.3f} {point['accuracy']:>9.3f} {point['mean_generated_tokens']:>8.1f} "
            f"{point['thought_rate']:>8.2f}"
        )
    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["mean_generated_tokens"] for p in test_curve], [p["accuracy"] for p in test_curve], marker=".")
    ax.axhline(answer["accuracy"], linestyle="--", color="gray", label="answer mode")
    ax.scatter(
        [adaptive["mean_generated_tokens"]],
        [adaptive["accuracy"]],
        color="red",
        zorder=3,
        label=f"adaptive, threshold {threshold:.3f} (from dev)",
    )
    ax.set(xlabel="mean generated tokens per text", ylabel="accuracy", title=f"{args.dataset}: adaptive mode")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = os.path.join(args.out, "adaptive_curve.png")
    fig.savefig(png, dpi=100)
    os.makedirs(args.docs_img, exist_ok=True)
    shutil.copyfile(png, os.path.join(args.docs_img, os.path.basename(png)))

    setup = {
        "model": args.model,
        "dataset": args.dataset,
        "test_texts": len(texts),
        "batch_size": batch,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "repeats": args.repeats,
        "date": datetime.date.today().isoformat(),
    }
    summary = {
        "answer_labels_equal_to_baseline": same_labels,
        "answer_replies_equal_to_baseline_up_to_answer_tag": same_replies,
        "label_mismatches": mismatches,
        "threshold": threshold,
    }
    with open(os.path.join(args.out, "classify.json"), "w") as f:
        json.dump({"setup": setup, **summary, **results, "test_curve": test_curve}, f, indent=2)
    descriptions = {
        "baseline": "baseline: `model.generate`, whole prompts",
        "answer": "answer mode (free decoding)",
        "answer_labels": "answer mode, labels decoding",
        "guess": "guess mode",
        "adaptive": f"adaptive mode, threshold {threshold:.3f} (from dev)",
    }
    rows = [
        "| configuration | texts / s | vs baseline | accuracy | weighted F1 | answers outside the set "
        "| generated tokens / text | thought |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, metrics in results.items():
        outside = "-" if metrics["invalid_label_rate"] is None else f"{metrics['invalid_label_rate']:.3f}"
        rows.append(
            f"| {descriptions[name]} | {metrics['texts_per_second']:.2f} | {metrics['speedup']:.1f}x | "
            f"{metrics['accuracy']:.3f} | {metrics['weighted_f1']:.3f} | {outside} "
            f"| {metrics['mean_generated_tokens']:.1f} | {metrics['thought_rate']:.2f} |"
        )
    rows.append("")
    rows.append(
        f"{len(texts)} `{args.dataset}` test texts, batch size {batch}, at most {args.max_new_tokens} new tokens, "
        f"{args.threads} CPU threads, median of {args.repeats} interleaved rounds, {setup['date']}. "
        f"Answer-mode labels equal to the baseline's: {same_labels}/{len(texts)}; replies equal up to `</answer>`: "
        f"{same_replies}/{len(texts)}."
    )
    with open(os.path.join(args.out, "classify.md"), "w") as f:
        f.write("\n".join(rows) + "\n")

    for name, metrics in results.items():
        print(
            f"{name:>13}: accuracy {metrics['accuracy']:.3f}, weighted F1 {metrics['weighted_f1']:.3f}, "
            f"{metrics['texts_per_second']:.2f} texts/s "
            f"({metrics['speedup']:.2f}x baseline), {metrics['mean_generated_tokens']:.1f} generated tokens/text"
        )
    for mismatch in mismatches:
        print(f"label mismatch: {mismatch}")
    print(f"wrote {png}, classify.json and classify.md")
    print(f"answer_labels_equal_to_baseline={same_labels}/{len(texts)}")
    print(f"adaptive_accuracy_kept={adaptive['accuracy'] / max(answer['accuracy'], 1e-9):.3f}")
    print(f"adaptive_token_share={adaptive['mean_generated_tokens'] / max(answer['mean_generated_tokens'], 1e-9):.3f}")
    print(f"answer_speedup={answer['speedup']:.2f}")
    print(f"answer_labels_speedup={answer_labels['speedup']:.2f}")
    print(f"guess_speedup={guess['speedup']:.1f}")


if __name__ == "__main__":
    main()

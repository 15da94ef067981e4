#!/usr/bin/env python
"""Speed and cost of the classifier's modes on a GTA-trained model, over the same test texts.

- guess vs answer: examples per second, the median of `--repeats` rounds (each round times every configuration
  once, so the machine's slow spells hit all of them alike). Answer mode is timed at the same batch size as guess
  mode and again with all texts in one batch (its fastest here), and the speedup is given against both
  (target: guess >= 10x answer);
- adaptive: the threshold is picked on a labelled dev split (the cheapest threshold keeping >= 99% of answer-mode
  dev accuracy), then applied on the test texts (target: >= 99% of answer accuracy with <= 30% of its generated
  tokens). The accuracy/tokens curve over thresholds is printed and saved as a PNG.

    python benchmarks/classify.py --model outputs/quickstart --samples 96
"""

import argparse
import json
import os
import shutil
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trl_gta import GTAClassifier  # noqa: E402
from trl_gta.evaluation import evaluate_classifier, pick_threshold, threshold_curve  # noqa: E402
from trl_gta.registry import load_classification_dataset  # noqa: E402


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
    kwargs = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)

    def split(name: str):
        data = load_classification_dataset(args.dataset, name, args.samples, seed=0)
        return data["text"], data.features["label"].int2str(data["label"])

    dev_texts, dev_gold = split("dev")
    dev_guess = classifier.predict(dev_texts, mode="guess", **kwargs)
    dev_answer = classifier.predict(dev_texts, mode="answer", **kwargs)
    dev_curve = threshold_curve(dev_guess, dev_answer, dev_gold)
    dev_answer_accuracy = dev_curve[-1]["accuracy"]
    threshold = pick_threshold(dev_curve, target_accuracy=args.keep * dev_answer_accuracy)

    texts, gold = split("test")

    configurations = {  # name -> (mode, predict kwargs)
        "answer": ("answer", kwargs),
        "answer_one_batch": ("answer", {**kwargs, "batch_size": len(texts)}),
        "guess": ("guess", {**kwargs, "guess_batch_size": args.batch_size}),
        "adaptive": ("adaptive", {**kwargs, "confidence_threshold": threshold}),
    }
    rounds = [
        {
            name: evaluate_classifier(classifier, texts, gold, mode, **extra)
            for name, (mode, extra) in configurations.items()
        }
        for _ in range(args.repeats)
    ]
    results = {}
    for name in configurations:  # metrics of the first round (predictions are deterministic), median throughput
        metrics = rounds[0][name][0]
        metrics["examples_per_second"] = statistics.median(r[name][0]["examples_per_second"] for r in rounds)
        results[name] = metrics
    answer, guess, adaptive = results["answer"], results["guess"], results["adaptive"]
    answer_predictions, guess_predictions = rounds[0]["answer"][1], rounds[0]["guess"][1]
    test_curve = threshold_curve(guess_predictions, answer_predictions, gold)

    print(f"{'threshold':>10} {'accuracy':>9} {'tokens':>8} {'thought':>8}   (test curve)")
    for point in test_curve:
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

    results = {"threshold": threshold, **results, "test_curve": test_curve}
    with open(os.path.join(args.out, "classify.json"), "w") as f:
        json.dump(results, f, indent=2)
    speedup = guess["examples_per_second"] / answer["examples_per_second"]
    speedup_one_batch = guess["examples_per_second"] / results["answer_one_batch"]["examples_per_second"]
    accuracy_kept = adaptive["accuracy"] / answer["accuracy"] if answer["accuracy"] else float("nan")
    token_share = adaptive["mean_generated_tokens"] / max(answer["mean_generated_tokens"], 1e-9)
    for name in configurations:
        metrics = results[name]
        print(
            f"{name:>16}: accuracy {metrics['accuracy']:.3f}, {metrics['examples_per_second']:.2f} examples/s, "
            f"{metrics['mean_generated_tokens']:.1f} generated tokens/text"
        )
    print(f"wrote {png}")
    print(f"guess_speedup={speedup:.1f}  (answer at batch size {args.batch_size}, like guess)")
    print(f"guess_speedup_vs_one_batch={speedup_one_batch:.1f}  (answer with all {len(texts)} texts in one batch)")
    print(f"adaptive_accuracy_kept={accuracy_kept:.3f}")
    print(f"adaptive_token_share={token_share:.3f}")


if __name__ == "__main__":
    main()

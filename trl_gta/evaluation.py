"""Evaluate a GTA classifier the way the paper does (weighted F1) and more, with scikit-learn metrics.

(`evaluate` loads its metrics from the Hub at run time, which fails offline.)
"""

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from .checkpoint import library_versions
from .classifier import GTAClassifier, GTAPrediction
from .reply_format import GTA_TAGS, is_well_formed, match_label, normalize_label

INVALID = "<invalid>"


def prediction_metrics(
    predictions: Sequence[GTAPrediction],
    gold: Sequence[str],
    labels: Sequence[str],
    tags: tuple[str, ...] = GTA_TAGS,
) -> dict:
    """Metrics of predictions against gold labels. A None label (no valid answer) counts as wrong; the format rate
    is over generated replies, checked against `tags`."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = list(labels)
    predicted = [p.label if p.label is not None else INVALID for p in predictions]
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    generated = [p for p in predictions if p.raw_output is not None]
    guessed = [(p, g) for p, g in zip(predictions, gold, strict=True) if p.guess is not None]
    transitions: Counter = Counter()
    for p, g in zip(predictions, gold, strict=True):
        if p.raw_output is not None and p.guess is not None:
            guess_ok = normalize_label(p.guess) == normalize_label(g)
            transitions[f"{'right' if guess_ok else 'wrong'}->{'right' if p.label == g else 'wrong'}"] += 1
    return {
        "num_examples": len(gold),
        "accuracy": accuracy_score(gold, predicted),
        "weighted_f1": f1_score(gold, predicted, labels=labels, average="weighted", zero_division=0),
        "macro_f1": f1_score(gold, predicted, labels=labels, average="macro", zero_division=0),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "format_rate": (
            sum(is_well_formed(p.raw_output, tags) for p in generated) / len(generated) if generated else None
        ),
        "invalid_label_rate": (
            sum(p.answer is not None and match_label(p.answer, labels) is None for p in generated) / len(generated)
            if generated
            else None
        ),
        "no_label_rate": sum(p.label is None for p in predictions) / max(len(predictions), 1),
        "guess_accuracy": (
            sum(normalize_label(p.guess) == normalize_label(g) for p, g in guessed) / len(guessed) if guessed else None
        ),
        "guess_to_answer": {
            k: transitions.get(k, 0) for k in ("right->right", "wrong->right", "right->wrong", "wrong->wrong")
        },
        "thought_rate": len(generated) / max(len(predictions), 1),
        "mean_generated_tokens": sum(p.generated_tokens for p in predictions) / max(len(predictions), 1),
        "truncated_texts": sum(p.text_truncated for p in predictions),
    }


def evaluate_classifier(
    classifier: GTAClassifier,
    texts: Sequence[str],
    gold: Sequence[str],
    mode: str = "answer",
    seed: int = 0,
    answer_decoding: str = "labels",
    **predict_kwargs: Any,
) -> tuple[dict, list[GTAPrediction]]:
    """Classify `texts` and measure the predictions with scikit-learn.

    Args:
        classifier: The classifier.
        texts: The texts.
        gold: Their gold labels.
        mode: `"answer"`, `"guess"` or `"adaptive"` (see `GTAClassifier.predict`).
        seed: Seeds torch first, so sampled generation is reproducible.
        answer_decoding: `"labels"` or `"free"` (see `GTAClassifier.predict`); recorded in the metrics as
            `answer_decoding` (None in guess mode, which decodes nothing).
        **predict_kwargs: Passed to `GTAClassifier.predict`.

    Returns:
        The metrics (accuracy, weighted and macro F1 (the paper reports weighted F1), per-class scores, format rate,
        guess accuracy, generated tokens, throughput, the answer decoding, ...) and the predictions.

    Example:
        ```python
        metrics, _ = evaluate_classifier(classifier, test["text"], gold, mode="guess")
        metrics["weighted_f1"]
        ```
    """
    import torch

    torch.manual_seed(seed)
    start = time.perf_counter()
    predictions = classifier.predict(texts, mode=mode, answer_decoding=answer_decoding, **predict_kwargs)
    elapsed = time.perf_counter() - start
    metrics = prediction_metrics(predictions, gold, classifier.labels, classifier.template.tags)
    metrics.update(
        mode=mode,
        answer_decoding=None if mode == "guess" else answer_decoding,
        seed=seed,
        seconds=elapsed,
        examples_per_second=len(texts) / max(elapsed, 1e-9),
    )
    return metrics, predictions


def save_confusion_matrix(
    gold: Sequence[str], predictions: Sequence[GTAPrediction], labels: Sequence[str], path: str, title: str = ""
) -> None:
    """A confusion-matrix PNG; predictions without a valid label get their own column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    predicted = [p.label if p.label is not None else INVALID for p in predictions]
    display_labels = [*labels, INVALID] if INVALID in predicted else list(labels)
    size = max(6, 0.45 * len(display_labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        gold, predicted, labels=display_labels, ax=ax, xticks_rotation="vertical", colorbar=False
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(results: dict, output_dir: str, name: str = "eval_results.json") -> str:
    """Write JSON atomically (temporary file, then rename), so a crash never leaves half a results file."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path + ".tmp", "w") as f:
        json.dump({**results, "versions": library_versions()}, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


TABLE_KEYS = (
    "accuracy",
    "weighted_f1",
    "macro_f1",
    "format_rate",
    "guess_accuracy",
    "mean_generated_tokens",
    "examples_per_second",
)
"""The metrics a printed table shows."""


def format_columns(columns: dict[str, dict], keys: Sequence[str] = (*TABLE_KEYS[:4], "invalid_label_rate")) -> str:
    """A plain-text table, one column per named metrics dict, one row per metric."""
    width = max(len(key) for key in keys) + 2
    cells = max(len(name) for name in columns) + 2
    lines = [" " * width + "".join(f"{name:>{cells}}" for name in columns)]
    for key in keys:
        values = [metrics.get(key) for metrics in columns.values()]
        lines.append(
            f"{key:<{width}}" + "".join(f"{'-':>{cells}}" if v is None else f"{v:>{cells}.3f}" for v in values)
        )
    return "\n".join(lines)


def format_table(rows: dict[str, dict], keys: Sequence[str] = TABLE_KEYS) -> str:
    """A plain-text table, one row per named metrics dict."""
    width = max(len(name) for name in rows) + 2
    header = "".join(f"{k:>22}" for k in keys)
    lines = [" " * width + header]
    for name, metrics in rows.items():
        cells = []
        for key in keys:
            value = metrics.get(key)
            cells.append(f"{'-':>22}" if value is None else f"{value:>22.3f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def evaluate_in_training(
    classifier: GTAClassifier, texts: Sequence[str], gold: Sequence[str], mode: str = "answer", **predict_kwargs: Any
) -> dict:
    """`evaluate_classifier` on a model being trained: training's random stream and train mode are left as they were.

    (`evaluate_classifier` seeds torch, and `predict` puts the model in eval mode.)
    """
    import torch

    was_training = classifier.model.training
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        metrics, _ = evaluate_classifier(classifier, texts, gold, mode, **predict_kwargs)
    classifier.model.train(was_training)
    return metrics


class GTAEvalCallback(TrainerCallback):
    """Periodic held-out evaluation during `GTATrainer` training, logged like its other metrics (`gta_eval/...`).

    `trainer.add_callback(GTAEvalCallback(trainer, texts, labels, every_n_steps=50))`: it classifies with the model
    being trained and the trainer's tokenizer, label set and prompt template.
    """

    def __init__(
        self,
        trainer,
        texts: Sequence[str],
        gold: Sequence[str],
        every_n_steps: int = 50,
        mode: str = "answer",
        **predict_kwargs: Any,
    ) -> None:
        self.trainer, self.texts, self.gold, self.every = trainer, list(texts), list(gold), every_n_steps
        self.mode, self.predict_kwargs = mode, predict_kwargs

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every:
            return
        import torch

        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        classifier = GTAClassifier(
            model,
            trainer._tokenizer,
            trainer.labels,
            trainer.prompt_template,
            None,
            trainer.args.max_completion_length,
        )
        was_training = model.training
        # evaluate_classifier seeds torch: training's sampling must go on as if no evaluation had happened
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            metrics, _ = evaluate_classifier(classifier, self.texts, self.gold, self.mode, **self.predict_kwargs)
        model.train(was_training)
        keys = ("accuracy", "weighted_f1", "format_rate", "guess_accuracy", "mean_generated_tokens")
        trainer.log({f"gta_eval/{k}": metrics[k] for k in keys if metrics[k] is not None})


def threshold_curve(
    guess_predictions: Sequence[GTAPrediction],
    answer_predictions: Sequence[GTAPrediction],
    gold: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> list[dict[str, float]]:
    """Accuracy and generated tokens of adaptive mode at each threshold, from one guess run and one answer run.

    Adaptive mode keeps the guess when its top probability is at least the threshold, else takes the answer
    (falling back to the guess when the answer is invalid): with greedy decoding this is exactly what
    `predict(mode="adaptive")` returns, without re-running the model per threshold.
    """
    confidences = [max(p.guess_probs.values()) for p in guess_predictions]
    if thresholds is None:
        thresholds = sorted({0.0, *confidences, 1.01})
    curve = []
    for threshold in thresholds:
        correct = tokens = thought = 0
        for guess, answer, confidence, label in zip(
            guess_predictions, answer_predictions, confidences, gold, strict=True
        ):
            if confidence >= threshold:
                correct += guess.label == label
            else:
                thought += 1
                tokens += answer.generated_tokens
                correct += (answer.label if answer.label is not None else guess.label) == label
        n = max(len(gold), 1)
        curve.append(
            {
                "threshold": threshold,
                "accuracy": correct / n,
                "mean_generated_tokens": tokens / n,
                "thought_rate": thought / n,
            }
        )
    return curve


def pick_threshold(
    curve: Sequence[dict[str, float]], target_accuracy: float | None = None, token_budget: float | None = None
) -> float:
    """The cheapest threshold reaching `target_accuracy`, or the most accurate within `token_budget` mean tokens."""
    if (target_accuracy is None) == (token_budget is None):
        raise ValueError("Give exactly one of target_accuracy or token_budget.")
    if target_accuracy is not None:
        reaching = [point for point in curve if point["accuracy"] >= target_accuracy]
        if not reaching:
            raise ValueError(
                f"No threshold reaches accuracy {target_accuracy}; "
                f"the best is {max(p['accuracy'] for p in curve):.3f}."
            )
        return min(reaching, key=lambda p: (p["mean_generated_tokens"], p["threshold"]))["threshold"]
    within = [point for point in curve if point["mean_generated_tokens"] <= token_budget]
    if not within:
        raise ValueError(f"No threshold stays within {token_budget} mean generated tokens.")
    return max(within, key=lambda p: (p["accuracy"], -p["mean_generated_tokens"]))["threshold"]


def calibrate_threshold(
    classifier: GTAClassifier,
    texts: Sequence[str],
    gold: Sequence[str],
    target_accuracy: float | None = None,
    token_budget: float | None = None,
    **predict_kwargs: Any,
) -> tuple[float, list[dict[str, float]]]:
    """Pick `confidence_threshold` on a labelled dev split: one guess run, one answer run, then the curve."""
    guesses = classifier.predict(texts, mode="guess", **predict_kwargs)
    answers = classifier.predict(texts, mode="answer", **predict_kwargs)
    curve = threshold_curve(guesses, answers, gold)
    return pick_threshold(curve, target_accuracy, token_budget), curve

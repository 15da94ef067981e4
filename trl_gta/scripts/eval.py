"""`trl-gta eval`: evaluate a checkpoint on a labelled dataset; writes `eval_results.json` and confusion matrices.

```bash
trl-gta eval --model outputs/quickstart --dataset hwu64-scenario --mode guess
trl-gta eval --config eval.yaml --max_samples 200
trl-gta eval --model out --dataset reviews.csv --split train --text_column review --label_column rating \\
    --dataset_label_names bad ok good
```
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..reply_format import CLASSIFY_MODES
from . import UserError, parse_args


@dataclass
class EvalArguments:
    """Arguments of `trl-gta eval`."""

    model: str = field(metadata={"help": "Checkpoint folder of trl-gta train (or Hub id, when the Hub is reachable)."})
    dataset: str = field(
        metadata={
            "help": "A registered dataset name, a local folder or .jsonl/.csv/.parquet file, or a Hub dataset id."
        }
    )
    split: str = field(default="test", metadata={"help": "The split (dev and validation name the same one)."})
    dataset_config: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    text_column: str | None = field(
        default=None, metadata={"help": "Column of the texts (default: the registered dataset's, else text)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Column of the labels (default: the registered dataset's, else label)."}
    )
    dataset_label_names: list[str] | None = field(
        default=None, metadata={"help": "The label set in id order (names integer labels; default as for train)."}
    )
    mode: str = field(default="answer", metadata={"help": "Classifier mode.", "choices": list(CLASSIFY_MODES)})
    max_samples: int | None = field(default=None, metadata={"help": "Seeded subsample of the split."})
    output_dir: str | None = field(default=None, metadata={"help": "Where results go (default: the model folder)."})
    batch_size: int = field(default=16, metadata={"help": "Texts decoded, or scored in guess mode, at a time."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Reply budget (default: the checkpoint's max_completion_length)."}
    )
    confidence_threshold: float = field(default=0.9, metadata={"help": "Adaptive mode: think below this."})
    max_prompt_tokens: int = field(default=512, metadata={"help": "Texts are cut so each prompt fits."})
    seed: int = field(default=0, metadata={"help": "Subsample seed."})

    def __post_init__(self) -> None:
        if self.mode not in CLASSIFY_MODES:
            raise ValueError(f"mode must be one of {', '.join(CLASSIFY_MODES)}, got {self.mode!r}")


def main(script_args: EvalArguments) -> None:
    """Classify the split, measure, print a table and write `eval_results.json` and a confusion matrix per run.

    Answer and adaptive modes run twice on the same texts, free decoding first (the paper's accuracy: an answer
    outside the label set is wrong), then labels decoding (every label scored in the answer slot): a column each.
    """
    from ..classifier import GTAClassifier
    from ..evaluation import evaluate_classifier, format_columns, save_confusion_matrix, write_results
    from ..registry import load_classification_dataset

    args = script_args
    try:
        test = load_classification_dataset(
            args.dataset,
            args.split,
            args.max_samples,
            args.seed,
            config=args.dataset_config,
            text_column=args.text_column,
            label_column=args.label_column,
            label_names=args.dataset_label_names,
        )
    except (ValueError, RuntimeError) as error:
        raise UserError(str(error)) from error
    try:
        classifier = GTAClassifier.from_pretrained(args.model, max_prompt_tokens=args.max_prompt_tokens)
    except (OSError, ValueError) as error:
        raise UserError(str(error).splitlines()[0]) from error
    gold = test.features["label"].int2str(test["label"])
    output_dir = args.output_dir or args.model
    os.makedirs(output_dir, exist_ok=True)
    runs = {}
    for decoding in (None,) if args.mode == "guess" else ("free", "labels"):
        name = args.mode if decoding is None else f"{args.mode} ({decoding})"
        metrics, predictions = evaluate_classifier(
            classifier,
            test["text"],
            gold,
            args.mode,
            seed=args.seed,
            answer_decoding=decoding or "labels",
            batch_size=args.batch_size,
            guess_batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            confidence_threshold=args.confidence_threshold,
            progress=True,
        )
        runs[name] = metrics
        save_confusion_matrix(
            gold,
            predictions,
            classifier.labels,
            os.path.join(output_dir, f"confusion_matrix{'' if decoding is None else '_' + decoding}.png"),
            title=f"{args.dataset} {args.split} ({name})",
        )
    results = {"model": args.model, "dataset": args.dataset, "split": args.split, "mode": args.mode, "runs": runs}
    path = write_results(results, output_dir)
    print(format_columns(runs))
    print(f"wrote {path} and {'one confusion matrix' if len(runs) == 1 else 'a confusion matrix per decoding'}")


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser(EvalArguments, prog=prog)


def run(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    main(*parse_args(make_parser(prog), argv))


if __name__ == "__main__":
    run()

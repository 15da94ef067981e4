# /// script
# dependencies = [
#     "trl-gta",
# ]
# ///
"""Label the texts of a file with a trained GTA checkpoint, in any of the three modes, on one or many processes.

`answer` decodes the whole reply, `guess` reads the guess distribution without decoding, `adaptive` thinks only for
texts whose top guess is below a confidence threshold. For adaptive mode without `--confidence_threshold`, the
threshold is picked on a labelled dataset (`--calibration_dataset`, any name `load_classification_dataset` takes):
the cheapest one keeping `--keep` of answer-mode accuracy there. The output is `predict_file`'s: JSONL, one line per
text in input order, resumable; under `accelerate launch` each process labels a share of the texts.

Usage:

```bash
python examples/scripts/classify.py --model gta-out --input texts.txt --output predictions.jsonl --mode guess

python examples/scripts/classify.py --model gta-out --input tickets.csv --text_field body --output out.jsonl \\
    --mode adaptive --calibration_dataset labelled.csv --calibration_split train

accelerate launch --num_processes 8 examples/scripts/classify.py --model gta-out --input texts.txt \\
    --output predictions.jsonl --mode answer
```
"""

from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from trl import TrlParser

from trl_gta import GTAClassifier, load_classification_dataset, predict_file
from trl_gta.evaluation import pick_threshold, threshold_curve


@dataclass
class ClassifyArguments:
    model: str = field(metadata={"help": "A trained GTA checkpoint folder."})
    input: str = field(metadata={"help": "JSONL, CSV or text file (one text per line) of texts to label."})
    output: str = field(metadata={"help": "JSONL output, one line per text in input order."})
    mode: str = field(
        default="adaptive", metadata={"help": "answer, guess or adaptive.", "choices": ["answer", "guess", "adaptive"]}
    )
    text_field: str = field(default="text", metadata={"help": "JSONL field or CSV column holding the text."})
    confidence_threshold: float | None = field(
        default=None, metadata={"help": "Adaptive mode: think below this (default: picked on the calibration data)."}
    )
    calibration_dataset: str = field(
        default="hwu64-scenario", metadata={"help": "Labelled data to pick the adaptive threshold on."}
    )
    calibration_split: str = field(default="validation", metadata={"help": "Its split."})
    calibration_text_column: str | None = field(default=None, metadata={"help": "Its text column."})
    calibration_label_column: str | None = field(default=None, metadata={"help": "Its label column."})
    calibration_label_names: list[str] | None = field(
        default=None, metadata={"help": "Its label set in id order (for integer labels)."}
    )
    calibration_samples: int = field(default=200, metadata={"help": "Texts of it used."})
    keep: float = field(default=0.99, metadata={"help": "Share of answer-mode accuracy the threshold keeps."})
    batch_size: int = field(default=16, metadata={"help": "Texts decoded, or scored in guess mode, at a time."})


def calibrated_threshold(args: ClassifyArguments) -> float:
    """The cheapest adaptive threshold keeping `args.keep` of answer-mode accuracy on the calibration data."""
    classifier = GTAClassifier.from_pretrained(args.model)
    data = load_classification_dataset(
        args.calibration_dataset,
        args.calibration_split,
        args.calibration_samples,
        text_column=args.calibration_text_column,
        label_column=args.calibration_label_column,
        label_names=args.calibration_label_names,
    )
    gold = data.features["label"].int2str(data["label"])
    kwargs = {"batch_size": args.batch_size, "guess_batch_size": args.batch_size}
    guesses = classifier.predict(data["text"], mode="guess", **kwargs)
    answers = classifier.predict(data["text"], mode="answer", **kwargs)
    curve = threshold_curve(guesses, answers, gold)  # its last point thinks for every text: answer mode
    return pick_threshold(curve, target_accuracy=args.keep * curve[-1]["accuracy"])


def main(args: ClassifyArguments) -> None:
    # one process, or each of those accelerate launch started (on a machine without GPUs they talk over gloo)
    state = PartialState(cpu=not torch.accelerator.is_available())
    threshold = args.confidence_threshold
    if args.mode == "adaptive" and threshold is None:
        picked = [calibrated_threshold(args) if state.is_main_process else None]
        threshold = broadcast_object_list(picked)[0]  # every process labels with the same threshold
        if state.is_main_process:
            print(
                f"adaptive threshold {threshold:.3f}, picked on {args.calibration_dataset} ({args.calibration_split})"
            )
    result = predict_file(
        args.model,
        args.input,
        args.output,
        args.mode,
        text_field=args.text_field,
        batch_size=args.batch_size,
        confidence_threshold=threshold if threshold is not None else 0.9,
    )
    if state.is_main_process:
        print(f"{result.written} predictions in {result.output}")


if __name__ == "__main__":
    parser = TrlParser(ClassifyArguments)
    main(*parser.parse_args_and_config())

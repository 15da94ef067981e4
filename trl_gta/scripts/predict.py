"""`trl-gta predict`: label the texts of a file with a trained model, into a JSONL file, resumably.

```bash
trl-gta predict --model outputs/quickstart --input texts.txt --output predictions.jsonl
trl-gta predict --model outputs/quickstart --input data.csv --text_field body --output out.jsonl --mode adaptive
accelerate launch --num_processes 8 -m trl_gta.cli predict --model outputs/quickstart --input texts.txt \\
    --output predictions.jsonl    # 8 GPUs, each labels a share; the same file as one process writes
```

A thin layer over `trl_gta.predict_files.predict_file` (see there for the formats and for resuming): an interrupted
run (Ctrl-C, killed) continues where it stopped when rerun with the same arguments.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..predict_files import INPUT_FORMATS
from ..reply_format import ANSWER_DECODINGS, CLASSIFY_MODES
from . import UserError, parse_args


@dataclass
class PredictArguments:
    """Arguments of `trl-gta predict`."""

    model: str = field(metadata={"help": "Checkpoint folder (or Hub id, when the Hub is reachable)."})
    input: str = field(metadata={"help": "JSONL, CSV or plain-text file (one text per line) of texts to label."})
    output: str = field(metadata={"help": "JSONL output, one line per text in input order (plus OUTPUT.meta.json)."})
    mode: str = field(
        default="answer",
        metadata={"help": "answer, guess or adaptive (see GTAClassifier.predict).", "choices": list(CLASSIFY_MODES)},
    )
    answer_decoding: str = field(
        default="labels",
        metadata={
            "help": "labels: every label scored in the answer slot, so every text gets one of the set; free: the "
            "answer as decoded (one outside the set gives no label).",
            "choices": list(ANSWER_DECODINGS),
        },
    )
    input_format: str | None = field(
        default=None,
        metadata={"help": "Input format (default: from the extension).", "choices": [None, *INPUT_FORMATS]},
    )
    text_field: str = field(default="text", metadata={"help": "JSONL field or CSV column holding the text."})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Skip and report rows without a usable text instead of stopping at the first one."},
    )
    top_k: int = field(default=5, metadata={"help": "Guess probabilities written per text (the most probable)."})
    batch_size: int = field(default=16, metadata={"help": "Texts decoded, or scored in guess mode, at a time."})
    chunk_size: int = field(
        default=64, metadata={"help": "Texts between two writes; an interrupted run redoes at most this many."}
    )
    confidence_threshold: float = field(default=0.9, metadata={"help": "Adaptive mode: think below this."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Reply budget (default: the checkpoint's max_completion_length)."}
    )
    max_prompt_tokens: int = field(default=512, metadata={"help": "Texts are cut so each prompt fits."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if OUTPUT holds another run's lines."})

    def __post_init__(self) -> None:
        if self.mode not in CLASSIFY_MODES:
            raise ValueError(f"mode must be one of {', '.join(CLASSIFY_MODES)}, got {self.mode!r}")
        if self.answer_decoding not in ANSWER_DECODINGS:
            raise ValueError(
                f"answer_decoding must be one of {', '.join(ANSWER_DECODINGS)}, got {self.answer_decoding!r}"
            )
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}")
        if min(self.top_k, self.batch_size, self.chunk_size) < 1:
            raise ValueError("top_k, batch_size and chunk_size must be at least 1")


def main(script_args: PredictArguments) -> None:
    """Run `predict_file` with the arguments, and say what was written and skipped."""
    from ..predict_files import BadRowError, predict_file

    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one of the processes `accelerate launch` started
        import torch
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        # initialised, so that predict_file shares the texts out; a process without GPUs talks over gloo on CPU
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())
    args = script_args
    try:
        result = predict_file(
            args.model,
            args.input,
            args.output,
            args.mode,
            input_format=args.input_format,
            text_field=args.text_field,
            skip_bad_rows=args.skip_bad_rows,
            top_k=args.top_k,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            confidence_threshold=args.confidence_threshold,
            max_new_tokens=args.max_new_tokens,
            max_prompt_tokens=args.max_prompt_tokens,
            overwrite=args.overwrite,
            answer_decoding=args.answer_decoding,
        )
    except (OSError, ValueError) as error:
        hint = " (--skip_bad_rows skips and reports such rows)" if isinstance(error, BadRowError) else ""
        raise UserError(str(error).splitlines()[0] + hint) from error
    if state is not None and not state.is_main_process:
        return
    resumed = f" (the first {result.resumed_from} kept from an earlier run)" if result.resumed_from else ""
    print(f"{result.written} predictions in {result.output}{resumed}")
    if result.bad_rows:
        shown = "; ".join(str(row) for row in result.bad_rows[:10])
        more = f"; and {len(result.bad_rows) - 10} more" if len(result.bad_rows) > 10 else ""
        print(f"skipped {len(result.bad_rows)} bad rows: {shown}{more}")


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser(PredictArguments, prog=prog)


def run(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    main(*parse_args(make_parser(prog), argv))


if __name__ == "__main__":
    run()

"""Classify the texts of a file into a JSONL file of predictions, resumably: `predict_file` (and `trl-gta predict`).

Input, told apart by the file's extension unless `input_format` says: JSONL (one JSON object per line, the text under
`text_field`), CSV (a header row, the text in the column `text_field`) or plain text (`.txt`: one text per line).
A bad row (an empty text, a missing field, a line that is not UTF-8 or not JSON) stops the run before any model is
loaded, with its line number, unless `skip_bad_rows` skips and reports such rows.

Output: JSONL, one line per text in input order (see `prediction_record`), written a chunk of texts at a time, each
chunk flushed and synced to disk. A sidecar `<output>.meta.json` records what the output is made from: the input's
content hash, the model, and every option that changes a prediction. A rerun with the same arguments keeps the whole
chunks already written, drops whatever follows them (a line cut by a kill, the first lines of a chunk in progress),
and continues; since it cuts the remaining texts into the same chunks, the finished file equals an uninterrupted
run's byte for byte. A rerun with other arguments is refused, unless `overwrite`.

Several processes: under an initialised accelerate state (`accelerate launch`, or `PartialState()` in the caller),
the chunks left are shared out, a contiguous run of them to each process (`PartialState.split_between_processes`),
each process labels its share on its own device into its own part file (`<output>.part-RRRRR-of-NNNNN`, resumed the
same way), and the first process appends the parts, in order, to the output. The chunks and batches are the same as
one process's, so the output is too, byte for byte (greedy decoding, same hardware).
"""

import csv
import glob
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .reply_format import ANSWER_DECODINGS, CLASSIFY_MODES

if TYPE_CHECKING:
    from .classifier import GTAClassifier, GTAPrediction

logger = logging.getLogger(__name__)

INPUT_FORMATS: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "csv": (".csv",),
    "txt": (".txt", ".text"),
}
"""Input formats and the file extensions that name them."""
META_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class BadRow:
    """A row of the input that holds no usable text: its 1-based line number and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class BadRowError(ValueError):
    """The input has a bad row (and bad rows are not skipped)."""

    def __init__(self, path: str, row: BadRow) -> None:
        super().__init__(f"{path} {row}")
        self.row = row


@dataclass
class InputTexts:
    """The usable texts of an input file, the line each starts on, and the rows skipped as bad."""

    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)


def input_format_of(path: str, input_format: str | None = None) -> str:
    """`input_format` when given, else the format named by the file's extension.

    Raises:
        ValueError: An unknown format, or an extension that names none.
    """
    if input_format is not None:
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}.")
        return input_format
    extension = os.path.splitext(path)[1].lower()
    for name, extensions in INPUT_FORMATS.items():
        if extension in extensions:
            return name
    raise ValueError(
        f"Cannot tell the format of {path} from its extension; name it with input_format ({', '.join(INPUT_FORMATS)})."
    )


def _decoded_lines(data: bytes) -> list[str | None]:
    """The file's lines as text (None for a line that is not UTF-8), a leading byte-order mark removed."""
    lines: list[str | None] = []
    for raw in data.removeprefix(b"\xef\xbb\xbf").splitlines():
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(None)
    return lines


def _text_problem(text: Any, text_field: str) -> str | None:
    if text is None:
        return f"no field {text_field!r}"
    if not isinstance(text, str):
        return f"field {text_field!r} is not a string"
    return "empty text" if not text.strip() else None


def _rows(data: bytes, input_format: str, text_field: str):
    """(line, text or None, problem or None) for each row of the file.

    Raises:
        ValueError: A CSV header without the text column.
    """
    lines = _decoded_lines(data)
    if input_format == "csv":
        # an undecodable line becomes a blank one (skipped by the reader), so the reader's line numbers stay right
        reader = csv.DictReader(io.StringIO("\n".join(line or "" for line in lines), newline=""))
        if reader.fieldnames is None or text_field not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames or []) or "none"
            raise ValueError(f"The CSV header has no column {text_field!r} (columns: {columns}).")
        undecodable = {number for number, line in enumerate(lines, 1) if line is None}
        start = 2
        for record in reader:
            for number in sorted(n for n in undecodable if start <= n < reader.line_num):
                yield number, None, "not valid UTF-8"
            text = record.get(text_field)
            yield reader.line_num, text, _text_problem(text, text_field)
            start = reader.line_num + 1
        for number in sorted(n for n in undecodable if n >= start):
            yield number, None, "not valid UTF-8"
        return
    for number, line in enumerate(lines, 1):
        if line is None:
            yield number, None, "not valid UTF-8"
        elif input_format == "txt":
            yield number, line, _text_problem(line, text_field)
        elif not line.strip():
            yield number, None, "empty line"
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, None, f"not valid JSON ({error.msg})"
                continue
            if not isinstance(row, dict):
                yield number, None, "not a JSON object"
                continue
            text = row.get(text_field)
            yield number, text, _text_problem(text, text_field)


def read_texts(
    path: str, input_format: str | None = None, text_field: str = "text", skip_bad_rows: bool = False
) -> InputTexts:
    """Read the texts of a JSONL, CSV or plain-text file.

    Args:
        path: The file.
        input_format: `"jsonl"`, `"csv"` or `"txt"` (default: from the extension, see `INPUT_FORMATS`).
        text_field: The JSONL field or CSV column holding the text (ignored for plain text).
        skip_bad_rows: Skip rows without a usable text and list them in `bad_rows`, instead of raising.

    Returns:
        The texts, each text's line number and the bad rows skipped.

    Raises:
        BadRowError: A row has no usable text (an empty text, a missing field, a line that is not UTF-8 or not
            JSON), and `skip_bad_rows` is False.
        ValueError: The format cannot be told, or a CSV header lacks the text column.
    """
    input_format = input_format_of(path, input_format)
    with open(path, "rb") as f:
        data = f.read()
    result = InputTexts()
    for line, text, problem in _rows(data, input_format, text_field):
        if problem is None:
            result.texts.append(text)
            result.lines.append(line)
        elif skip_bad_rows:
            result.bad_rows.append(BadRow(line, problem))
        else:
            raise BadRowError(path, BadRow(line, problem))
    return result


def _top(probs: dict[str, float] | None, top_k: int | None) -> dict[str, float] | None:
    """The `top_k` most probable labels (all for None), sorted, rounded to 6 decimals."""
    if probs is None:
        return None
    return {label: round(p, 6) for label, p in sorted(probs.items(), key=lambda item: -item[1])[:top_k]}


def prediction_record(prediction: "GTAPrediction", line: int, top_k: int | None = 5) -> dict[str, Any]:
    """One output line: the input line number and the prediction's fields, the guess and answer probabilities cut to
    the `top_k` most probable labels (all for None), sorted, rounded to 6 decimals; None where the mode gives none."""
    return {
        "line": line,
        "label": prediction.label,
        "guess": prediction.guess,
        "guess_probs": _top(prediction.guess_probs, top_k),
        "answer_probs": _top(prediction.answer_probs, top_k),
        "think": prediction.think,
        "answer": prediction.answer,
        "generated_tokens": prediction.generated_tokens,
        "text_truncated": prediction.text_truncated,
    }


@dataclass
class PredictFileResult:
    """What `predict_file` did.

    Args:
        output: The output file.
        written: Lines the output holds now, one per text.
        resumed_from: Lines kept from an earlier run (0 for a fresh start).
        bad_rows: Rows of the input skipped as bad.
    """

    output: str
    written: int
    resumed_from: int
    bad_rows: list[BadRow]


_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", "config.json", "tokenizer.json", ".jinja")


def _model_identity(model: "GTAClassifier | str") -> dict[str, Any]:
    """The model predictions come from: a folder's path and the sizes and times of its weight, config and tokenizer
    files (not of other files: an output written into the folder must not change it), or a model's name."""
    if not isinstance(model, str):
        return {"name": getattr(model.model, "name_or_path", None) or type(model.model).__name__}
    if not os.path.isdir(model):
        return {"name": model}
    files = sorted(
        (entry.name, entry.stat())
        for entry in os.scandir(model)
        if entry.is_file() and entry.name.endswith(_MODEL_FILE_SUFFIXES)
    )
    return {"path": os.path.abspath(model), "files": {name: [s.st_size, s.st_mtime_ns] for name, s in files}}


def _complete_lines(path: str) -> list[int]:
    """Byte offsets just after each complete line of a file (none when the file is missing)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    ends, newline = [], data.find(b"\n")
    while newline >= 0:
        ends.append(newline + 1)
        newline = data.find(b"\n", newline + 1)
    return ends


def _changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ; the input's path may change (its content is compared through its hash)."""
    return [key for key in sorted(set(old) | set(new)) if key != "input" and old.get(key) != new.get(key)]


def _earlier_lines(output_path: str, meta_path: str, settings: dict[str, Any], total: int) -> list[int]:
    """The end offsets of the complete lines an earlier run with the same `settings` left in `output_path`.

    Raises:
        ValueError: The output holds something else: lines without a `.meta.json` (not written by predict), lines of
            a run with other settings, or more lines than there are texts.
    """
    if not os.path.exists(output_path) or not os.path.getsize(output_path):
        return []
    if not os.path.exists(meta_path):
        raise ValueError(
            f"{output_path} exists and has no {os.path.basename(meta_path)} (not written by predict): start over "
            "with overwrite (--overwrite), or choose another output."
        )
    with open(meta_path) as f:
        changed = _changed_settings(json.load(f), settings)
    if changed:
        raise ValueError(
            f"{output_path} was written from another input or with other settings ({', '.join(changed)} differ): "
            "rerun with the same arguments to continue it, start over with overwrite (--overwrite), or choose "
            "another output."
        )
    ends = _complete_lines(output_path)
    if len(ends) > total:
        raise ValueError(f"{output_path} holds more lines ({len(ends)}) than the input has texts ({total}).")
    return ends


def predict_file(
    model: "GTAClassifier | str",
    input_path: str,
    output_path: str,
    mode: str = "answer",
    *,
    input_format: str | None = None,
    text_field: str = "text",
    skip_bad_rows: bool = False,
    top_k: int | None = 5,
    batch_size: int = 16,
    chunk_size: int = 64,
    confidence_threshold: float = 0.9,
    max_new_tokens: int | None = None,
    max_prompt_tokens: int | None = 512,
    overwrite: bool = False,
    progress: bool = True,
    answer_decoding: str = "labels",
) -> PredictFileResult:
    """Classify every text of `input_path` and write one JSON line per text to `output_path`, resumably.

    Args:
        model: A `GTAClassifier`, or a checkpoint folder (loaded only when there is work left, after the input and
            any earlier output have been checked).
        input_path: A JSONL, CSV or plain-text file (see `read_texts`).
        output_path: The JSONL output; `<output_path>.meta.json` is written beside it.
        mode: `"answer"`, `"guess"` or `"adaptive"` (see `GTAClassifier.predict`).
        input_format: `"jsonl"`, `"csv"` or `"txt"` (default: from the extension).
        text_field: The JSONL field or CSV column holding the text.
        skip_bad_rows: Skip and report rows without a usable text instead of stopping at the first.
        top_k: Guess probabilities written per text: the `top_k` most probable labels (None: all).
        batch_size: Texts decoded, or scored in guess mode, at a time.
        chunk_size: Texts classified between two writes to the output; an interruption redoes at most this many.
        confidence_threshold: Adaptive mode's threshold.
        max_new_tokens: Reply budget (default: the checkpoint's `max_completion_length`).
        max_prompt_tokens: Cut texts so every prompt fits, when `model` is a folder (a classifier keeps its own).
        overwrite: Start over even when the output holds lines from another run.
        progress: Show a progress bar (the first process's, with several).
        answer_decoding: `"labels"` (every text gets a label of the set) or `"free"` (see `GTAClassifier.predict`).

    With several processes (an initialised accelerate state), each one calls `predict_file` with the same arguments
    and labels its share; every call returns once the whole output is written.

    Returns:
        What was written, kept and skipped.

    Raises:
        BadRowError: A bad row, and `skip_bad_rows` is False.
        ValueError: A bad option, or an output made from other inputs or settings (and `overwrite` is False).
        OSError: The input cannot be read or the model cannot be loaded.
    """
    if mode not in CLASSIFY_MODES:
        raise ValueError(f"mode must be one of {CLASSIFY_MODES}, got {mode!r}.")
    if answer_decoding not in ANSWER_DECODINGS:
        raise ValueError(f"answer_decoding must be one of {ANSWER_DECODINGS}, got {answer_decoding!r}.")
    if batch_size < 1 or chunk_size < 1 or (top_k is not None and top_k < 1):
        raise ValueError("batch_size, chunk_size and top_k must be at least 1.")
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise ValueError("The output file must not be the input file.")
    inputs = read_texts(input_path, input_format, text_field, skip_bad_rows)
    with open(input_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    settings = {
        "input": os.path.abspath(input_path),  # for the record; not compared (a moved input keeps its hash)
        "input_sha256": digest,
        "input_format": input_format_of(input_path, input_format),
        "text_field": text_field,
        "skip_bad_rows": skip_bad_rows,
        "model": _model_identity(model),
        "mode": mode,
        "answer_decoding": None if mode == "guess" else answer_decoding,
        "top_k": top_k,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "confidence_threshold": confidence_threshold,
        "max_new_tokens": max_new_tokens,
        "max_prompt_tokens": max_prompt_tokens if isinstance(model, str) else model.max_prompt_tokens,
    }
    meta_path = output_path + META_SUFFIX
    ends = [] if overwrite else _earlier_lines(output_path, meta_path, settings, len(inputs.texts))
    done = len(ends) if len(ends) == len(inputs.texts) else len(ends) // chunk_size * chunk_size
    state = _accelerate_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    parts = [_part_path(output_path, r, world) for r in range(world)] if world > 1 else []
    complete = done == len(inputs.texts)
    stale = [path for path in _part_paths(output_path) if path not in parts]
    if stale and not overwrite and not complete:
        raise ValueError(
            f"{output_path}: {os.path.basename(stale[0])} holds part of a run with another number of processes: "
            "rerun with that many, or start over with overwrite (--overwrite)."
        )
    # the chunks left; with several processes, each takes a contiguous share and writes it to its own part file
    chunks = [
        (start, min(start + chunk_size, len(inputs.texts))) for start in range(done, len(inputs.texts), chunk_size)
    ]
    target, kept = output_path, 0
    if world > 1:
        with state.split_between_processes(chunks) as share:
            chunks = list(share)
        target = parts[rank]
        kept = 0 if overwrite else _kept_part_lines(target, chunks, chunk_size)
        chunks = chunks[kept // chunk_size :] if kept < sum(stop - start for start, stop in chunks) else []
    classifier = model
    if chunks and isinstance(model, str):  # loaded before writing: a failure leaves no file
        from .classifier import GTAClassifier

        device = {"device_map": {"": state.device}} if state is not None else {}
        classifier = GTAClassifier.from_pretrained(model, max_prompt_tokens=max_prompt_tokens, **device)
    _wait(state)  # every process has read the earlier output before any of it changes
    if rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(settings, f, indent=2)
        os.replace(meta_path + ".tmp", meta_path)
        with open(output_path, "ab") as f:
            f.truncate(ends[done - 1] if done else 0)
        for path in _part_paths(output_path) if overwrite or complete else []:
            os.remove(path)
    _wait(state)
    result = PredictFileResult(output_path, len(inputs.texts), done, inputs.bad_rows)
    if complete:
        return result
    if world > 1:
        with open(target, "ab") as f:  # a part of whole chunks (possibly none)
            f.truncate(_complete_lines(target)[kept - 1] if kept else 0)
        from accelerate.utils import gather_object

        result.resumed_from = done + sum(gather_object([kept]))
    options = dict(
        batch_size=batch_size,
        guess_batch_size=batch_size,
        confidence_threshold=confidence_threshold,
        max_new_tokens=max_new_tokens,
        answer_decoding=answer_decoding,
    )
    _classify_chunks(classifier, inputs, chunks, target, mode, progress and rank == 0, top_k, **options)
    if world > 1:
        _wait(state)
        if rank == 0:
            _merge(output_path, parts)
        _wait(state)
    return result


def _accelerate_state():
    """accelerate's process state when the caller initialised it (`accelerate launch` scripts, `Accelerator`,
    `trl-gta predict`), else None: a plain call never initialises it, so it cannot clash with a later Accelerator."""
    from accelerate import PartialState

    return PartialState() if PartialState._shared_state else None


def _wait(state) -> None:
    if state is not None:
        state.wait_for_everyone()


def _part_path(output_path: str, rank: int, world: int) -> str:
    return f"{output_path}.part-{rank:05d}-of-{world:05d}"


def _part_paths(output_path: str) -> list[str]:
    """The part files beside an output, of a run with any number of processes."""
    return sorted(glob.glob(glob.escape(output_path) + ".part-[0-9]*-of-[0-9]*"))


def _kept_part_lines(path: str, chunks: list[tuple[int, int]], chunk_size: int) -> int:
    """The lines of a process's part file an earlier run left that stay: all of its share, or its whole chunks.

    Raises:
        ValueError: The part holds more lines than the share has texts (it was written for other chunks).
    """
    lines, share = len(_complete_lines(path)), sum(stop - start for start, stop in chunks)
    if lines > share:
        raise ValueError(
            f"{path} holds more lines ({lines}) than its share of the texts ({share}): start over with overwrite "
            "(--overwrite)."
        )
    return share if lines == share else lines // chunk_size * chunk_size


def _merge(output_path: str, parts: list[str]) -> None:
    """Append the processes' parts, in order, to the output's kept lines: written beside it and renamed, so a kill
    leaves either the old output and the parts (a rerun merges again) or the whole output."""
    with open(output_path + ".tmp", "wb") as merged:
        for path in [output_path, *parts]:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, merged)
        merged.flush()
        os.fsync(merged.fileno())
    os.replace(output_path + ".tmp", output_path)
    for path in parts:
        os.remove(path)


def _classify_chunks(
    classifier: "GTAClassifier",
    inputs: InputTexts,
    chunks: list[tuple[int, int]],
    target: str,
    mode: str,
    progress: bool,
    top_k: int | None,
    **options: Any,
) -> None:
    """Classify the chunks in order, appending each one's lines to `target`, flushed and synced."""
    from tqdm.auto import tqdm

    total = sum(stop - start for start, stop in chunks)
    bar = tqdm(total=total, desc=f"predict ({mode})", unit="text", disable=not progress)
    try:
        with open(target, "ab") as f:
            for start, stop in chunks:
                classifier.forget_drafts()  # a chunk's lines depend on nothing before it: same bytes on any process
                predictions = classifier.predict(inputs.texts[start:stop], mode=mode, **options)
                f.write(_json_lines(predictions, inputs.lines[start:stop], top_k).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
                bar.update(stop - start)
    except KeyboardInterrupt:
        logger.warning("Interrupted: the finished chunks are in %s; rerun the same command to continue.", target)
        raise
    finally:
        bar.close()


def _json_lines(predictions: Sequence["GTAPrediction"], lines: Sequence[int], top_k: int | None) -> str:
    return "".join(
        json.dumps(prediction_record(prediction, line, top_k), ensure_ascii=False) + "\n"
        for prediction, line in zip(predictions, lines, strict=True)
    )

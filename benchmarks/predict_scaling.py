#!/usr/bin/env python
"""Scaling of `predict_file` over processes: texts per second with 2 processes over 1, one thread each.

Each configuration is this script's worker run under `accelerate launch --num_processes P` (`--multi_gpu` for
P > 1: torchrun underneath; on a CPU machine the processes talk over gloo): every process initialises accelerate,
waits for the others, and calls `predict_file` on the same input, which shares the chunks out and merges the parts.
The time is the first process's, from before `predict_file` to its return (model loading, labelling its share, the
merge; not the interpreter's start-up). Rounds alternate 1 and 2 processes so the machine's slow spells hit both alike;
the figure is the ratio of the medians. Every output must equal the 1-process output byte for byte.

The model is `--model` (a GTA checkpoint), or by default SmolLM2-135M-Instruct (see `trl_gta.assets`) with the
`hwu64-scenario` label set and the default template, untrained: the cost of labelling does not depend on the
training. The last line printed is `predict_scaling[2]=`; the target is >= 1.7 on a 2-core machine.

    flock -x /tmp/trl-gta-bench.lock python benchmarks/predict_scaling.py --texts 48 --rounds 2
"""

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def worker(args: argparse.Namespace) -> None:
    """One process of a launch: label the input with `predict_file`, the first process writing its time."""
    import torch
    from accelerate import PartialState

    from trl_gta import predict_file

    torch.set_num_threads(1)
    state = PartialState(cpu=not torch.accelerator.is_available())
    state.wait_for_everyone()
    start = time.perf_counter()
    predict_file(
        args.model,
        args.input,
        args.output,
        args.mode,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        max_new_tokens=args.max_new_tokens,
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - start
    if state.is_main_process:
        with open(args.output + ".seconds", "w") as f:
            f.write(str(seconds))


def default_checkpoint(folder: str) -> str:
    """SmolLM2-135M-Instruct's files linked into `folder`, with a `gta_config.json` naming hwu64-scenario's labels."""
    from trl_gta.assets import smollm2_path
    from trl_gta.checkpoint import GTACheckpointMetadata
    from trl_gta.registry import dataset_labels

    source = smollm2_path()
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(source):
        if not os.path.exists(os.path.join(folder, name)):
            os.symlink(os.path.join(source, name), os.path.join(folder, name))
    GTACheckpointMetadata(labels=dataset_labels("hwu64-scenario")).save(folder)
    return folder


def launch(processes: int, args: argparse.Namespace, model: str, source: str, output: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    command += ["--multi_gpu"] if processes > 1 else []  # accelerate refuses --multi_gpu for one process
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(port), os.path.abspath(__file__), "--worker", "--model", model]
    command += ["--input", source, "--output", output, "--mode", args.mode, "--batch_size", str(args.batch_size)]
    command += ["--chunk_size", str(args.chunk_size), "--max_new_tokens", str(args.max_new_tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{processes} processes failed:\n{result.stderr[-3000:]}")
    with open(output + ".seconds") as f:
        return float(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help="GTA checkpoint (default: untrained SmolLM2, hwu64 labels)")
    parser.add_argument("--input", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=int, default=48, help="hwu64-scenario test texts labelled")
    parser.add_argument("--mode", default="answer")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--chunk_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each configuration (the median)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from trl_gta.registry import load_classification_dataset

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_checkpoint(os.path.join(tmp, "checkpoint"))
        source = os.path.join(tmp, "texts.txt")
        texts = load_classification_dataset("hwu64-scenario", "test", args.texts, seed=0)["text"]
        with open(source, "w") as f:
            f.write("\n".join(texts) + "\n")
        seconds: dict[int, list[float]] = {1: [], 2: []}
        outputs: dict[int, bytes] = {}
        for _ in range(args.rounds):
            for processes in seconds:
                output = os.path.join(tmp, f"out{processes}.jsonl")
                seconds[processes].append(launch(processes, args, model, source, output))
                with open(output, "rb") as f:
                    outputs[processes] = f.read()
                if outputs[processes] != outputs[1]:
                    raise RuntimeError(f"the {processes}-process output differs from the 1-process output")
    rates = {p: len(texts) / statistics.median(s) for p, s in seconds.items()}
    scaling = rates[2] / rates[1]
    results = {
        "setup": {
            "model": args.model or "SmolLM2-135M-Instruct (untrained), hwu64-scenario labels",
            "texts": len(texts),
            "mode": args.mode,
            "batch_size": args.batch_size,
            "chunk_size": args.chunk_size,
            "max_new_tokens": args.max_new_tokens,
            "threads_per_process": 1,
            "rounds": args.rounds,
            "date": datetime.date.today().isoformat(),
        },
        "seconds": seconds,
        "texts_per_second": rates,
        "outputs_identical": True,
        "predict_scaling_2": scaling,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "predict_scaling.json"), "w") as f:
        json.dump(results, f, indent=2)
    for processes, rate in rates.items():
        print(f"{processes} process(es): {rate:.2f} texts/s (seconds per round: {seconds[processes]})")
    print(f"outputs identical to 1 process byte for byte: {len(texts)} lines")
    print(f"predict_scaling[2]={scaling:.2f}")


if __name__ == "__main__":
    main()

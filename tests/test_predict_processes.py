"""`trl-gta predict` across processes: `accelerate launch --multi_gpu --num_processes 2` on CPU (gloo)."""

import os
import socket
import subprocess
import sys

import pytest

from trl_gta.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASHING_PREDICT = """import os, sys
from accelerate import PartialState
from trl_gta.classifier import GTAClassifier
predict, calls = GTAClassifier.predict, []
def crash_in_the_third_chunk(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        PartialState().wait_for_everyone()  # both processes are in their third chunk
        os._exit(1)  # as a kill: nothing flushed or cleaned up
    return predict(self, *args, **kwargs)
GTAClassifier.predict = crash_in_the_third_chunk
from trl_gta.cli import main
sys.exit(main(sys.argv[1:]))
"""


def launch(*command: str) -> subprocess.CompletedProcess:
    """Two processes as `accelerate launch` starts them on one machine (torchrun underneath), one thread each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    accelerate += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    accelerate += ["--main_process_port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    return subprocess.run([*accelerate, *command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_resume_per_process_and_write_the_one_process_output(tmp_path, gta_checkpoint):
    texts = [f"text {i} " + "wake me up " * (i % 3) for i in range(22)]  # 11 chunks: 6 for a process, 5 for the other
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    args = ["predict", "--model", str(gta_checkpoint), "--input", str(source), "--max_new_tokens", "4"]
    args += ["--chunk_size", "2", "--batch_size", "2"]
    one = tmp_path / "one.jsonl"
    assert main([*args, "--output", str(one)]) == 0

    # two processes, each dying in its third chunk: its part keeps two whole chunks, the output is untouched
    crashed = tmp_path / "crashed.jsonl"
    script = tmp_path / "crashing_predict.py"
    script.write_text(CRASHING_PREDICT)
    assert launch(str(script), *args, "--output", str(crashed)).returncode != 0
    parts = sorted(p for p in os.listdir(tmp_path) if ".part-" in p)
    assert parts == ["crashed.jsonl.part-00000-of-00002", "crashed.jsonl.part-00001-of-00002"]
    assert [(tmp_path / p).read_bytes().count(b"\n") for p in parts] == [4, 4]
    assert not crashed.exists() or crashed.read_bytes() == b""
    assert main([*args, "--output", str(crashed)]) == 1  # one process cannot continue a two-process run
    result = launch("-m", "trl_gta.cli", *args, "--output", str(crashed))  # as a user reruns it
    assert result.returncode == 0, result.stderr[-3000:]
    assert "22 predictions in" in result.stdout and "(the first 8 kept from an earlier run)" in result.stdout
    assert crashed.read_bytes() == one.read_bytes()  # the one-process output, byte for byte, in input order
    assert not any(".part-" in p for p in os.listdir(tmp_path))

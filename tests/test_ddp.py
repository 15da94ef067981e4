import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_process_ddp_keeps_parameters_identical(tmp_path, model_dir):
    """Both ranks see different prompts; the combined gradient must still be all-reduced into one update."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    result = subprocess.run(
        [*command, worker, model_dir, str(tmp_path), "drop"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["sum"] == ranks[1]["sum"] and ranks[0]["abs"] == ranks[1]["abs"]
    assert ranks[0]["cosines"] and ranks[0]["cosines"] == ranks[1]["cosines"]

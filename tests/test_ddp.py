import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model
from gradient_reference import reference_update

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset

RUNS = [("step", "drop", "rl_loss"), ("micro_batch", "drop", "rl_loss"), ("step", "drop", "policy_gradient")]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, model_dir) -> str:
    """One two-process CPU DDP (gloo) launch training every run of RUNS; returns the folder of the ranks' records."""
    out = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)), os.path.dirname(__file__)]),
    }
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", worker]
    runs = [":".join(run) for run in RUNS]
    result = subprocess.run(
        [*command, model_dir, str(out), *runs], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("scope,strategy,signal", RUNS)
def test_two_process_ddp_update_equals_the_rule_applied_by_hand(
    ddp_runs, tmp_path, model_dir, tokenizer, raw_dataset, scope, strategy, signal
):
    """Both ranks see different prompts. Their parameters stay identical, and each update is the rule applied by
    hand: per step, to the SFT and RL gradients summed over the 2 micro-batches and averaged over the 2 processes,
    once (and the logged cosine is that step's); per micro-batch, to each (micro-batch, process) pair. With
    conflict_signal="policy_gradient" (β = 0.01) the policy term's buffer is averaged over processes too."""
    name = f"{scope}_{strategy}_{signal}"
    ranks = [torch.load(os.path.join(ddp_runs, f"rank{r}_{name}.pt"), weights_only=False) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["cosines"] == ranks[1]["cosines"] and len(ranks[0]["cosines"]) == 2
    assert ranks[0]["conflict_rates"] == ranks[1]["conflict_rates"]
    # a single-process trainer with the same settings recomputes the losses
    args = GTAConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        loss_type="grpo",
        learning_rate=0.5,
        max_grad_norm=0.5,
        sft_weight=3.0,
        beta=0.01 if signal == "policy_gradient" else 0.0,
        report_to="none",
        bf16=False,
        use_cpu=True,
    )
    dataset = build_gta_dataset(raw_dataset)
    model = model_dir if args.beta else tiny_model(tokenizer)
    trainer = GTATrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    for k, (step0, step1) in enumerate(zip(ranks[0]["steps"], ranks[1]["steps"], strict=True)):
        assert len(step0["inputs"]) == len(step1["inputs"]) == 2
        assert not torch.equal(step0["inputs"][0]["prompt_ids"], step1["inputs"][0]["prompt_ids"])
        for name, after in step0["after"].items():
            assert torch.equal(after, step1["after"][name]), name  # identical on both ranks
        update, decisions = reference_update(
            trainer, trainer.model, step0["before"], [step0["inputs"], step1["inputs"]], scope, strategy, signal
        )
        for name, expected in update.items():
            torch.testing.assert_close(step0["after"][name] - step0["before"][name], expected, rtol=1e-4, atol=1e-7)
        if scope == "step":
            assert len(decisions) == 1
            assert ranks[0]["cosines"][k] == pytest.approx(decisions[0].cosine, abs=1e-5)
            assert ranks[0]["conflict_rates"][k] == float(decisions[0].conflict)

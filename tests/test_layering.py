"""The package's layering: the training side never imports the inference side, and a config needs no `datasets`."""

import ast
import subprocess
import sys
from pathlib import Path

import trl_gta

PACKAGE = Path(trl_gta.__file__).parent
TRAINING_SIDE = ("trainer", "config", "losses", "collator", "dataset", "spans", "rewards", "warmup", "methods")
INFERENCE_SIDE = {"classifier", "evaluation", "predict_files"}


def _package_imports(module: str) -> set[str]:
    """The trl_gta modules `module` imports, directly or through other trl_gta modules."""
    seen, todo = set(), [module]
    while todo:
        tree = ast.parse((PACKAGE / f"{todo.pop()}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                for name in names:
                    if name not in seen and (PACKAGE / f"{name}.py").exists():
                        seen.add(name)
                        todo.append(name)
    return seen


def test_training_side_never_imports_the_inference_side():
    for module in TRAINING_SIDE:
        assert not _package_imports(module) & INFERENCE_SIDE, module


def test_the_walk_sees_indirect_imports():
    assert "classifier" in _package_imports("evaluation")
    assert "reply_format" in _package_imports("trainer")  # through several modules


def test_building_a_config_does_not_import_datasets():
    code = (
        "import sys; from trl_gta import GTAConfig; GTAConfig('out', labels=['a', 'b'], use_cpu=True, bf16=False); "
        "print('datasets' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"

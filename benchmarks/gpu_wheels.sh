#!/usr/bin/env bash
# Gathers what benchmarks/gpu_check.py needs on a GPU machine that has torch, transformers, accelerate and peft but
# neither network nor trl, datasets or trl-gta: the wheels of trl, datasets and their dependencies that machine
# lacks (dill, multiprocess), a wheel of this checkout, and a tokenizer (SmolLM2's; token ids fit Qwen's vocabulary),
# into benchmarks/gpu_wheels/ (git-ignored), and checks that they fit the 64 MiB a device call carries.
#
#   bash benchmarks/gpu_wheels.sh            # where pip works; then see the top of benchmarks/gpu_check.py
#
# Versions are the ones installed here (the ones the tests ran with). GPU_PYTHON sets the GPU machine's Python
# version (default 3.12, its image's); wheels of packages with compiled parts would need its platform too.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/gpu_wheels
python_version=${GPU_PYTHON:-3.12}
limit=$((64 * 1024 * 1024))

rm -rf "$out"
mkdir -p "$out"
pins=$(python -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("trl", "datasets", "dill", "multiprocess")))')
echo "downloading $pins for Python $python_version"
python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$out" $pins

# the wheel is built from a copy of what git would carry (tracked and untracked-not-ignored files), so nothing stale
# from an earlier build/ folder can slip in
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree"
python -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$tree"

PYTHONPATH=. python -c 'import sys
from transformers import AutoTokenizer
from trl_gta.assets import smollm2_path
AutoTokenizer.from_pretrained(smollm2_path()).save_pretrained(sys.argv[1])' "$out/tokenizer"

ls -l "$out" "$out/tokenizer"
size=$(du -sb "$out" | cut -f1)
carried=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
echo "gpu_wheels: $size bytes ($((size / 1024)) KiB); with the working tree that travels: $((size + carried)) bytes"
if ((size + carried > limit)); then
    echo "gpu_wheels: over the 64 MiB a device call carries" >&2
    exit 1
fi

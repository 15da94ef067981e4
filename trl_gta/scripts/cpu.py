"""`trl-gta train` on a machine without a GPU: TRL's GPU defaults that slow a CPU run, turned off unless set.

TRL's configs default to `bf16=True` (mixed precision; without bf16 hardware a CPU emulates it) and
`gradient_checkpointing=True` (recomputes every activation in backward, to save GPU memory). On a small CPU machine
they make a step several times slower than the benchmarks' settings (measured in docs/benchmarks.md).
"""

import os
from collections.abc import Sequence

GPU_DEFAULTS: dict[str, tuple[str, ...]] = {
    "bf16": ("bf16", "fp16"),
    "activation_checkpointing": ("activation_checkpointing", "gradient_checkpointing"),
}
"""TRL's GPU defaults that slow a CPU run (each `false` on a CPU), and the options that, when set, leave it alone:
the precision is the user's once either half-precision flag is set; `gradient_checkpointing` is transformers' older
name of `activation_checkpointing`."""

KEEP_FLAGS: dict[str, tuple[str, ...]] = {
    "bf16": ("--bf16", "true", "--use_cpu", "true"),
    "activation_checkpointing": ("--activation_checkpointing", "true"),
}
"""The flags that keep each default on a CPU: transformers refuses bf16 without a GPU unless `use_cpu` is set."""


def _flag_names(argv: Sequence[str]) -> set[str]:
    """The option names given on a command line, as dataclass field names (`--no-foo=x` -> `foo`)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            names.add(name.removeprefix("no_"))
    return names


def _config_keys(argv: Sequence[str]) -> set[str]:
    """The keys of the `--config` file on a command line (none without one; TrlParser reports a bad file)."""
    import yaml

    for i, token in enumerate(argv):
        path = token.split("=", 1)[1] if token.startswith("--config=") else None
        if token == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        if path is not None and os.path.isfile(path):
            with open(path) as f:
                return set(yaml.safe_load(f) or {})
    return set()


def cpu_default_flags(argv: Sequence[str]) -> list[str]:
    """The flags that turn off TRL's slowing GPU defaults which neither `argv` nor its `--config` file sets.

    Put before the user's own flags, so that argparse lets any later flag win.
    """
    given = _flag_names(argv) | _config_keys(argv)
    flags = []
    for name, deciders in GPU_DEFAULTS.items():
        if not given & set(deciders):
            flags += [f"--{name}", "false"]
    return flags


def notice(flags: Sequence[str]) -> str:
    """The one start-up line saying which GPU defaults a CPU run turned off, and how to keep them."""
    names = [flag.removeprefix("--") for flag in flags[::2]]
    keep = " ".join(flag for name in names for flag in KEEP_FLAGS[name])
    return f"no GPU: {' and '.join(names)} off (TRL's GPU defaults, slow on a CPU); `{keep}` keeps them"

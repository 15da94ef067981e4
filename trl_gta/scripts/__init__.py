"""The `trl-gta` commands, one module each, the way TRL's own scripts are (`trl/scripts/`).

Each module holds its arguments as dataclasses, `make_parser` (a `trl.TrlParser`, so every command reads
`--config file.yaml` and lets flags override it), `main` (the command itself, callable from Python with the
dataclasses) and `run` (parse, then `main`; what `trl-gta <command>` and `python -m trl_gta.scripts.<command>` call).
Modules are imported only when their command runs, so `trl-gta --help` answers at once.
"""

from collections.abc import Sequence
from typing import Any

COMMANDS: dict[str, str] = {
    "train": "train with GTA or a baseline: trl-gta train --config recipes/.../config_x.yaml [--flag value]",
    "eval": "evaluate a checkpoint on a labelled dataset",
    "predict": "label the texts of a JSONL, CSV or text file into a JSONL file (resumable)",
    "export": "merge a LoRA adapter into its base model",
    "quickstart": "offline CPU demo: GTA + LoRA on SmolLM2-135M-Instruct, hwu64-scenario",
}
"""The commands, in the order `trl-gta --help` lists them, and their one-line help."""


class UserError(Exception):
    """A problem with the command's input that the user can fix, reported as one line with exit status 1."""


def parse_args(parser: Any, argv: Sequence[str] | None, **kwargs: Any) -> tuple:
    """`parser.parse_args_and_config(argv)`, a missing or malformed config file and a dataclass's own validation
    (its `__post_init__`) reported as a `UserError`. argparse's own errors (an unknown flag, a bad choice) still exit
    with status 2."""
    import yaml

    try:
        return parser.parse_args_and_config(argv, **kwargs)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise UserError(str(error).splitlines()[0]) from error

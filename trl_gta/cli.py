"""The `trl-gta` command line: `train`, `eval`, `predict`, `export`, `quickstart`.

A dispatcher only. Each command is a module of `trl_gta.scripts` that parses its own arguments from dataclasses with
`trl.TrlParser` (so every command takes `--config file.yaml` plus flag overrides, and `-h`) and is imported only when
it runs, so `trl-gta --help` answers at once, without torch or TRL. Errors a user can fix (bad paths, unknown
datasets, unloadable models, bad input rows) end with a one-line message and exit status 1; argparse's own errors
with status 2; Ctrl-C with status 130.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .scripts import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it picks the command and leaves the command's arguments to the command's parser."""
    parser = argparse.ArgumentParser(
        prog="trl-gta",
        description="Guess-Think-Answer training on TRL. `trl-gta COMMAND -h` lists a command's arguments.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `trl-gta` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .scripts import UserError

    module = importlib.import_module(f".scripts.{args.command}", __package__)
    try:
        module.run(rest, prog=f"trl-gta {args.command}")
    except UserError as error:
        print(f"trl-gta {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"trl-gta {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`trl-gta export`: merge a LoRA adapter into its base model for serving; the GTA files travel along.

```bash
trl-gta export --adapter outputs/quickstart --output_dir outputs/quickstart-merged
```
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import UserError, parse_args


@dataclass
class ExportArguments:
    """Arguments of `trl-gta export`."""

    adapter: str = field(metadata={"help": "A LoRA adapter folder (with adapter_config.json)."})
    output_dir: str = field(metadata={"help": "Where the merged model goes."})


def main(script_args: ExportArguments) -> None:
    """Write the merged weights, the tokenizer, `gta_config.json` and the model card to `output_dir`."""
    import shutil

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from ..checkpoint import GTA_CONFIG_FILE

    adapter = script_args.adapter
    if not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise UserError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    merged = AutoPeftModelForCausalLM.from_pretrained(adapter).merge_and_unload()
    merged.save_pretrained(script_args.output_dir)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(script_args.output_dir)
    for name in (GTA_CONFIG_FILE, "README.md"):
        if os.path.exists(os.path.join(adapter, name)):
            shutil.copy(os.path.join(adapter, name), script_args.output_dir)
    print(f"merged model written to {script_args.output_dir}")


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser(ExportArguments, prog=prog)


def run(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    main(*parse_args(make_parser(prog), argv))


if __name__ == "__main__":
    run()

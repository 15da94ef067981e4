# /// script
# dependencies = [
#     "trl-gta",
#     "peft",
# ]
# ///
"""Train GTA (or the GRPO baseline) on any classification dataset, with trl-gta's Python API end to end.

The dataset is anything `--dataset_name` names: a registered name (`hwu64-scenario`, `sst5`, ...), a local folder,
a local `.jsonl` / `.csv` / `.parquet` file, or a Hub dataset id, with `--dataset_config`, `--text_column`,
`--label_column` and `--dataset_label_names` (integer labels). The SFT baseline needs `trl.SFTConfig`: use
`trl-gta train --method sft`.

Usage:

```bash
# a Hub dataset, its label column holding strings; LoRA
python examples/scripts/gta.py \\
    --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \\
    --dataset_name SetFit/emotion --label_column label_text \\
    --output_dir Qwen2.5-0.5B-GTA-emotion \\
    --per_device_train_batch_size 8 --num_generations 8 --max_completion_length 128 \\
    --use_peft --lora_target_modules all-linear --max_eval_samples 500

# your CSV, integer ratings named in id order, on 8 GPUs
accelerate launch --config_file recipes/accelerate_configs/zero2.yaml examples/scripts/gta.py \\
    --model_name_or_path Qwen/Qwen2.5-3B-Instruct --dataset_name reviews.csv \\
    --text_column review --label_column rating --dataset_label_names bad mixed good \\
    --dataset_test_split train --output_dir gta-reviews --num_generations 8
```
"""

from trl import ModelConfig, TrlParser, get_peft_config

from trl_gta import GTAClassifier, GTAConfig, evaluate_classifier, load_classification_dataset
from trl_gta.evaluation import format_table
from trl_gta.methods import ScriptArguments, build_trainer, dataset_options, fair_start_options, prompt_template


def main(script_args: ScriptArguments, training_args: GTAConfig, model_args: ModelConfig) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if script_args.method == "sft":
        raise SystemExit("The SFT baseline trains with trl.SFTConfig: run `trl-gta train --method sft` instead.")
    train = load_classification_dataset(
        script_args.dataset_name,
        script_args.dataset_train_split,
        script_args.max_train_samples,
        training_args.seed,
        **dataset_options(script_args),
    )
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=model_args.dtype)
    template = prompt_template(script_args, training_args.chat_template_kwargs)  # the method's reply format
    trainer = build_trainer(
        script_args.method,
        model,
        tokenizer,
        train,  # text + ClassLabel rows; build_trainer turns them into prompts with build_gta_dataset
        training_args,
        template,
        get_peft_config(model_args),
        script_args.max_prompt_tokens,
        script_args.partial_format_reward,
        **fair_start_options(script_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)  # weights + gta_config.json (labels, template) + model card

    if script_args.max_eval_samples and trainer.accelerator.is_main_process:
        test = load_classification_dataset(
            script_args.dataset_name,
            script_args.dataset_test_split,
            script_args.max_eval_samples,
            training_args.seed,
            **dataset_options(script_args),
        )
        classifier = GTAClassifier.from_pretrained(training_args.output_dir)
        gold = test.features["label"].int2str(test["label"])
        metrics, _ = evaluate_classifier(classifier, test["text"], gold, "answer")
        print(format_table({"answer": metrics}))


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, GTAConfig, ModelConfig))
    main(*parser.parse_args_and_config())

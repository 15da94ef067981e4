"""Offline fixtures: a BPE tokenizer trained here and tiny random Qwen2/Llama models (never the Hub)."""

import json
import os

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen3Config

from trl_gta import GTAConfig, GTATrainer, build_gta_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

LABELS = ["alarm", "weather", "music"]
TEXTS = {
    "alarm": ["wake me up at seven", "set an alarm for six am", "cancel my morning alarm"],
    "weather": ["will it rain today", "how hot is it outside", "is it sunny in paris"],
    "music": ["play some jazz", "next song please", "turn up the music"],
}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The recipe families' chat templates, reduced to what shapes a prompt: Qwen2.5's default system message, Qwen3's
# empty think block under enable_thinking=False, Llama 3's header tokens, dated system block and BOS.
FAMILY_CHAT_TEMPLATES = {
    "qwen2": (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are "
        "a helpful assistant.<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "qwen3": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    ),
    "llama": (
        "{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>{% endif %}"
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
        "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
}


def _corpus() -> list[str]:
    lines = [t for texts in TEXTS.values() for t in texts]
    lines += ["Classify the text. Labels: alarm, weather, music. Reply as first guess short reasoning final label"]
    lines += [f"<guess>{label}</guess><think>because</think><answer>{label}</answer>" for label in LABELS]
    return lines * 3


def build_tokenizer(family: str = "chatml") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here, with the chat template and special tokens of a model family."""
    llama = family == "llama"
    special = (
        ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>"]
        if llama
        else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    if llama:  # Llama's tokenizer adds BOS to every text, the chat template writes it too
        bpe.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bpe.token_to_id("<|begin_of_text|>"))]
        )
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            pad_token="<|finetune_right_pad_id|>",
            additional_special_tokens=special[2:4],
        )
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=special[1:],
        )
    tok.chat_template = FAMILY_CHAT_TEMPLATES.get(family, CHAT_TEMPLATE)
    return tok


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a ChatML template; the GTA tags are not tokens of their own."""
    return build_tokenizer()


def tiny_model(tokenizer, arch: str = "qwen2", seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    config_class = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "llama": LlamaConfig}[arch]
    return AutoModelForCausalLM.from_config(config_class(**common))


CPU_TRAINING = dict(report_to="none", bf16=False, use_cpu=True, save_strategy="no", logging_steps=1, seed=0)
"""Trainer settings of every CPU test: no reporting, float32, no checkpoints, a log line per step, seeded."""


def gta_args(output_dir, **overrides) -> GTAConfig:
    """A small GTA run on CPU: 4 completions per step (one prompt x 4 generations), 2 steps, short completions."""
    base = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        max_steps=2,
        learning_rate=1e-2,
        **CPU_TRAINING,
    )
    return GTAConfig(**{**base, **overrides})


@pytest.fixture
def make_trainer(tmp_path, tokenizer, raw_dataset):
    """`make_trainer(**config)`: a GTATrainer on a tiny model and the fixture rows; `model=`, `train_dataset=` and
    trainer keyword arguments (e.g. `peft_config=`) pass through."""

    def make(model=None, train_dataset=None, trainer_kwargs=None, **config) -> GTATrainer:
        return GTATrainer(
            model=model if model is not None else tiny_model(tokenizer),
            args=gta_args(tmp_path / "out", **config),
            train_dataset=train_dataset if train_dataset is not None else build_gta_dataset(raw_dataset),
            processing_class=tokenizer,
            **(trainer_kwargs or {}),
        )

    return make


def length_reward(completions, **kwargs) -> list[float]:
    """A reward that varies within a group, so that advantages and the policy gradient are not zero."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(len(text) % 5) for text in texts]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> str:
    """A saved tiny Qwen2 (TRL reloads a reference model from a path when beta > 0)."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    model = tiny_model(tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def raw_dataset() -> Dataset:
    texts, labels = [], []
    for label, items in TEXTS.items():
        texts += items
        labels += [LABELS.index(label)] * len(items)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


@pytest.fixture
def gta_checkpoint(tmp_path, tokenizer):
    """A GTA checkpoint folder of a tiny random model (labels `LABELS`, the default template)."""
    path = tmp_path / "ckpt"
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "gta_config.json").write_text(json.dumps({"labels": LABELS, "prompt_template": {}}))
    return path

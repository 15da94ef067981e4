import copy
import json
import os

import pytest
import torch
from conftest import LABELS, gta_args, length_reward, tiny_model
from datasets import Dataset
from gradient_reference import micro_batch_gradients, record_steps, reference_update, row_by_row_guess_loss
from huggingface_hub import ModelCard
from peft import LoraConfig

from trl_gta import GTAClassifier, GTAConfig, GTATrainer, build_gta_dataset
from trl_gta.checkpoint import GTA_CONFIG_FILE, GTACheckpointMetadata
from trl_gta.losses import combine_gradients

GTA_KEYS = ["gta/sft_loss", "gta/grad_cosine", "gta/conflict_rate", "gta/guess_accuracy", "gta/truncated_prompts"]


def make_args(tmp_path, **overrides) -> GTAConfig:
    return gta_args(tmp_path / "out", **overrides)


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


@pytest.mark.parametrize("strategy", ["drop", "project", "none"])
def test_training_changes_parameters_and_logs_gta_metrics(tmp_path, tokenizer, raw_dataset, strategy):
    model = tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GTATrainer(
        model=model,
        args=make_args(tmp_path, conflict_strategy=strategy),
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed
    assert not logged(trainer, "gta/answer_accuracy")  # TRL logs each reward function's mean already
    for key in [*GTA_KEYS, "rewards/answer_accuracy_reward/mean"]:
        values = logged(trainer, key)
        assert values and all(v is not None and v == v for v in values), key
    assert all(-1.0 <= c <= 1.0 for c in logged(trainer, "gta/grad_cosine"))


def test_guess_loss_is_exact_cross_entropy_over_distinct_prompts(tmp_path, tokenizer, raw_dataset):
    dataset = build_gta_dataset(raw_dataset.select(range(2)))  # two prompts x four completions
    model = tiny_model(tokenizer)
    trainer = GTATrainer(model=model, args=make_args(tmp_path), train_dataset=dataset, processing_class=tokenizer)
    rows = [dataset[i] for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    inputs = trainer._generate_and_score_completions(rows)

    batch_sizes = []
    hook = trainer.model.register_forward_hook(
        lambda m, args, kwargs, out: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        loss = trainer._guess_loss(trainer.model, inputs)
        trainer.args.sft_loss_reduction = "token_mean"
        token_mean = trainer._guess_loss(trainer.model, inputs)
    hook.remove()
    assert batch_sizes == [2, 2]  # one SFT row per distinct prompt, not per completion

    total, count = 0.0, 0
    for row in (dataset[0], dataset[1]):
        prompt_ids = tokenizer.apply_chat_template(
            [row["prompt"]], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"][0]
        block = f"<guess>{row['label']}</guess>"  # tokenized as in a whole reply; a token straddling its end stays
        encoded = tokenizer(block + "<think>", add_special_tokens=False, return_offsets_mapping=True)
        pairs = zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        target = [i for i, (start, _) in pairs if start < len(block)]
        ids = torch.tensor([list(prompt_ids) + target])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for k, token in enumerate(target):
            total -= logprobs[len(prompt_ids) + k - 1, token].item()
            count += 1
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)  # the paper's: summed per example, mean of 2 examples
    assert token_mean.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("reduction", ["sequence_sum", "token_mean"])
def test_guess_loss_weights_each_distinct_row_by_the_rows_it_stands_for(tmp_path, tokenizer, raw_dataset, reduction):
    """A micro-batch holding 3 completions of one prompt and 1 of another: the prompts weigh 3:1, as one row per
    completion would, though each is run once."""
    dataset = build_gta_dataset(raw_dataset)
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path, sft_loss_reduction=reduction),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    inputs = trainer._generate_and_score_completions([dataset[i] for i in (0, 0, 0, 5)])
    batch_sizes = []
    hook = trainer.model.register_forward_hook(
        lambda m, args, kwargs, out: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        loss = trainer._guess_loss(trainer.model, inputs)
    hook.remove()
    assert batch_sizes == [2]
    with torch.no_grad():
        expected = row_by_row_guess_loss(trainer.model, inputs, reduction)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("strategy", ["drop", "project", "none"])
def test_returned_loss_carries_the_combined_gradient(tmp_path, tokenizer, raw_dataset, strategy):
    """Micro-batch scope: the surrogate's gradient is the rule applied to the micro-batch's weighted,
    accumulation-scaled SFT and RL gradients."""
    dataset = build_gta_dataset(raw_dataset)
    args = make_args(
        tmp_path,
        conflict_strategy=strategy,
        conflict_scope="micro_batch",
        sft_weight=0.7,
        rl_weight=1.3,
        gradient_accumulation_steps=2,
    )
    trainer = GTATrainer(model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # set by the training loop
    trainer.state.logging_steps = 1  # likewise; "none" measures the cosine on logging steps only
    rows = [dataset[i] for i in (0, 0, 0, 0, 4, 4, 4, 4)]
    inputs = trainer._generate_and_score_completions(rows)
    inputs["advantages"] = torch.linspace(-1, 1, 8)  # a non-zero RL gradient
    inputs["gta_reward_signal"] = torch.ones(8, dtype=torch.bool)
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    sft = trainer._guess_loss(trainer.model, inputs) * 0.7 / 2
    sft_grads = torch.autograd.grad(sft, params, allow_unused=True, materialize_grads=True)
    rl = super(GTATrainer, trainer).compute_loss(trainer.model, inputs) * 1.3
    rl_grads = torch.autograd.grad(rl, params, allow_unused=True, materialize_grads=True)
    flat_sft, flat_rl = torch.cat([g.flatten() for g in sft_grads]), torch.cat([g.flatten() for g in rl_grads])
    cosine = torch.nn.functional.cosine_similarity(flat_sft, flat_rl, dim=0).item()
    if strategy == "drop" and cosine < 0:
        expected = flat_rl
    elif strategy == "project" and cosine < 0:
        expected = flat_sft - (flat_sft @ flat_rl) / (flat_rl @ flat_rl) * flat_rl + flat_rl
    else:
        expected = flat_sft + flat_rl

    loss = trainer.compute_loss(trainer.model, inputs)
    grads = torch.autograd.grad(loss, params)
    assert loss.item() == pytest.approx((sft + rl).item(), rel=1e-5)
    torch.testing.assert_close(torch.cat([g.flatten() for g in grads]), expected, rtol=1e-4, atol=1e-7)
    assert trainer._metrics["train"]["gta/grad_cosine"][-1] == pytest.approx(cosine, abs=1e-4)


def sgd_args(tmp_path, **overrides) -> GTAConfig:
    """Plain SGD at a constant rate, so that a parameter update is `-lr * clip(g)` and can be checked by hand."""
    return make_args(tmp_path, optim="sgd", lr_scheduler_type="constant", learning_rate=0.5, **overrides)


@pytest.mark.parametrize(
    "scope,strategy", [("step", "drop"), ("step", "project"), ("step", "none"), ("micro_batch", "drop")]
)
def test_update_equals_the_rule_applied_by_hand_with_accumulation(tmp_path, tokenizer, raw_dataset, scope, strategy):
    """Accumulation 2: per step, both gradients are summed over the window and the rule acts once, before clipping;
    per micro-batch, it acts on each micro-batch. The logged cosine and conflict rate are the rule's."""
    args = sgd_args(
        tmp_path,
        conflict_scope=scope,
        conflict_strategy=strategy,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=3,
        max_grad_norm=0.5,
        sft_weight=3.0,
    )
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[length_reward],
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    steps = record_steps(trainer)
    trainer.train()
    cosines, rates = logged(trainer, "gta/grad_cosine"), logged(trainer, "gta/conflict_rate")
    assert len(steps) == 3 and all(len(step["inputs"]) == 2 for step in steps)
    reference_cosines = []
    for k, step in enumerate(steps):
        update, decisions = reference_update(trainer, trainer.model, step["before"], [step["inputs"]], scope, strategy)
        for name, expected in update.items():
            torch.testing.assert_close(step["after"][name] - step["before"][name], expected, rtol=1e-4, atol=1e-7)
        assert cosines[k] == pytest.approx(sum(d.cosine for d in decisions) / len(decisions), abs=1e-5)
        assert rates[k] == pytest.approx(sum(d.conflict for d in decisions) / len(decisions))
        reference_cosines.append([d.cosine for d in decisions])
    if strategy != "none":
        assert any(c < 0 for step in reference_cosines for c in step), reference_cosines  # the rule was exercised


def test_zero_rl_gradient_is_no_conflict_and_no_nan(tmp_path, tokenizer, raw_dataset, make_trainer):
    def constant_reward(completions, **kwargs):
        return [1.0] * len(completions)

    trainer = make_trainer(trainer_kwargs={"reward_funcs": [constant_reward]}, beta=0.0)
    trainer.train()
    assert logged(trainer, "gta/grad_cosine") == [0.0, 0.0]
    assert logged(trainer, "gta/conflict_rate") == [0.0, 0.0]
    assert all(v == v for v in logged(trainer, "loss"))
    assert all(v > 0 for v in logged(trainer, "gta/sft_loss"))


def test_guess_span_is_masked_from_the_rl_loss(tmp_path, tokenizer, raw_dataset, make_trainer):
    from trl_gta import GTAPromptTemplate

    template = GTAPromptTemplate(response_prefix="<guess>")
    dataset = build_gta_dataset(raw_dataset, template=template, tokenizer=tokenizer)
    trainer = make_trainer(train_dataset=dataset)
    rows = [dataset[0]] * 4
    completion = "alarm</guess><think>x</think><answer>alarm</answer>"
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    guess_len = len(tokenizer("alarm</guess>", add_special_tokens=False)["input_ids"])

    trainer._generate_single_turn = lambda prompt_ids, *args, **kwargs: ([list(ids) for _ in prompt_ids], None)
    inputs = trainer._generate_and_score_completions(rows)
    keep = inputs["tool_mask"][0]
    assert keep[:guess_len].sum() == 0 or keep[: guess_len - 1].sum() == 0  # a straddling last token is masked too
    assert keep[guess_len + 1 :].all()
    assert int(inputs["num_items_in_batch"]) == int((inputs["completion_mask"] * inputs["tool_mask"]).sum())
    assert trainer._metrics["train"]["rewards/gta_format_reward/mean"][-1] == 1.0
    assert trainer._metrics["train"]["gta/guess_accuracy"][-1] == 1.0
    assert trainer._metrics["train"]["rewards/answer_accuracy_reward/mean"][-1] == 1.0


def test_gta_rl_ablation_runs_without_sft(tmp_path, tokenizer, raw_dataset):
    args = make_args(tmp_path, sft_weight=0.0, mask_guess_in_rl=False)
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    trainer.train()
    assert not logged(trainer, "gta/sft_loss")
    assert logged(trainer, "gta/guess_accuracy")


def test_lora_training_and_save_writes_gta_metadata(tmp_path, tokenizer, raw_dataset, make_trainer):
    trainer = make_trainer(trainer_kwargs={"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")})
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and all("lora" in n for n in lora)
    trainer.train()
    assert any(not torch.equal(lora[n], p) for n, p in trainer.model.named_parameters() if n in lora)
    trainer.save_model()
    with open(os.path.join(trainer.args.output_dir, GTA_CONFIG_FILE)) as f:
        saved = json.load(f)
    assert saved["labels"] == LABELS and saved["settings"]["conflict_strategy"] == "drop"
    assert os.path.exists(os.path.join(trainer.args.output_dir, "adapter_config.json"))

    card = ModelCard.load(os.path.join(trainer.args.output_dir, "README.md"))
    assert {"trl", "gta", "text-classification"} <= set(card.data.tags)
    for needle in ("arxiv.org/abs/2509.12108", "zeng-etal-2025-gta", "vonwerra2020trl", "GTAClassifier", "widget"):
        assert needle in card.text
    assert all(f"`{label}`" in card.text for label in LABELS)
    assert "conflict_strategy | drop" in card.text


def test_resume_restores_gta_state_and_refuses_other_labels(tmp_path, tokenizer, raw_dataset, make_trainer):
    dataset = build_gta_dataset(raw_dataset)
    args = make_args(tmp_path, save_strategy="steps", save_steps=1, max_steps=2)
    GTATrainer(model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer).train()
    checkpoint = os.path.join(args.output_dir, "checkpoint-2")
    assert os.path.exists(os.path.join(checkpoint, GTA_CONFIG_FILE))

    resumed = make_trainer(train_dataset=dataset, max_steps=3)
    resumed.train(resume_from_checkpoint=checkpoint)
    assert resumed.state.global_step == 3
    assert resumed.labels == LABELS

    other = make_trainer(train_dataset=dataset, max_steps=3, labels=["music", "weather", "alarm"])
    with pytest.raises(ValueError, match="trained on labels"):
        other.train(resume_from_checkpoint=checkpoint)


def test_construction_errors(tmp_path, tokenizer, raw_dataset, make_trainer, model_dir):
    dataset = build_gta_dataset(raw_dataset)
    with pytest.raises(ValueError, match="conflict_strategy"):
        make_args(tmp_path, conflict_strategy="average")
    with pytest.raises(ValueError, match="use_reentrant"):
        make_trainer(
            train_dataset=dataset, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}
        )
    with pytest.raises(ValueError, match="label set"):
        make_trainer(train_dataset=dataset.remove_columns("label_id"))
    with pytest.raises(ValueError, match="`train_dataset` is required"):  # TRL's own error, as for GRPOTrainer
        GTATrainer(model_dir, reward_funcs=[length_reward], args=make_args(tmp_path))


def test_periodic_eval_callback_logs_held_out_metrics(tmp_path, tokenizer, raw_dataset, make_trainer):
    from trl_gta.evaluation import GTAEvalCallback

    trainer = make_trainer()
    trainer.add_callback(
        GTAEvalCallback(trainer, ["wake me up", "play jazz"], ["alarm", "music"], every_n_steps=1, mode="guess")
    )
    trainer.train()
    accuracies = logged(trainer, "gta_eval/accuracy")
    assert len(accuracies) == 2 and all(a in (0.0, 0.5, 1.0) for a in accuracies)
    assert trainer.model.training

    # an evaluation (which seeds torch) leaves training's random stream as it was
    callback = GTAEvalCallback(trainer, ["wake me up"], ["alarm"], every_n_steps=1, mode="answer", max_new_tokens=2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    callback.on_step_end(trainer.args, trainer.state, None)
    assert torch.equal(torch.get_rng_state(), before)


SETUPS = {
    # setup: (attributes set on the trainer, the scopes where the rule can act there)
    "ddp": ({}, ("step", "micro_batch")),
    "fsdp": ({"is_fsdp_enabled": True}, ()),
    "zero3": ({"is_deepspeed_enabled": True, "_zero_stage": lambda: 3}, ()),
    "zero2": ({"is_deepspeed_enabled": True, "_zero_stage": lambda: 2}, ("micro_batch",)),
    "zero2-fp16": ({"is_deepspeed_enabled": True, "_zero_stage": lambda: 2, "fp16": True}, ()),
    "reentrant": ({"use_reentrant": True}, ()),
}


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("scope", ["step", "micro_batch"])
@pytest.mark.parametrize("strategy", ["drop", "project", "none"])
def test_each_setup_is_refused_only_where_the_rule_cannot_act(
    tmp_path, tokenizer, raw_dataset, setup, scope, strategy, make_trainer
):
    """Gradient surgery needs whole per-parameter gradients taken apart (not under ZeRO-3/FSDP or reentrant
    checkpointing), and per step the gradients before DeepSpeed's in-backward step. 'none' and sft_weight=0 need no
    surgery and are accepted everywhere: they train on the plain sum."""
    attributes, scopes = SETUPS[setup]
    trainer = make_trainer(conflict_strategy=strategy, conflict_scope=scope)
    for name, value in attributes.items():
        if name == "use_reentrant":
            trainer.args.gradient_checkpointing_kwargs = {"use_reentrant": True}
        elif name == "fp16":
            trainer.args.fp16 = True
        else:
            setattr(trainer, name, value)
    if scope in scopes:
        assert trainer._check_gradient_setup() is True
    elif strategy == "none":
        assert trainer._check_gradient_setup() is False  # plain weighted sum, no gradient surgery
    else:
        with pytest.raises(ValueError, match="conflict_strategy='none'"):
            trainer._check_gradient_setup()
    trainer.args.sft_weight = 0.0
    assert trainer._check_gradient_setup() is False


def test_lora_with_reentrant_checkpointing_trains_with_none(tmp_path, tokenizer, raw_dataset):
    """The setup TRL forces for LoRA + ZeRO-3 + checkpointing: refused for a rule, accepted (plain sum) with 'none'."""
    args = make_args(
        tmp_path,
        conflict_strategy="none",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": True},
    )
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(lora[n], p) for n, p in trainer.model.named_parameters() if n in lora)
    assert logged(trainer, "gta/sft_loss") and not logged(trainer, "gta/grad_cosine")


@pytest.mark.parametrize("scope", ["step", "micro_batch"])
def test_none_measures_the_cosine_on_logging_steps_only(tmp_path, tokenizer, raw_dataset, scope):
    args = make_args(tmp_path, conflict_strategy="none", conflict_scope=scope, max_steps=4, logging_steps=2)
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    decomposed = []
    for name in ("_step_scope_loss", "_micro_batch_loss"):
        method = getattr(trainer, name)
        setattr(
            trainer, name, lambda m, x, method=method: (decomposed.append(trainer.state.global_step), method(m, x))[1]
        )
    trainer.train()
    assert decomposed == [1, 3]  # the steps that end at global steps 2 and 4
    assert len(logged(trainer, "gta/grad_cosine")) == 2


def thirds_reward(prompts, completions, **kwargs) -> list[float]:
    """Equal within each group, in thirds as `partial_format_reward` pays: 1/3, 2/3, 4/3 or 5/3 by prompt."""
    return [(1, 2, 4, 5)[len(str(prompt)) % 4] / 3 for prompt in prompts]


@pytest.mark.parametrize("num_generations", [8, 16])
@pytest.mark.parametrize("scope", ["step", "micro_batch"])
def test_rewards_equal_within_groups_with_kl_never_drop_the_supervised_gradient(
    tmp_path, model_dir, tokenizer, raw_dataset, scope, num_generations
):
    """Every group's rewards equal (in thirds, whose advantages TRL leaves at float residue, not 0): the RL gradient
    is beta * grad KL (+ residue), a pull back to the reference that often points against the supervised gradient.
    It is no conflict, so each update is the plain sum."""
    args = sgd_args(
        tmp_path,
        beta=0.01,
        conflict_scope=scope,
        per_device_train_batch_size=num_generations,
        num_generations=num_generations,
        gradient_accumulation_steps=2,
        max_steps=4,
    )
    trainer = GTATrainer(
        model=model_dir,
        reward_funcs=[thirds_reward],
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    steps = record_steps(trainer)
    trainer.train()
    assert logged(trainer, "gta/conflict_rate") == [0.0] * 4
    residue = max(float(x["advantages"].abs().max()) for step in steps for x in step["inputs"])
    assert 0 < residue < 1e-2, residue  # the float residue that switched the old exact test (|A| > 0) off
    cosines = []
    for step in steps:
        update, decisions = reference_update(trainer, trainer.model, step["before"], [step["inputs"]], scope, "none")
        for name, expected in update.items():
            torch.testing.assert_close(step["after"][name] - step["before"][name], expected, rtol=1e-4, atol=1e-7)
        cosines += [d.cosine for d in decisions]
    assert min(cosines) < 0, cosines  # the rule would have dropped the supervised gradient there


@pytest.mark.parametrize("scope", ["step", "micro_batch"])
@pytest.mark.parametrize("strategy", ["drop", "project"])
def test_policy_gradient_signal_update_equals_the_rule_applied_by_hand(
    tmp_path, model_dir, tokenizer, raw_dataset, scope, strategy
):
    """conflict_signal="policy_gradient" with beta = 0.01: the cosine is taken with the policy term's gradient (TRL's
    loss at beta = 0, recomputed by hand with a forward of its own), the update applies the whole RL gradient; the
    cosine of the whole RL gradient is logged beside it."""
    args = sgd_args(
        tmp_path,
        beta=0.01,
        conflict_scope=scope,
        conflict_strategy=strategy,
        conflict_signal="policy_gradient",
        gradient_accumulation_steps=2,
        max_steps=3,
        max_grad_norm=0.5,
        sft_weight=3.0,
    )
    trainer = GTATrainer(
        model=model_dir,
        reward_funcs=[length_reward],
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    steps = record_steps(trainer)
    trainer.train()
    cosines, rl_loss_cosines = logged(trainer, "gta/grad_cosine"), logged(trainer, "gta/rl_loss_cosine")
    assert len(rl_loss_cosines) == len(cosines) == 3 and len(logged(trainer, "gta/rl_loss_conflict_rate")) == 3
    for k, step in enumerate(steps):
        update, decisions = reference_update(
            trainer, trainer.model, step["before"], [step["inputs"]], scope, strategy, "policy_gradient"
        )
        for name, expected in update.items():
            torch.testing.assert_close(step["after"][name] - step["before"][name], expected, rtol=1e-4, atol=1e-7)
        assert cosines[k] == pytest.approx(sum(d.cosine for d in decisions) / len(decisions), abs=1e-5)
    assert cosines != pytest.approx(rl_loss_cosines, abs=1e-6)  # the KL term moves the cosine
    assert trainer._separate_signal()
    trainer.beta = 0.0
    assert not trainer._separate_signal()  # without a KL/entropy term the two signals are one: no extra cost


def test_policy_term_comes_from_the_same_forward_and_logs_nothing_twice(tmp_path, model_dir, tokenizer, raw_dataset):
    dataset = build_gta_dataset(raw_dataset)
    args = make_args(tmp_path, beta=0.01, conflict_signal="policy_gradient")
    trainer = GTATrainer(
        model=model_dir, reward_funcs=[length_reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions([dataset[i] for i in (0, 0, 0, 0)])
    with torch.no_grad():  # move the policy away from the reference, so that the KL term is not zero
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    forwards = []
    hook = trainer.model.register_forward_hook(lambda *args: forwards.append(1))
    metrics = trainer._metrics["train"]
    before = {name: len(values) for name, values in metrics.items()}
    rl_term, policy_term = trainer._rl_terms(trainer.model, inputs)
    hook.remove()
    assert len(forwards) == 1  # the policy term replays the RL forward's log-probs
    logged_now = {name: len(values) - before.get(name, 0) for name, values in metrics.items()}
    assert logged_now["entropy"] == logged_now["kl"] == max(logged_now.values()) == 1  # each metric once
    trainer.beta = 0.0
    expected = trainer._rl_term(trainer.model, inputs)  # TRL's loss without the KL term, from a forward of its own
    assert policy_term.item() == pytest.approx(expected.item(), rel=1e-5)
    assert rl_term.item() != pytest.approx(policy_term.item(), rel=1e-6) and trainer._replayed_logps is None


def test_uneven_shuffle_keeps_the_guess_loss_the_mean_over_the_step(tmp_path, tokenizer, raw_dataset):
    """4 prompts x 4 completions shuffled over 4 micro-batches: prompts fall unevenly into micro-batches, and the
    update still carries the supervised gradient of the mean over the step's 16 rows (recomputed row by row)."""
    args = sgd_args(
        tmp_path,
        conflict_strategy="none",
        logging_steps=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        max_steps=1,
        sft_weight=3.0,
    )
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[length_reward],
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    steps = record_steps(trainer)
    trainer.train()
    (step,) = steps
    distinct = [len(torch.unique(x["prompt_ids"], dim=0)) for x in step["inputs"]]
    assert len(step["inputs"]) == 4 and distinct != [1, 1, 1, 1], distinct  # prompts split across micro-batches
    assert len(set(distinct)) > 1, distinct  # unevenly: the old per-micro-batch weights would differ
    update, _ = reference_update(trainer, trainer.model, step["before"], [step["inputs"]], "step", "none")
    for name, expected in update.items():
        torch.testing.assert_close(step["after"][name] - step["before"][name], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scope", ["step", "micro_batch"])
def test_project_counts_a_trainable_module_outside_the_text_path(tmp_path, tokenizer, raw_dataset, scope):
    """A trainable module only the RL loss reaches (as a vision tower or value head would be): its supervised gradient
    is zero, it counts in ‖g_r‖², and `project` rescales its RL gradient with the rest."""
    model = tiny_model(tokenizer)
    model.side = torch.nn.Linear(3, 3, bias=False)  # registered: a trainable parameter of the model
    args = sgd_args(
        tmp_path,
        conflict_scope=scope,
        conflict_strategy="project",
        per_device_train_batch_size=8,
        max_steps=3,
        max_grad_norm=0.5,
        sft_weight=3.0,
    )
    trainer = GTATrainer(
        model=model,
        reward_funcs=[length_reward],
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    rl_term = trainer._rl_term
    trainer._rl_term = lambda m, x: rl_term(m, x) + 5.0 * (trainer.model.side.weight**2).sum()
    steps = record_steps(trainer)
    trainer.train()
    decisions = []
    for step in steps:
        before, inputs = step["before"], [step["inputs"]]
        update, step_decisions = reference_update(trainer, trainer.model, before, inputs, scope, "project")
        for name, expected in update.items():
            torch.testing.assert_close(step["after"][name] - step["before"][name], expected, rtol=1e-4, atol=1e-7)
        assert not torch.equal(step["after"]["side.weight"], step["before"]["side.weight"])
        decisions += step_decisions
    assert any(d.conflict for d in decisions), [d.cosine for d in decisions]  # project acted


class StubScaler:
    """Accelerate's fp16 GradScaler as the trainer uses it: `scale(loss)` and `get_scale()`."""

    def __init__(self, scale: float) -> None:
        self.factor = scale

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.factor

    def get_scale(self) -> float:
        return self.factor


@pytest.mark.parametrize("scope", ["step", "micro_batch"])
@pytest.mark.parametrize("strategy", ["drop", "project"])
def test_fp16_loss_scale_applies_to_both_gradients(tmp_path, tokenizer, raw_dataset, scope, strategy):
    """With the loss scaler stubbed, p.grad before unscaling is scale x the combination of the unscaled gradients:
    the SFT gradient is scaled like the RL one (no underflow), and never twice."""
    dataset = build_gta_dataset(raw_dataset)
    args = make_args(tmp_path, conflict_strategy=strategy, conflict_scope=scope)
    trainer = GTATrainer(model=tiny_model(tokenizer), args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions([dataset[i] for i in (0, 0, 0, 0, 4, 4, 4, 4)])
    inputs["advantages"] = torch.linspace(-1, 1, 8)
    inputs["gta_reward_signal"] = torch.ones(8, dtype=torch.bool)
    sft, expected = micro_batch_gradients(trainer, trainer.model, inputs, 1)
    combine_gradients(sft, expected, strategy)

    trainer.accelerator.scaler = StubScaler(2.0**10)
    try:
        trainer.accelerator.backward(trainer.compute_loss(trainer.model, inputs))  # as training_step does
        trainer._combine_step_gradients()  # as the sync step does before clipping (a no-op per micro-batch)
    finally:
        trainer.accelerator.scaler = None
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad / 2.0**10, g, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- inputs GRPOTrainer accepts


@pytest.mark.parametrize("mapped", [False, True])
def test_iterable_training_data_with_and_without_map(tmp_path, tokenizer, raw_dataset, mapped, make_trainer):
    stream = build_gta_dataset(raw_dataset).to_iterable_dataset()
    if mapped:
        stream = stream.map(lambda row: row)  # a streaming dataset after .map() no longer knows its columns
        assert stream.column_names is None
    trainer = make_trainer(train_dataset=stream, max_steps=1, labels=LABELS)
    trainer.train()
    assert trainer.state.global_step == 1 and logged(trainer, "gta/sft_loss")


def test_eval_dataset_is_checked_at_construction(tmp_path, tokenizer, raw_dataset, make_trainer):
    rows = build_gta_dataset(raw_dataset)
    for sft_weight in (1.0, 0.0):
        with pytest.raises(ValueError, match=r"The evaluation dataset has no column\(s\) \['label'\]"):
            make_trainer(
                train_dataset=rows,
                trainer_kwargs={"eval_dataset": rows.remove_columns(["label"])},
                sft_weight=sft_weight,
            )
    with pytest.raises(ValueError, match=r"evaluation \('dev'\) dataset has no column"):
        make_trainer(train_dataset=rows, trainer_kwargs={"eval_dataset": {"dev": rows.remove_columns(["prompt"])}})


def test_rl_only_needs_no_label_set(tmp_path, tokenizer, raw_dataset, make_trainer):
    rows = build_gta_dataset(raw_dataset)
    plain = Dataset.from_dict({"prompt": rows["prompt"]})  # no label column, no label set

    def short_reply_reward(completions, **kwargs):
        return [-float(len(completion)) for completion in completions]

    trainer = make_trainer(
        train_dataset=plain,
        trainer_kwargs={"reward_funcs": short_reply_reward},
        sft_weight=0.0,
        mask_guess_in_rl=False,
        max_steps=1,
    )
    assert trainer.labels is None and trainer.reward_func_names == ["short_reply_reward"]
    trainer.train()
    trainer.save_model()
    assert GTACheckpointMetadata.load(trainer.args.output_dir).labels is None
    with pytest.raises(ValueError, match="no label set"):
        GTAClassifier.from_pretrained(trainer.args.output_dir)
    with pytest.raises(ValueError, match="Unknown label set"):  # the supervised guess needs one
        unnamed = Dataset.from_dict({"prompt": rows["prompt"], "label": rows["label"]})  # strings, no label set
        GTATrainer(model=tiny_model(tokenizer), args=make_args(tmp_path), train_dataset=unnamed)


class _ScoredEnvironment:
    """An environment that owns the reward (TRL's `get_reward`)."""

    def reset(self, **kwargs):
        return None

    def get_reward(self) -> float:
        return 1.0


def test_default_rewards_only_without_another_reward_source(tmp_path, tokenizer, raw_dataset, make_trainer):
    rows = build_gta_dataset(raw_dataset)
    with_tools = copy.deepcopy(tokenizer)  # environments need a template that renders tool calls
    with_tools.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% for c in m.get('tool_calls') or [] %}{{ c['function']['name'] }}{{ c['function']['arguments'] | tojson }}"
        "{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path, sft_weight=0.0),
        train_dataset=rows,
        processing_class=with_tools,
        environment_factory=_ScoredEnvironment,
    )
    assert trainer.reward_func_names == ["_ScoredEnvironment"]
    default = make_trainer(train_dataset=rows)
    assert default.reward_func_names == ["gta_format_reward", "answer_accuracy_reward"]


def test_checkpoint_asks_the_training_question_with_the_training_budget(tmp_path, tokenizer, raw_dataset):
    args = make_args(tmp_path, max_steps=1, max_completion_length=10, chat_template_kwargs={"enable_thinking": False})
    trainer = GTATrainer(
        model=tiny_model(tokenizer),
        args=args,
        train_dataset=build_gta_dataset(raw_dataset),
        processing_class=tokenizer,
    )
    assert trainer.prompt_template.chat_template_kwargs == {"enable_thinking": False}
    trainer.save_model()
    classifier = GTAClassifier.from_pretrained(args.output_dir)
    assert classifier.template.chat_template_kwargs == {"enable_thinking": False}
    assert classifier.max_new_tokens == 10


def test_shared_prompt_prefix_gives_the_same_rollouts_losses_and_gradients(tmp_path, tokenizer, raw_dataset):
    """`share_prompt_prefix` computes the prompts' common prefix once: same completions, RL and guess losses and
    gradients as the plain forwards, up to float rounding."""
    dataset = build_gta_dataset(raw_dataset.select(range(3)))
    rows = [dataset[i] for i in (0, 0, 1, 1, 2, 2)]
    trainers = {}
    for share in (False, True):
        args = make_args(
            tmp_path / str(share),
            share_prompt_prefix=share,
            gradient_checkpointing=False,
            per_device_train_batch_size=6,
            num_generations=2,
        )
        trainers[share] = GTATrainer(
            model=tiny_model(tokenizer),
            reward_funcs=[length_reward],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    generated = {}
    for share, trainer in trainers.items():
        torch.manual_seed(0)
        generated[share] = trainer._generate_and_score_completions(rows)
    assert torch.equal(generated[True]["completion_ids"], generated[False]["completion_ids"])
    inputs = generated[False]
    results = {}
    for share, trainer in trainers.items():
        model, trainer.current_gradient_accumulation_steps = trainer.model, 1  # as the training loop sets it
        params = [p for p in model.parameters() if p.requires_grad]
        calls = []
        hook = model.register_forward_hook(
            lambda m, a, kw, out, calls=calls: calls.append(kw["input_ids"].shape), with_kwargs=True
        )
        try:
            rl, guess = trainer._rl_term(model, inputs), trainer._guess_loss(model, inputs)
        finally:
            hook.remove()
        results[share] = (rl, guess, torch.autograd.grad(rl + guess, params), calls)
    (rl, guess, grads, calls), (rl_shared, guess_shared, grads_shared, calls_shared) = results[False], results[True]
    torch.testing.assert_close(rl_shared, rl)
    torch.testing.assert_close(guess_shared, guess)
    for got, want in zip(grads_shared, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the RL forward ran its 6 rows without the shared prefix, which ran once, for one row
    assert calls_shared[0][0] == 1 and calls_shared[1][0] == 6 and calls_shared[1][1] < calls[0][1]


def test_shared_prompt_prefix_is_refused_with_activation_checkpointing(tmp_path, tokenizer, raw_dataset):
    with pytest.raises(ValueError, match="share_prompt_prefix does not work with activation checkpointing"):
        GTATrainer(
            model=tiny_model(tokenizer),
            args=make_args(tmp_path, share_prompt_prefix=True, gradient_checkpointing=True),
            train_dataset=build_gta_dataset(raw_dataset),
            processing_class=tokenizer,
        )

"""FlipTrainer: forced columns, logged pretraining losses, CTR metrics, PLM learning rate, early
stopping; and plain `Trainer` training FlipForCTR. Tiny rows and a tiny BERT, a few steps each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny import tiny_bert_config, tiny_rows
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from flip_hf import DataCollatorForFlipCTR, DataCollatorForFlipPretraining, FlipConfig, FlipForCTR, FlipForPretraining
from flip_hf.metrics import compute_ctr_metrics
from flip_hf.trainer import LOSS_PARTS, PLM_PREFIX, FlipTrainer


def training_args(tmp_path, **overrides):
    options = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=1e-3, max_steps=4, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0, remove_unused_columns=False,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def flip_config(processor, **overrides):
    tokenizer = processor.tokenizer
    options = dict(
        fields=processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn",
        embedding_size=8, pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
    )
    options.update(overrides)
    return FlipConfig(**options)


def ctr_model(processor, ctr_mode="joint"):
    torch.manual_seed(0)
    return FlipForCTR(flip_config(processor, ctr_mode=ctr_mode))


def rows(num_rows, seed):
    return Dataset.from_dict(tiny_rows(num_rows, seed=seed))


# ------------------------------------------------------------------------------------------ columns
def test_forces_remove_unused_columns_false(tmp_path, tiny_flip_processor):
    args = training_args(tmp_path, remove_unused_columns=True)
    trainer = FlipTrainer(
        model=ctr_model(tiny_flip_processor, "id"), args=args, train_dataset=rows(32, 0),
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False),
    )
    assert trainer.args.remove_unused_columns is False
    assert args.remove_unused_columns is True  # the caller's arguments are not mutated
    # raw rows reach the collator (columns the model does not take), so training works
    assert trainer.train().global_step == 4


# ------------------------------------------------------------------------------------ pretraining
def test_pretraining_logs_each_loss_next_to_the_total(tmp_path, tiny_flip_processor):
    torch.manual_seed(0)
    model = FlipForPretraining(flip_config(tiny_flip_processor))
    trainer = FlipTrainer(
        model=model, args=training_args(tmp_path, max_steps=3), train_dataset=rows(64, 0),
        data_collator=DataCollatorForFlipPretraining(tiny_flip_processor),
    )
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 3
    for log in train_logs:
        for name in LOSS_PARTS:
            assert name in log, (name, log)
            assert math.isfinite(log[name]) and log[name] >= 0
        # the total is the weighted sum (weights 1) of the three parts
        assert log["loss"] == pytest.approx(sum(log[name] for name in LOSS_PARTS), rel=1e-2, abs=1e-3)
    summary = trainer.state.log_history[-1]
    assert "train_loss" in summary and not any(name in summary for name in LOSS_PARTS)


# ---------------------------------------------------------------------------------------- metrics
def test_pretraining_collator_comes_from_the_config(tmp_path, tiny_flip_processor):
    model = FlipForPretraining(flip_config(tiny_flip_processor, masking="token", text_mask_ratio=0.3))
    collator = DataCollatorForFlipPretraining.from_config(tiny_flip_processor, model.config, seed=3)
    assert (collator.masking, collator.text_mask_ratio, collator.id_mask_ratio, collator.seed) == ("token", 0.3, 0.15, 3)
    # a collator that masks otherwise than the config says is refused, not trained silently
    with pytest.raises(ValueError, match=r"masking: config 'token', collator 'field'.*from_config"):
        FlipTrainer(model=model, args=training_args(tmp_path), train_dataset=rows(16, 0),
                    data_collator=DataCollatorForFlipPretraining(tiny_flip_processor, text_mask_ratio=0.3))
    assert FlipTrainer(model=model, args=training_args(tmp_path), train_dataset=rows(16, 0), data_collator=collator)


def test_ctr_metrics_score_the_click_logit(tmp_path, tiny_flip_processor):
    model = ctr_model(tiny_flip_processor, "joint")
    validation = rows(48, 1)
    trainer = FlipTrainer(
        model=model, args=training_args(tmp_path, max_steps=2), train_dataset=rows(64, 0),
        eval_dataset=validation, data_collator=DataCollatorForFlipCTR(tiny_flip_processor), group_column="user_id",
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_auc", "eval_logloss", "eval_gauc", "eval_loss", "eval_id_auc", "eval_text_auc"} <= set(metrics)

    prediction = trainer.predict(validation)
    logits = np.asarray(prediction.predictions)
    assert logits.shape == (48,)  # predictions are the click logit; each side only has its AUC in the metrics
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = compute_ctr_metrics(probabilities, validation["label"], groups=validation["user_id"])
    for name in ("auc", "logloss", "gauc"):
        assert metrics[f"eval_{name}"] == pytest.approx(expected[name], rel=1e-6), name

    # the click logit is the model's `logits` output (the fused one in joint mode)
    model.eval()
    with torch.no_grad():
        batch = DataCollatorForFlipCTR(tiny_flip_processor)([validation[i] for i in range(len(validation))])
        batch.pop("labels")
        output = model(**batch)
    np.testing.assert_allclose(logits, output.logits.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(output.logits.numpy(), output.id_logits.numpy())
    for side in ("id", "text"):  # a joint model's sides, each scored on its own logit
        side_logits = getattr(output, f"{side}_logits").numpy().astype(np.float64)
        expected_auc = compute_ctr_metrics(side_logits, validation["label"], from_logits=True)["auc"]
        assert metrics[f"eval_{side}_auc"] == pytest.approx(expected_auc, rel=1e-5), side
    assert metrics["eval_id_auc"] != metrics["eval_text_auc"]  # so the checks above tell the two columns apart

    # without group_column there is no gAUC
    no_groups = FlipTrainer(
        model=model, args=training_args(tmp_path), eval_dataset=validation,
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor),
    ).evaluate()
    assert "eval_gauc" not in no_groups
    assert no_groups["eval_auc"] == pytest.approx(metrics["eval_auc"])


def test_a_dict_of_eval_sets_gives_each_its_own_metrics(tmp_path, tiny_flip_processor):
    sets = {"val": rows(48, 1), "test": rows(40, 2)}
    trainer = FlipTrainer(
        model=ctr_model(tiny_flip_processor, "id"), args=training_args(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=rows(64, 0), eval_dataset=sets, group_column="user_id",
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False),
    )
    trainer.train()
    logged = [log for log in trainer.state.log_history if "eval_val_auc" in log or "eval_test_auc" in log]
    assert {"eval_val_auc", "eval_test_auc"} <= {key for log in logged for key in log}
    for name, dataset in sets.items():
        metrics = trainer.evaluate(dataset, metric_key_prefix=f"eval_{name}")
        logits = np.asarray(trainer.predict(dataset).predictions, dtype=np.float64)
        expected = compute_ctr_metrics(logits, dataset["label"], groups=dataset["user_id"], from_logits=True)
        for metric in ("auc", "logloss", "gauc"):  # gAUC groups come from the set being evaluated, not another
            assert metrics[f"eval_{name}_{metric}"] == pytest.approx(expected[metric], rel=1e-6), (name, metric)


def test_bf16_training_on_cpu_gives_finite_losses_and_float32_metrics(tmp_path, tiny_flip_processor):
    model = ctr_model(tiny_flip_processor, "joint")
    trainer = FlipTrainer(
        model=model, args=training_args(tmp_path, bf16=True, max_steps=3), train_dataset=rows(64, 0),
        eval_dataset=rows(48, 1), data_collator=DataCollatorForFlipCTR(tiny_flip_processor),
    )
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert next(model.parameters()).dtype == torch.float32  # autocast computes in bf16, the weights stay float32
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_auc"]) and math.isfinite(metrics["eval_logloss"])


def test_create_model_card_and_save_model_write_flips_card(tmp_path, tiny_flip_processor):
    from huggingface_hub import ModelCard

    trainer = FlipTrainer(
        model=ctr_model(tiny_flip_processor, "id"), args=training_args(tmp_path, hub_model_id="org/flip-tiny"),
        train_dataset=rows(64, 0), eval_dataset=rows(48, 1), processing_class=tiny_flip_processor,
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False),
    )
    trainer.train()
    auc = trainer.evaluate()["eval_auc"]
    trainer.create_model_card(model_name="flip-tiny", language="en", license="apache-2.0", tags=["movielens"])
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.text.lstrip().startswith("# flip-tiny")  # the title; model-index names the repo
    assert card.data.model_name == "org/flip-tiny" and card.data.license == "apache-2.0" and card.data.language == ["en"]
    assert {"movielens", "generated_from_trainer"} <= set(card.data.tags)
    assert [(r.dataset_split, r.metric_type) for r in card.data.eval_results if r.metric_type == "roc_auc"] == [("validation", "roc_auc")]
    assert next(r.metric_value for r in card.data.eval_results if r.metric_type == "roc_auc") == pytest.approx(auc)
    assert "pipeline(\"ctr-prediction\", model=\"org/flip-tiny\")" in card.text

    trainer.save_model(str(tmp_path / "saved"))  # weights, processor and the card, as scripts/train.py saves
    saved = ModelCard.load(tmp_path / "saved" / "README.md")
    assert "user id is" in saved.text  # the processor's prompt template is in the card
    assert (tmp_path / "saved" / "processor_config.json").is_file() and (tmp_path / "saved" / "flip_card_data.json").is_file()


# --------------------------------------------------------------------------------- optimisation
def test_plm_learning_rate_has_its_own_param_groups(tmp_path, tiny_flip_processor):
    model = ctr_model(tiny_flip_processor, "joint")
    args = training_args(tmp_path, learning_rate=1e-3, weight_decay=0.01, lr_scheduler_type="constant")
    trainer = FlipTrainer(
        model=model, args=args, train_dataset=rows(32, 0), data_collator=DataCollatorForFlipCTR(tiny_flip_processor),
        plm_learning_rate=5e-5,
    )
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        is_plm = {n.startswith(PLM_PREFIX) for n in group_names}
        assert len(is_plm) == 1, "a group mixes PLM and other parameters"
        assert group["lr"] == (5e-5 if is_plm.pop() else 1e-3)
        assert group["weight_decay"] in (0.0, 0.01)
        seen.update(group_names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert seen == trainable  # every trainable parameter exactly once
    assert any(n.startswith(PLM_PREFIX) for n in seen) and any(not n.startswith(PLM_PREFIX) for n in seen)

    # training keeps the groups (and their rates) that create_optimizer built
    trainer.train()
    assert len(trainer.optimizer.param_groups) == len(optimizer.param_groups)
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == (5e-5 if names[id(group["params"][0])].startswith(PLM_PREFIX) else 1e-3)

    # without plm_learning_rate every parameter gets args.learning_rate
    plain = FlipTrainer(model=ctr_model(tiny_flip_processor, "joint"), args=args, train_dataset=rows(32, 0),
                        data_collator=DataCollatorForFlipCTR(tiny_flip_processor))
    assert {group["lr"] for group in plain.create_optimizer().param_groups} == {1e-3}


# -------------------------------------------------------------------------------- plain Trainer
def test_plain_trainer_trains_flip_for_ctr(tmp_path, tiny_flip_processor):
    model = ctr_model(tiny_flip_processor, "id")
    train = rows(128, 0)
    collator = DataCollatorForFlipCTR(tiny_flip_processor, text=False)

    def mean_loss():
        model.eval()
        with torch.no_grad():
            batch = collator([train[i] for i in range(len(train))])
            return float(model(**batch).loss)

    before = mean_loss()
    args = training_args(tmp_path, learning_rate=3e-2, max_steps=40, save_strategy="steps", save_steps=40)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    assert type(trainer) is Trainer
    trainer.train()
    after = mean_loss()
    assert after < before - 0.05, (before, after)
    checkpoint = tmp_path / "out" / "checkpoint-40"
    assert (checkpoint / "model.safetensors").exists()
    reloaded = FlipForCTR.from_pretrained(checkpoint)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


# ------------------------------------------------------------------------------- early stopping
def _state_dicts_equal(model, checkpoint):
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / "model.safetensors"))
    current = model.state_dict()
    return set(saved) <= set(current) and all(torch.equal(current[k], saved[k]) for k in saved)


def test_early_stopping_and_best_model_on_auc(tmp_path, tiny_flip_processor):
    model = ctr_model(tiny_flip_processor, "id")
    args = training_args(
        tmp_path, learning_rate=2e-2, max_steps=30, eval_strategy="steps", eval_steps=1, save_strategy="steps",
        save_steps=1, save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="auc",
        greater_is_better=True, logging_steps=1,
    )
    trainer = FlipTrainer(
        model=model, args=args, train_dataset=rows(96, 0), eval_dataset=rows(32, 1),
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False), group_column="user_id",
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    trainer.train()
    aucs = [(log["step"], log["eval_auc"]) for log in trainer.state.log_history if "eval_auc" in log]
    assert trainer.state.best_metric == max(auc for _, auc in aucs)
    best_step = next(step for step, auc in aucs if auc == trainer.state.best_metric)  # the first best
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert _state_dicts_equal(trainer.model, tmp_path / "out" / f"checkpoint-{best_step}")
    assert trainer.evaluate()["eval_auc"] == pytest.approx(trainer.state.best_metric)
    # stopped early: the last `patience` evaluations did not improve on the best
    if trainer.state.global_step < 30:
        assert [step for step, _ in aucs][-3] == best_step


def test_early_stopping_stops_when_auc_stalls(tmp_path, tiny_flip_processor):
    """learning_rate 0: AUC never improves after the first evaluation, so patience 2 stops at step 3."""
    args = training_args(
        tmp_path, learning_rate=0.0, max_steps=20, eval_strategy="steps", eval_steps=1, save_strategy="steps",
        save_steps=1, load_best_model_at_end=True, metric_for_best_model="auc",
    )
    trainer = FlipTrainer(
        model=ctr_model(tiny_flip_processor, "id"), args=args, train_dataset=rows(96, 0), eval_dataset=rows(32, 1),
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
    )
    trainer.train()
    assert trainer.state.global_step == 3
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-1")


def test_a_processor_that_assigns_other_ids_is_refused(tmp_path, tiny_flip_processor):
    from tiny import tiny_bert_tokenizer, tiny_schema

    from flip_hf import FlipProcessor

    model = FlipForCTR(flip_config(tiny_flip_processor, ctr_mode="id", vocabulary_fingerprint=tiny_flip_processor.vocabulary_fingerprint()))
    other = FlipProcessor(tiny_bert_tokenizer(), tiny_schema()).fit(tiny_rows(64, seed=9))
    with pytest.raises(ValueError, match="assigns other ids"):
        FlipTrainer(model=model, args=training_args(tmp_path), processing_class=other)
    assert FlipTrainer(model=model, args=training_args(tmp_path), processing_class=tiny_flip_processor)

"""TextSideEarlyStoppingCallback and FlipForCTR.freeze_text_side: a joint model's text side stops at its best
validation AUC while the ID side trains on. Tiny rows and a tiny BERT."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tiny import tiny_bert_config, tiny_rows
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flip_hf import DataCollatorForFlipCTR, FlipConfig, FlipForCTR, TextSideEarlyStoppingCallback
from flip_hf.trainer import FlipTrainer


def joint_model(processor, **overrides) -> FlipForCTR:
    tokenizer = processor.tokenizer
    torch.manual_seed(0)
    return FlipForCTR(FlipConfig(
        fields=processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn", embedding_size=8,
        pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id, ctr_mode="joint",
        text_head_hidden_size=16, **overrides,
    ))


def side_weights(modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": value.detach().clone() for i, module in enumerate(modules) for name, value in module.state_dict().items()}


def id_weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.flip.id_encoder.state_dict().items()}


def changed(before: dict, after: dict) -> list[str]:
    return [name for name in before if not torch.equal(before[name], after[name])]


def evaluate(callback, model, auc, step):
    callback.on_evaluate(None, TrainerState(global_step=step), TrainerControl(), model=model, metrics={"eval_text_auc": auc})


def perturb(modules) -> None:
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                parameter.add_(0.1)


@pytest.mark.parametrize("freeze_text_encoder", [False, True])
def test_the_text_side_is_what_trains_behind_the_text_logit(tiny_flip_processor, freeze_text_encoder):
    model = joint_model(tiny_flip_processor, freeze_text_encoder=freeze_text_encoder)
    expected = [model.text_norm, model.text_head] if freeze_text_encoder else [model.flip.text_encoder, model.text_norm, model.text_head]
    assert model.text_side() == expected
    assert FlipForCTR(FlipConfig(**{**model.config.to_dict(), "ctr_mode": "id"})).text_side() == []


def test_freezing_stops_gradients_and_training_mode_of_the_text_side_only(tiny_flip_processor):
    model = joint_model(tiny_flip_processor)
    model.freeze_text_side()
    text_parameters = [p for module in model.text_side() for p in module.parameters()]
    assert text_parameters and not any(p.requires_grad for p in text_parameters)
    assert all(p.requires_grad for p in model.flip.id_encoder.parameters())
    assert model.fusion_alpha.requires_grad and model.fusion_bias.requires_grad
    model.train()  # as Trainer calls it before each step: no dropout, no batch statistics on the frozen side
    assert model.flip.id_encoder.training
    assert not any(module.training for text_module in model.text_side() for module in text_module.modules())


def test_the_callback_puts_back_the_best_text_side_and_freezes_it(tiny_flip_processor):
    model = joint_model(tiny_flip_processor)
    callback = TextSideEarlyStoppingCallback(patience=2)
    callback.on_train_begin(None, TrainerState(), TrainerControl(), model=model)
    evaluate(callback, model, 0.60, step=1)
    evaluate(callback, model, 0.62, step=2)  # the best
    best = side_weights(model.text_side())
    perturb(model.text_side())
    evaluate(callback, model, 0.61, step=3)  # one evaluation without gain: patience 2 waits
    assert not callback.frozen and changed(best, side_weights(model.text_side()))
    perturb(model.text_side())
    ids_before = id_weights(model)
    evaluate(callback, model, 0.62, step=4)  # equal is no gain
    assert callback.frozen and callback.best_auc == 0.62
    assert not changed(best, side_weights(model.text_side()))
    assert not changed(ids_before, id_weights(model))  # the ID side is left as it is
    assert not any(p.requires_grad for module in model.text_side() for p in module.parameters())
    # frozen for good: later evaluations change nothing
    perturb(model.text_side())
    frozen_weights = side_weights(model.text_side())
    evaluate(callback, model, 0.70, step=5)
    assert not changed(frozen_weights, side_weights(model.text_side())) and callback.best_auc == 0.62


def test_evaluations_outside_training_and_without_the_text_auc_change_nothing(tiny_flip_processor):
    model = joint_model(tiny_flip_processor)
    callback = TextSideEarlyStoppingCallback(patience=1)
    evaluate(callback, model, 0.6, step=0)  # before training (e.g. the best checkpoint's final evaluation)
    assert callback.best_auc is None
    callback.on_train_begin(None, TrainerState(), TrainerControl(), model=model)
    evaluate(callback, model, 0.6, step=1)
    callback.on_evaluate(None, TrainerState(global_step=2), TrainerControl(), model=model, metrics={"eval_auc": 0.5})
    assert callback.best_auc == 0.6 and not callback.frozen
    callback.on_train_end(None, TrainerState(), TrainerControl())
    evaluate(callback, model, 0.5, step=3)
    assert not callback.frozen and all(p.requires_grad for p in model.text_head.parameters())


def test_patience_below_one_is_refused():
    with pytest.raises(ValueError, match="patience must be at least 1 evaluation, not 0"):
        TextSideEarlyStoppingCallback(patience=0)


def test_a_restored_callback_freezes_again_or_watches_afresh(tiny_flip_processor):
    """Trainer restores a checkpoint's callback as `type(callback)(**args)` plus its attributes."""
    frozen = TextSideEarlyStoppingCallback(patience=1)
    frozen.best_auc, frozen.frozen = 0.6, True
    state = frozen.state()
    restored = TextSideEarlyStoppingCallback(**state["args"])
    for name, value in state["attributes"].items():
        setattr(restored, name, value)
    model = joint_model(tiny_flip_processor)
    restored.on_train_begin(None, TrainerState(), TrainerControl(), model=model)
    assert not any(p.requires_grad for p in model.text_head.parameters())

    watching = TextSideEarlyStoppingCallback(patience=1)
    watching.best_auc, watching.evaluations_without_gain = 0.6, 0
    watching.on_train_begin(None, TrainerState(), TrainerControl(), model=joint_model(tiny_flip_processor))
    assert watching.best_auc is None  # the best weights were not in the checkpoint: the next evaluation is the best


class FallingTextAuc(TrainerCallback):
    """Reports a text AUC that only falls, so the text side's best is the first evaluation; records the weights
    each evaluation saw."""

    def __init__(self):
        self.text_weights, self.id_weights = {}, {}

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        metrics["eval_text_auc"] = 1.0 / state.global_step
        self.text_weights[state.global_step] = side_weights(model.text_side())
        self.id_weights[state.global_step] = id_weights(model)


def test_in_training_the_text_side_stays_at_its_best_while_the_id_side_trains_on(tmp_path, tiny_flip_processor):
    model = joint_model(tiny_flip_processor)
    watcher = FallingTextAuc()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, per_device_eval_batch_size=32, learning_rate=1e-2,
        max_steps=5, eval_strategy="steps", eval_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    trainer = FlipTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(tiny_rows(80, seed=0)),
        eval_dataset=Dataset.from_dict(tiny_rows(32, seed=1)), data_collator=DataCollatorForFlipCTR(tiny_flip_processor),
        callbacks=[watcher, TextSideEarlyStoppingCallback(patience=1)],  # the watcher first: it sets the AUC
    )
    trainer.train()
    assert trainer.state.global_step == 5
    assert changed(watcher.text_weights[1], watcher.text_weights[2])  # trained up to the freeze at step 2 ...
    final_text = side_weights(model.text_side())
    assert not changed(watcher.text_weights[1], final_text)  # ... which put back step 1's weights, and kept them
    assert changed(watcher.id_weights[2], id_weights(model))  # while the ID side trained on

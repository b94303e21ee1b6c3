"""FlipTrainer: a thin `Trainer` for FLIP pretraining and CTR finetuning.

What it adds to `transformers.Trainer`:
* `remove_unused_columns=False`, because the collators read columns the model does not take;
* the three pretraining losses logged next to the total;
* CTR metrics (AUC, LogLoss, gAUC by user) by default, on the click logit, computed on the predictions
  gathered from every process; a joint model's evaluation also gives each side's AUC (id_auc, text_auc);
* a separate learning rate for the PLM (`plm_learning_rate`), as the paper finetunes it at 5e-5;
* FLIP's model card written with every save and push, from the main process only;
* a `FlipStreamingDataset` (a split too large for memory) read a whole encoded batch at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from .collator import DataCollatorForFlipPretraining
from .metrics import SIDES, compute_ctr_metrics
from .hub import card_data_of
from .model_card import FlipModelCardCallback, save_model_card
from .modeling_flip import FlipForCTR, FlipForCTROutput, FlipForPretraining
from .streaming import FlipStreamingDataset, StreamedBatches

logger = logging.getLogger(__name__)

LOSS_PARTS = ("mlm_loss", "mtm_loss", "icl_loss")
PLM_PREFIX = "flip.text_encoder."
# what Trainer's prediction step keeps of a joint model's output: its fields but the loss, in order
JOINT_OUTPUTS = tuple(field.name for field in dataclasses.fields(FlipForCTROutput) if field.name != "loss")
SIDE_LOGITS = {side: f"{side}_logits" for side in SIDES}  # joint mode's eval metrics: id_auc, text_auc


def keep_ctr_logits(logits, labels):
    """`preprocess_logits_for_metrics`: the (B,) click logit; for joint mode (B, 3), the click logit and then
    the ID side's and the text side's, so that validation scores each side too."""
    if not isinstance(logits, (tuple, list)):
        return logits
    if len(logits) == len(JOINT_OUTPUTS):  # Trainer drops the loss and the None fields of FlipForCTROutput
        return torch.stack([logits[JOINT_OUTPUTS.index(name)] for name in ("logits", *SIDE_LOGITS.values())], dim=-1)
    return logits[0]


def _check_masking(model, collator) -> None:
    """The collator masks what the model's config says, or the card would describe another training."""
    if not (isinstance(model, FlipForPretraining) and isinstance(collator, DataCollatorForFlipPretraining)):
        return
    config = model.config
    differing = [f"{name}: config {getattr(config, name)!r}, collator {getattr(collator, name)!r}"
                 for name in ("masking", "text_mask_ratio", "id_mask_ratio") if getattr(config, name) != getattr(collator, name)]
    if differing:
        raise ValueError(
            f"The data collator masks differently from the model's config ({'; '.join(differing)}). Build it with "
            "DataCollatorForFlipPretraining.from_config(processor, model.config)."
        )


class FlipTrainer(Trainer):
    """`Trainer` for `FlipForPretraining` and `FlipForCTR`.

    Args:
        plm_learning_rate: learning rate of the PLM's parameters (the rest use `args.learning_rate`);
            None gives every parameter the same rate.
        group_column: the column of the eval datasets that groups rows for gAUC (e.g. "user_id").
        Other arguments are `Trainer`'s.
    """

    def __init__(self, model=None, args: TrainingArguments | None = None, *trainer_args,
                 plm_learning_rate: float | None = None, group_column: str | None = None, **kwargs):
        if args is not None and args.remove_unused_columns:
            args = dataclasses.replace(args, remove_unused_columns=False)
        _check_masking(model, kwargs.get("data_collator"))
        processor = kwargs.get("processing_class")
        if hasattr(processor, "check_matches") and model is not None:
            processor.check_matches(model.config)
        is_ctr = isinstance(model, FlipForCTR)
        if is_ctr:
            kwargs.setdefault("compute_metrics", self._ctr_metrics)
            kwargs.setdefault("preprocess_logits_for_metrics", keep_ctr_logits)
        super().__init__(model, args, *trainer_args, **kwargs)
        self.plm_learning_rate = plm_learning_rate
        self.group_column = group_column
        self._eval_groups = None
        self._loss_parts: dict[str, list[torch.Tensor]] = defaultdict(list)
        if not any(isinstance(cb, FlipModelCardCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(FlipModelCardCallback())

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Trainer's save (which gathers FSDP / DeepSpeed weights and saves the processor) plus FLIP's model card."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self._write_model_card(output_dir or self.args.output_dir, card_data_of(self.model))

    def create_model_card(self, model_name=None, language=None, license=None, tags=None, **kwargs):
        """FLIP's card (eval results, prompt, set-up) instead of transformers' generic one; `Trainer.push_to_hub`
        calls this before uploading."""
        if not self.is_world_process_zero():
            return
        card_data = card_data_of(self.model)
        card_data.model_id = self.hub_model_id or card_data.model_id
        card_data.model_name = model_name or card_data.model_name
        card_data.license = license or card_data.license
        card_data.language = [language] if isinstance(language, str) else (language or card_data.language)
        card_data.add_tags(tags or [])
        self._write_model_card(self.args.output_dir, card_data)

    def _write_model_card(self, output_dir: str, card_data) -> None:
        processor = self.processing_class if hasattr(self.processing_class, "render_text") else None
        save_model_card(output_dir, self.accelerator.unwrap_model(self.model), processor=processor, card_data=card_data)

    # -------------------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        """Trainer's, but a `FlipStreamingDataset` comes as whole batches, each encoded at once (`batch_size=None`)."""
        if not isinstance(self.train_dataset, FlipStreamingDataset):
            return super().get_train_dataloader()
        batches = self.train_dataset.batched(self._train_batch_size)
        return self.accelerator.prepare(DataLoader(
            batches, batch_size=None, num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory, persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        ))

    def num_examples(self, dataloader: DataLoader) -> int:
        """Rows, where the DataLoader's dataset counts batches (a stream read a batch at a time)."""
        dataset = getattr(dataloader, "dataset", None)
        return dataset.num_rows if isinstance(dataset, StreamedBatches) else super().num_examples(dataloader)

    # ------------------------------------------------------------------ optimisation
    def create_optimizer(self, model=None):
        """Four parameter groups: (PLM or not) x (weight decay or not), so the PLM can have its own rate."""
        if self.optimizer is not None or self.plm_learning_rate is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        for is_plm in (False, True):
            for with_decay in (True, False):
                params = [
                    p for n, p in opt_model.named_parameters()
                    if p.requires_grad and n.startswith(PLM_PREFIX) == is_plm and (n in decay) == with_decay
                ]
                if params:
                    group = {"params": params, "weight_decay": self.args.weight_decay if with_decay else 0.0}
                    if is_plm:
                        group["lr"] = self.plm_learning_rate
                    groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------------ losses
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and isinstance(self.accelerator.unwrap_model(model), FlipForPretraining):
            for name in LOSS_PARTS:
                part = getattr(outputs, name, None)
                if part is not None:
                    self._loss_parts[name].append(part.detach())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._loss_parts and "loss" in logs:
            for name, values in self._loss_parts.items():
                mean = torch.stack(values).mean()
                logs[name] = round(float(self.accelerator.reduce(mean, reduction="mean")), 4)
            self._loss_parts.clear()
        super().log(logs, start_time)

    # ----------------------------------------------------------------------- metrics
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, dict):  # several eval sets: Trainer calls back per set
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        columns = getattr(dataset, "column_names", None) or []
        self._eval_groups = np.asarray(dataset[self.group_column]) if self.group_column in columns else None
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._eval_groups = None

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """Trainer's, with the click logit as `predictions` in every mode (the metrics still score each side)."""
        output = super().predict(test_dataset, ignore_keys, metric_key_prefix)
        predictions = output.predictions
        if isinstance(predictions, np.ndarray) and predictions.ndim == 2 and isinstance(self.model, FlipForCTR):
            output = output._replace(predictions=predictions[:, 0])
        return output

    def _ctr_metrics(self, eval_prediction) -> dict[str, float]:
        labels = np.asarray(eval_prediction.label_ids).reshape(-1).astype(np.int64)
        logits = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(len(labels), -1)
        groups = self._eval_groups
        if groups is not None and len(groups) != len(logits):
            logger.warning("gAUC skipped: %d groups for %d predictions.", len(groups), len(logits))
            groups = None
        metrics = compute_ctr_metrics(logits[:, 0], labels, groups=groups, from_logits=True)
        if logits.shape[1] > 1:  # joint mode: each side's own AUC
            for column, side in enumerate(SIDE_LOGITS, start=1):
                metrics[f"{side}_auc"] = compute_ctr_metrics(logits[:, column], labels, from_logits=True)["auc"]
        return metrics

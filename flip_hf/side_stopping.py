"""Early stopping for the text side of a joint FLIP model, while its ID side trains on.

A joint model's two sides need not peak together. Where the text side reaches its best validation AUC before the
ID side, early stopping (and the plateau scheduler) on the fused AUC would end both near the text side's peak.
This callback watches the text side's own validation AUC (`eval_text_auc`, which `FlipTrainer` reports for joint
models) and, once it has not improved for `patience` evaluations, puts back the text side's best weights and
freezes them (`FlipForCTR.freeze_text_side`). The fused model's own early stopping then decides when the rest ends.
On MovieLens-100K both sides peak together and it changes nothing beyond noise (benchmarks/FINDINGS.md), so
scripts/train.py leaves it off unless `--text_side_patience` is given.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)

METRIC = "eval_text_auc"


class TextSideEarlyStoppingCallback(TrainerCallback, ExportableState):
    """Freeze a joint model's text side at its best validation AUC, once it has stopped improving.

    Args:
        patience: evaluations without a better `eval_text_auc` before the text side is frozen.

    Its state is saved in checkpoints: a run resumed after the freeze freezes the text side again, and one
    resumed before it watches the text side afresh from the resumed weights.
    """

    def __init__(self, patience: int = 2):
        if patience < 1:
            raise ValueError(f"patience must be at least 1 evaluation, not {patience}.")
        self.patience = patience
        self.best_auc: float | None = None
        self.evaluations_without_gain = 0
        self.frozen = False
        self._best_weights: list[dict] | None = None
        self._training = False  # evaluations after training (of the best checkpoint, of test) change nothing

    def state(self) -> dict:
        return {
            "args": {"patience": self.patience},
            "attributes": {"best_auc": self.best_auc, "evaluations_without_gain": self.evaluations_without_gain,
                           "frozen": self.frozen},
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._training = True
        if self.frozen:  # resumed after the freeze: the checkpoint holds the best weights
            model.freeze_text_side()
        elif self._best_weights is None:  # resumed before it: the best weights were not saved, so watch afresh
            self.best_auc, self.evaluations_without_gain = None, 0

    def on_train_end(self, args, state, control, **kwargs):
        self._training, self._best_weights = False, None

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        auc = (metrics or {}).get(METRIC)
        if not self._training or self.frozen or auc is None:
            return
        if self.best_auc is None or auc > self.best_auc:
            self.best_auc, self.evaluations_without_gain = auc, 0
            self._best_weights = [
                {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
                for module in model.text_side()
            ]
            return
        self.evaluations_without_gain += 1
        if self.evaluations_without_gain < self.patience:
            return
        for module, weights in zip(model.text_side(), self._best_weights or []):
            module.load_state_dict(weights)
        model.freeze_text_side()
        self.frozen, self._best_weights = True, None
        logger.info("Step %d: the text side's validation AUC has not improved on %.4f for %d evaluations; its best "
                    "weights are back and frozen, the ID side and the fusion train on.", state.global_step,
                    self.best_auc, self.patience)

"""Collators: dynamic padding for CTR, and FLIP's joint field-level masking for pretraining."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import torch

from .configuration_flip import IGNORE_INDEX, MASK_ID, MASKING_MODES, NO_FIELD, PAD_ID
from .padding import pad_features
from .processing_flip import FlipProcessor

# What an ID-only batch keeps of an encoded row.
ID_COLUMNS = ("feature_ids", "numeric_positions", "labels")


@dataclass
class DataCollatorForFlipCTR:
    """Pads encoded rows for finetuning and inference; encodes raw rows on the fly if given them.

    Set `text=False` for FLIP_ID ("id" mode): no tokenizer work at all. Rows that carry
    `text_embeds` (see `flip_hf.text_cache`) pass those vectors on instead of their tokens.
    """

    processor: FlipProcessor
    text: bool = True
    pad_to_multiple_of: int | None = None

    def _encode(self, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if "feature_ids" in features[0]:
            return features
        columns = {key: [f[key] for f in features] for key in features[0]}
        encoded = self.processor(columns, text=self.text)
        return [dict(zip(encoded, row)) for row in zip(*encoded.values())]

    def __call__(self, features: list[dict[str, Any]] | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(features, Mapping):  # a batch that FlipTensorDataset already stacked
            return {k: v for k, v in features.items() if self.text or k != "text_embeds"}
        features = self._encode(features)
        if not self.text:
            features = [{k: v for k, v in f.items() if k in ID_COLUMNS} for f in features]
        return pad_features(features, self.processor.tokenizer.pad_token_id, self.pad_to_multiple_of)


@dataclass
class DataCollatorForFlipPretraining(DataCollatorForFlipCTR):
    """Draws, per sample, two independent sets of fields: one masked in the text, one in the IDs.

    * text (MLM): every token of a chosen field becomes the tokenizer's mask token; `mlm_labels`
      holds the original ids there and -100 elsewhere. `masking="token"` masks random value tokens
      instead (the ablation).
    * IDs (MTM): a chosen field's first slot becomes the reserved mask id 2 (other slots padding);
      `mtm_labels` holds the original ids of its slots and -100 elsewhere.

    The clean inputs are kept too: the clean text feeds ICL and MTM, the clean IDs feed MLM and ICL.
    `numeric_positions` pass through unmasked: the model ignores the position of a masked (mask id) field.

    Masks are drawn from a generator keyed by `seed` and the batch's content, not from torch's
    global RNG: data loaders build batches ahead of the training step (and, on resume, before
    `Trainer` restores its RNG state), so only content-keyed masks make a resumed or multi-worker
    run draw exactly the masks of an uninterrupted one. Shuffling gives each epoch new batches and
    so new masks. `seed=None` uses the global RNG instead.
    """

    text_mask_ratio: float = 0.15
    id_mask_ratio: float = 0.15
    masking: str = "field"
    seed: int | None = 0

    def __post_init__(self):
        if self.masking not in MASKING_MODES:
            raise ValueError(f"Unknown masking {self.masking!r}; valid choices: {', '.join(MASKING_MODES)}.")
        if not self.text:
            raise ValueError("Pretraining needs the text side: use DataCollatorForFlipPretraining(text=True).")
        if self.processor.tokenizer.mask_token_id is None:
            raise ValueError(
                f"The tokenizer {type(self.processor.tokenizer).__name__} has no mask token, which MLM needs."
            )
        slots = self.processor.max_values
        self._field_of_slot = torch.repeat_interleave(torch.arange(len(slots)), torch.tensor(slots))
        self._first_slot = torch.tensor([0] + slots[:-1]).cumsum(0)

    @classmethod
    def from_config(cls, processor: FlipProcessor, config, **kwargs) -> "DataCollatorForFlipPretraining":
        """The masking a `FlipConfig` declares (`masking`, `text_mask_ratio`, `id_mask_ratio`): the config is
        the one source of these settings, so the model card describes what was trained."""
        return cls(processor, text_mask_ratio=config.text_mask_ratio, id_mask_ratio=config.id_mask_ratio,
                   masking=config.masking, **kwargs)

    def _generator(self, batch: dict[str, torch.Tensor]) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = zlib.crc32(str(self.seed).encode())
        for name in ("input_ids", "feature_ids"):
            key = zlib.crc32(batch[name].numpy().tobytes(), key)
        return torch.Generator().manual_seed(key)

    def _choose_fields(self, batch_size: int, ratio: float, generator) -> torch.Tensor:
        """(batch, F) bool: round(ratio * F) fields per sample, at least one, uniformly at random."""
        num_fields = len(self.processor.fields)
        k = min(num_fields, max(1, round(ratio * num_fields)))
        scores = torch.rand(batch_size, num_fields, generator=generator)
        chosen = scores.argsort(dim=1)[:, :k]
        return torch.zeros(batch_size, num_fields, dtype=torch.bool).scatter_(1, chosen, True)

    def _text_mask(self, token_field_ids: torch.Tensor, generator) -> torch.Tensor:
        is_value = token_field_ids != NO_FIELD
        if self.masking == "token":
            mask = (torch.rand(token_field_ids.shape, generator=generator) < self.text_mask_ratio) & is_value
            # at least one masked value token per sample, like field masking
            fallback = torch.rand(token_field_ids.shape, generator=generator).masked_fill(~is_value, -1).argmax(1)
            mask[torch.arange(len(mask)), fallback] |= ~mask.any(1)
            return mask
        fields = self._choose_fields(len(token_field_ids), self.text_mask_ratio, generator)
        return fields.gather(1, token_field_ids.clamp(min=0)) & is_value

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch.pop("labels", None)  # pretraining is self-supervised; the click is not used

        generator = self._generator(batch)
        text_mask = self._text_mask(batch["token_field_ids"], generator)
        batch["masked_input_ids"] = batch["input_ids"].masked_fill(text_mask, self.processor.tokenizer.mask_token_id)
        batch["mlm_labels"] = batch["input_ids"].masked_fill(~text_mask, IGNORE_INDEX)

        id_fields = self._choose_fields(len(batch["feature_ids"]), self.id_mask_ratio, generator)
        slot_mask = id_fields[:, self._field_of_slot]
        feature_ids = batch["feature_ids"]
        masked = feature_ids.masked_fill(slot_mask, PAD_ID)
        first_slots = self._first_slot.expand_as(id_fields)
        masked.scatter_(1, first_slots, torch.where(id_fields, MASK_ID, masked.gather(1, first_slots)))
        batch["masked_feature_ids"] = masked
        batch["mtm_labels"] = feature_ids.masked_fill(~slot_mask | (feature_ids == PAD_ID), IGNORE_INDEX)
        return batch

"""Encoded rows to tensors: one padding rule for the processor (`return_tensors="pt"`) and the collators, and
fixed-width columns stacked whole."""

from __future__ import annotations

from typing import Any

import torch

from .configuration_flip import NO_FIELD

# The columns whose rows all have one width, and their dtypes: they stack into tensors without padding.
TENSOR_COLUMNS = {
    "feature_ids": torch.long, "numeric_positions": torch.float, "labels": torch.float, "text_embeds": torch.float,
}


def pad_features(features: list[dict[str, Any]], pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Stack processor outputs into tensors, padding the text to the longest row of the batch."""
    batch: dict[str, torch.Tensor] = {
        "feature_ids": torch.tensor([f["feature_ids"] for f in features], dtype=torch.long),
    }
    if "numeric_positions" in features[0]:  # absent from rows encoded before positions existed
        batch["numeric_positions"] = torch.tensor([f["numeric_positions"] for f in features], dtype=torch.float)
    if "text_embeds" in features[0]:  # precomputed vectors of a frozen PLM: the tokens are not needed
        batch["text_embeds"] = torch.tensor([f["text_embeds"] for f in features], dtype=torch.float)
    elif "text_states" in features[0]:  # token states of a frozen PLM's bottom layers: the tokens are not needed
        length = _padded_length([len(f["text_states"]) for f in features], pad_to_multiple_of)
        states = torch.zeros((len(features), length, len(features[0]["text_states"][0])), dtype=torch.float)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, f in enumerate(features):
            states[row, : len(f["text_states"])] = torch.as_tensor(f["text_states"], dtype=torch.float)
            attention_mask[row, : len(f["text_states"])] = 1
        batch["text_states"], batch["attention_mask"] = states, attention_mask
    elif "input_ids" in features[0]:
        length = _padded_length([len(f["input_ids"]) for f in features], pad_to_multiple_of)
        padding = {"input_ids": pad_token_id, "attention_mask": 0, "token_field_ids": NO_FIELD}
        for key, value in padding.items():
            batch[key] = torch.tensor([f[key] + [value] * (length - len(f[key])) for f in features], dtype=torch.long)
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.float)
    return batch


def _padded_length(lengths: list[int], pad_to_multiple_of: int | None) -> int:
    length = max(lengths)
    return -(-length // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else length


def stack_columns(columns: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Fixed-width columns (`TENSOR_COLUMNS`, as arrays or lists) as tensors, whole columns at a time."""
    return {name: torch.as_tensor(value, dtype=TENSOR_COLUMNS[name]) for name, value in columns.items()}

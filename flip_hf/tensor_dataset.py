"""Encoded rows held as contiguous tensors, served a whole batch at a time.

An ID-only (or cached-text) step costs the model about as much as building its batch row by row
from Arrow and Python lists. Here the fixed-width columns (`feature_ids`, `numeric_positions`,
`labels`, `text_embeds`) become one tensor each, and `__getitems__` (which torch's DataLoader calls
with a batch's indices) returns the batch by index slicing. The FLIP collators pass such a ready
batch through, so this dataset plugs into `Trainer` like any other, with its samplers, sharding and
seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .padding import TENSOR_COLUMNS


class FlipTensorDataset(Dataset):
    """`feature_ids` (N, slots), `labels` (N,) and, if present, `numeric_positions` (N, numeric fields) and
    `text_embeds` (N, hidden) as tensors.

    Other columns (e.g. the user id for gAUC and cold-start slices) are kept as numpy arrays and read by
    name, as on a `datasets.Dataset`: `dataset["user_id"]`, `dataset.column_names`.

    Example:
        >>> encoded = dataset.map(processor, batched=True, fn_kwargs={"text": False})
        >>> train = FlipTensorDataset.from_dataset(encoded["train"])
        >>> trainer = FlipTrainer(model, args, train_dataset=train, data_collator=DataCollatorForFlipCTR(processor, text=False))
    """

    def __init__(self, tensors: dict[str, torch.Tensor], columns: dict[str, np.ndarray] | None = None):
        lengths = {name: len(value) for name, value in {**tensors, **(columns or {})}.items()}
        if "feature_ids" not in tensors:
            raise ValueError("FlipTensorDataset needs a 'feature_ids' tensor: encode the rows with FlipProcessor first.")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Every column needs one entry per row; got lengths {lengths}.")
        self.tensors = tensors
        self.columns = columns or {}

    @classmethod
    def from_dataset(cls, dataset) -> "FlipTensorDataset":
        """From a processor-encoded `datasets.Dataset`: rows with tokens (`input_ids`) vary in length and
        stay with the padding collator, so they are refused here."""
        if "input_ids" in dataset.column_names and "text_embeds" not in dataset.column_names:
            raise ValueError(
                "These rows carry tokens, which vary in length: train on the datasets.Dataset with the padding "
                "collator, or encode with text=False (or cache frozen-PLM vectors with cache_text_embeddings)."
            )
        arrays = dataset.with_format("numpy")
        tensors = {name: torch.as_tensor(np.asarray(arrays[name]), dtype=dtype)
                   for name, dtype in TENSOR_COLUMNS.items() if name in dataset.column_names}
        other = [c for c in dataset.column_names if c not in TENSOR_COLUMNS and c not in ("input_ids", "attention_mask", "token_field_ids")]
        return cls(tensors, {name: np.asarray(dataset[name]) for name in other})

    def __len__(self) -> int:
        return len(self.tensors["feature_ids"])

    @property
    def column_names(self) -> list[str]:
        return [*self.tensors, *self.columns]

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self.tensors[key].numpy() if key in self.tensors else self.columns[key]
        return {name: value[key].tolist() for name, value in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {name: value.index_select(0, index) for name, value in self.tensors.items()}

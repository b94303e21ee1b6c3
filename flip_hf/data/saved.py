"""A dataset prepared once and reused: a `DatasetDict` saved to disk with its schema beside it.

`scripts/train.py --dataset PATH` accepts such a folder, so any data that `load_tabular` can read
trains exactly like the built-in recipes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets

from ..schema import TabularSchema

SCHEMA_FILE = "flip_schema.json"


def save_dataset(dataset: datasets.DatasetDict, schema: TabularSchema, path: str | os.PathLike) -> None:
    path = Path(path)
    _refuse_empty(path, [name for name, split in dataset.items() if split.num_rows == 0])
    dataset.save_to_disk(str(path))
    schema.to_json_file(path / SCHEMA_FILE)


def load_saved_dataset(path: str | os.PathLike) -> tuple[datasets.DatasetDict, TabularSchema]:
    path = Path(path)
    if not (path / SCHEMA_FILE).is_file():
        raise ValueError(
            f"{path} is not a saved FLIP dataset: it has no {SCHEMA_FILE}. Save one with "
            "flip_hf.data.save_dataset(dataset_dict, schema, path)."
        )
    schema = TabularSchema.from_json_file(path / SCHEMA_FILE)
    # datasets cannot load a split saved with 0 rows (IndexError): it is saved without data files
    splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    _refuse_empty(path, [s for s in splits if not json.loads((path / s / "state.json").read_text(encoding="utf-8"))["_data_files"]])
    return datasets.load_from_disk(str(path)), schema


def _refuse_empty(path: Path, empty_splits: list[str]) -> None:
    if empty_splits:
        raise ValueError(
            f"The FLIP dataset {str(path)!r} has empty splits: {', '.join(empty_splits)} (0 rows). Every split "
            "needs rows: rebuild it from data that fills each split (e.g. other split_ratios)."
        )

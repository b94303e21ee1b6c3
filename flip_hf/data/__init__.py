"""Dataset recipes: each returns a `datasets.DatasetDict` (train/validation/test) and its schema."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import datasets

from ..schema import TabularSchema
from .bookcrossing import load_bookcrossing
from .goodreads import load_goodreads
from .movielens import load_movielens
from .tabular import load_tabular

RECIPES: dict[str, Callable[..., tuple[datasets.DatasetDict, TabularSchema]]] = {
    "movielens-100k": partial(load_movielens, version="100k"),
    "movielens-1m": partial(load_movielens, version="1m"),
    "bookcrossing": load_bookcrossing,
    "goodreads": load_goodreads,
}


def load_dataset_recipe(name: str, **kwargs) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load a dataset of the paper by name, e.g. `load_dataset_recipe("bookcrossing", data_dir=...)`."""
    if name not in RECIPES:
        raise ValueError(f"Unknown dataset recipe {name!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[name](**kwargs)


__all__ = [
    "RECIPES",
    "load_bookcrossing",
    "load_dataset_recipe",
    "load_goodreads",
    "load_movielens",
    "load_tabular",
]

"""Dataset recipes: each returns a `datasets.DatasetDict` (train/validation/test) and its schema."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import partial

import datasets

from ..schema import TabularSchema
from .adult import load_adult
from .bookcrossing import load_bookcrossing
from .goodreads import load_goodreads
from .movielens import load_movielens
from .saved import load_saved_dataset, save_dataset
from .tabular import load_tabular

RECIPES: dict[str, Callable[..., tuple[datasets.DatasetDict, TabularSchema]]] = {
    "movielens-100k": partial(load_movielens, version="100k"),
    "movielens-1m": partial(load_movielens, version="1m"),
    "bookcrossing": load_bookcrossing,
    "goodreads": load_goodreads,
    "adult": load_adult,
}


def load_dataset_recipe(name: str, **kwargs) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load a dataset of the paper by name, e.g. `load_dataset_recipe("bookcrossing", data_dir=...)`,
    or a folder written by `save_dataset` (then `kwargs` are ignored: it is already split)."""
    if name not in RECIPES:
        if os.path.isdir(name):
            return load_saved_dataset(name)
        raise ValueError(
            f"Unknown dataset recipe {name!r}; choose one of {', '.join(RECIPES)}, or give the folder of a "
            "dataset saved with flip_hf.data.save_dataset."
        )
    check_recipe_options(name, kwargs)
    return RECIPES[name](**kwargs)


def check_recipe_options(name: str, options: dict) -> None:
    """Refuse an option the recipe does not take, naming the ones it does (a folder takes none that matter)."""
    recipe = RECIPES.get(name)
    if recipe is None:
        return
    accepted = [p for p in inspect.signature(recipe).parameters if p != "version"]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ValueError(f"The {name} recipe has no option {unknown[0]!r}; its options are {', '.join(accepted)}.")


def recipe_split(name: str) -> str | None:
    """The split a recipe uses unless told otherwise: "time" where the data has timestamps, "random" where it
    has none; None for a folder written by `save_dataset`, which is split already."""
    recipe = RECIPES.get(name)
    return None if recipe is None else inspect.signature(recipe).parameters["split"].default


__all__ = [
    "RECIPES",
    "check_recipe_options",
    "load_adult",
    "load_bookcrossing",
    "load_dataset_recipe",
    "load_goodreads",
    "load_movielens",
    "load_saved_dataset",
    "load_tabular",
    "recipe_split",
    "save_dataset",
]

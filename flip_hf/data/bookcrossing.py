"""Book-Crossing (Ziegler et al., 2005) as CTR data, from the official BX-*.csv files.

Label rule: only explicit ratings (1-10) are kept; the implicit ones (rating 0, "the user interacted
with the book" without rating it) say nothing about liking and are dropped, with their count logged.
A click is an explicit rating >= `click_threshold` (5 by default, the upper half of the scale).
Split rule: the data has no timestamps, so rows are split by a seeded random 8:1:1 permutation.
Ratings of books or users missing from BX-Books.csv / BX-Users.csv keep their row, with None values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import pandas as pd

from ..schema import FieldSpec, TabularSchema
from .tabular import frame_to_dataset_dict

logger = logging.getLogger(__name__)

FILES = {"ratings": "BX-Book-Ratings.csv", "users": "BX-Users.csv", "books": "BX-Books.csv"}
# Ages outside this range are placeholders or typos in the data (0, 244...): treated as unknown.
PLAUSIBLE_AGES = (5, 100)


def bookcrossing_schema() -> TabularSchema:
    """FLIP's eight Book-Crossing fields."""
    return TabularSchema(
        fields=[
            FieldSpec("user_id", prompt_name="user id"),
            FieldSpec("location"),
            FieldSpec("age", kind="numeric"),
            FieldSpec("isbn", prompt_name="ISBN"),
            FieldSpec("title", prompt_name="book title"),
            FieldSpec("author"),
            FieldSpec("year", prompt_name="year of publication"),
            FieldSpec("publisher"),
        ],
        group_column="user_id",
        name="bookcrossing",
    )


def load_bookcrossing(
    data_dir: str | os.PathLike,
    split: str = "random",
    seed: int = 42,
    click_threshold: int = 5,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load Book-Crossing as train/validation/test and its schema (see the module docstring for the rules).

    Args:
        data_dir: the folder with BX-Book-Ratings.csv, BX-Users.csv and BX-Books.csv.
        split: "random" (the data has no time, so "time" and "user_time" are refused).
        seed: seed of the random split.
        click_threshold: explicit ratings >= this are clicks.
        split_ratios: train/validation/test fractions.
    """
    folder = Path(data_dir)
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Book-Crossing files {missing} not found in {str(folder)!r}; it needs {', '.join(FILES.values())}."
        )
    ratings = _read(folder / FILES["ratings"], {"User-ID": "user_id", "ISBN": "isbn", "Book-Rating": "rating"})
    users = _read(folder / FILES["users"], {"User-ID": "user_id", "Location": "location", "Age": "age"})
    books = _read(folder / FILES["books"], {"ISBN": "isbn", "Book-Title": "title", "Book-Author": "author",
                                            "Year-Of-Publication": "year", "Publisher": "publisher"})

    rating = pd.to_numeric(ratings["rating"], errors="coerce")
    if rating.isna().any():
        row = int(rating.isna().to_numpy().argmax())
        raise ValueError(f"{FILES['ratings']}: Book-Rating {ratings['rating'].iloc[row]!r} of data row {row} "
                         "is not a number; fix or remove that line.")
    implicit = rating == 0
    logger.info("Book-Crossing: dropped %d implicit (0) ratings, kept %d explicit ones.",
                int(implicit.sum()), int((~implicit).sum()))
    ratings = ratings[~implicit].assign(label=(rating[~implicit] >= click_threshold).astype(int))

    age = pd.to_numeric(users["age"], errors="coerce")
    users = users.assign(age=age.where(age.between(*PLAUSIBLE_AGES)))
    books = books.assign(year=books["year"].where(books["year"] != "0"))  # 0 means unknown

    frame = (ratings.merge(users.drop_duplicates("user_id"), on="user_id", how="left")
             .merge(books.drop_duplicates("isbn"), on="isbn", how="left"))
    schema = bookcrossing_schema()
    dataset = frame_to_dataset_dict(frame, schema, split=split, split_ratios=split_ratios, seed=seed,
                                    where="Book-Crossing")
    return dataset, schema


def _read(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read one BX file: ';'-separated, quoted, latin-1, backslash-escaped quotes, "NULL" for missing.

    A malformed line is reported by pandas as a warning (with its line number) and skipped; that only
    loses metadata, since every rating row is kept by the left joins.
    """
    frame = pd.read_csv(path, sep=";", quotechar='"', escapechar="\\", encoding="latin-1", dtype=str,
                        na_values=["NULL", ""], keep_default_na=False, on_bad_lines="warn")
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its header is {list(frame.columns)}. "
                         "Is it the official Book-Crossing file?")
    return frame[list(columns)].rename(columns=columns)

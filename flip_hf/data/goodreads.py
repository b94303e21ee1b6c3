"""GoodReads (Wan & McAuley, UCSD Book Graph) as CTR data, from its JSON-lines files.

Files: `goodreads_interactions_<genre>.json[.gz]` (user_id, book_id, rating, date_added, ...) and
`goodreads_books_<genre>.json[.gz]` (one book per line). Label rule: rating >= 4 is a click; rating 0
means "shelved without a rating", carries no preference and is dropped (count logged). Split rule:
time order on date_added (ties by user_id, then book_id), 8:1:1.

The 15 fields (FLIP uses 15; the paper does not list them, these are the informative book
metadata): user_id, book_id, title, author_id (the first listed author), publisher,
publication_year, language_code, format, num_pages, average_rating and ratings_count (numeric,
bucketized by the processor), is_ebook, country_code, series (the first series id) and shelves
(the 5 most popular shelf names, a multi-categorical field). Empty strings are missing values.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import pandas as pd

from ..schema import FieldSpec, TabularSchema
from .tabular import frame_to_dataset_dict

logger = logging.getLogger(__name__)

DATE_FORMAT = "%a %b %d %H:%M:%S %z %Y"  # "Fri Aug 25 13:55:02 -0700 2017"
TOP_SHELVES = 5
BOOK_FIELDS = ("title", "author_id", "publisher", "publication_year", "language_code", "format", "num_pages",
               "average_rating", "ratings_count", "is_ebook", "country_code", "series", "shelves")


def goodreads_schema() -> TabularSchema:
    return TabularSchema(
        fields=[
            FieldSpec("user_id", prompt_name="user id"),
            FieldSpec("book_id", prompt_name="book id"),
            FieldSpec("title"),
            FieldSpec("author_id", prompt_name="author id"),
            FieldSpec("publisher"),
            FieldSpec("publication_year", prompt_name="publication year"),
            FieldSpec("language_code", prompt_name="language"),
            FieldSpec("format"),
            FieldSpec("num_pages", kind="numeric", prompt_name="number of pages"),
            FieldSpec("average_rating", kind="numeric", prompt_name="average rating"),
            FieldSpec("ratings_count", kind="numeric", prompt_name="number of ratings"),
            FieldSpec("is_ebook", prompt_name="is ebook"),
            FieldSpec("country_code", prompt_name="country"),
            FieldSpec("series"),
            FieldSpec("shelves", kind="multi_categorical", prompt_name="popular shelves"),
        ],
        time_column="timestamp",
        group_column="user_id",
        name="goodreads",
    )


def load_goodreads(
    data_dir: str | os.PathLike,
    genre: str | None = None,
    split: str = "time",
    seed: int = 42,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load GoodReads as train/validation/test and its schema (see the module docstring for the rules).

    Args:
        data_dir: the folder with the interactions and books files.
        genre: the file suffix, e.g. "poetry" for goodreads_*_poetry.json.gz; needed only when the
            folder holds several.
        split: "time" (default), "random" or "user_time".
        seed: seed of the "random" split.
        split_ratios: train/validation/test fractions.
    """
    folder = Path(data_dir)
    interactions_path = _find(folder, "goodreads_interactions", genre)
    books_path = _find(folder, "goodreads_books", genre)

    interactions = pd.DataFrame(
        _interactions(interactions_path), columns=["user_id", "book_id", "rating", "date_added"]
    )
    unrated = interactions["rating"] == 0
    logger.info("GoodReads: dropped %d unrated (rating 0) interactions, kept %d rated ones.",
                int(unrated.sum()), int((~unrated).sum()))
    interactions = interactions[~unrated].reset_index(drop=True)
    interactions["timestamp"] = _timestamps(interactions["date_added"], interactions_path)
    interactions["label"] = (interactions["rating"] >= 4).astype(int)

    wanted = set(interactions["book_id"])
    books = pd.DataFrame(
        [_book_row(r) for _, r in _json_lines(books_path) if str(r.get("book_id")) in wanted],
        columns=["book_id", *BOOK_FIELDS],
    ).drop_duplicates("book_id")

    frame = interactions.merge(books, on="book_id", how="left")
    schema = goodreads_schema()
    dataset = frame_to_dataset_dict(frame, schema, split=split, split_ratios=split_ratios, seed=seed,
                                    sort_columns=("user_id", "book_id"), where="GoodReads")
    return dataset, schema


def _find(folder: Path, prefix: str, genre: str | None) -> Path:
    pattern = f"{prefix}_{genre}.json*" if genre else f"{prefix}*.json*"
    candidates = sorted(p for p in folder.glob(pattern) if p.name.endswith((".json", ".json.gz")))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"No {pattern} file (.json or .json.gz) in {str(folder)!r}.")
    raise ValueError(
        f"Several {prefix} files in {str(folder)!r}: {[p.name for p in candidates]}; pass genre= to pick one."
    )


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSON-lines file, gzipped or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({error}).") from error


def _interactions(path: Path) -> Iterator[tuple[str, str, int, str]]:
    for number, record in _json_lines(path):
        try:
            yield str(record["user_id"]), str(record["book_id"]), int(record["rating"]), record["date_added"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}, line {number}: an interaction needs user_id, book_id, an integer rating and "
                f"date_added; got {record!r}."
            ) from None


def _timestamps(dates: pd.Series, path: Path) -> pd.Series:
    parsed = pd.to_datetime(dates, format=DATE_FORMAT, utc=True, errors="coerce")
    if parsed.isna().any():
        row = int(parsed.isna().to_numpy().argmax())
        raise ValueError(
            f"{path}: date_added {dates.iloc[row]!r} of rated interaction {row} does not match "
            f"{DATE_FORMAT!r} (e.g. 'Fri Aug 25 13:55:02 -0700 2017'); fix or remove that line."
        )
    return (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)


def _book_row(book: dict) -> tuple:
    def text(key):
        value = book.get(key)
        return str(value) if value not in (None, "") else None

    authors = book.get("authors") or []
    series = book.get("series") or []
    shelves = sorted(book.get("popular_shelves") or [], key=lambda s: -int(s.get("count") or 0))
    return (
        str(book["book_id"]),
        text("title"),
        str(authors[0]["author_id"]) if authors else None,
        text("publisher"),
        text("publication_year"),
        text("language_code"),
        text("format"),
        text("num_pages"),
        text("average_rating"),
        text("ratings_count"),
        text("is_ebook"),
        text("country_code"),
        str(series[0]) if series else None,
        [s["name"] for s in shelves[:TOP_SHELVES]] or None,
    )

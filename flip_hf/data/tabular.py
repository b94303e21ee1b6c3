"""Generic tabular data -> `datasets.DatasetDict` + schema, and the checks and splits every recipe shares.

The data contract: one column per field holding the raw value (str for categorical and text fields,
int or float for numeric ones, list of str for multi-categorical ones), an int 0/1 label
column and, where known, the time column. Missing values stay None: the processor maps them to an
explicit unknown id, so no row is ever dropped here. Data larger than memory, already split, streams
(`load_tabular(..., streaming=True)`): each batch is normalized by the same rules as it is read.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from ..schema import TabularSchema

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_METHODS = ("time", "random", "user_time")
SUPPORTED_FILES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq")
CSV_SEPARATORS = {"csv": ",", "tsv": "\t"}
# Rows normalized at a time in a stream.
STREAM_BATCH_SIZE = 10_000


def load_tabular(
    source: str | os.PathLike | pd.DataFrame | datasets.Dataset | datasets.DatasetDict | datasets.IterableDatasetDict
    | Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
    schema: TabularSchema,
    label_column: str | None = None,
    time_column: str | None = None,
    split: str = "time",
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    splits: Mapping[str, str] | None = None,
    multi_value_separator: str = "|",
    streaming: bool = False,
) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, TabularSchema]:
    """Load any table of clicks as train/validation/test splits that follow the data contract.

    Args:
        source: a CSV / TSV / parquet path, a DataFrame or a `datasets.Dataset`, split here; or data that is
            already split, then only checked and normalized: a mapping of "train", "validation" and "test" to
            their files (a path, a glob such as "data/train-*.parquet", or a list of them; CSV, TSV or parquet),
            a `datasets.DatasetDict` or a `datasets.IterableDatasetDict`.
        schema: the fields; their names must be columns of the data.
        label_column: the column holding the 0/1 click, if not `schema.label_column`; it is renamed
            to `schema.label_column` in the result.
        time_column: the timestamp column, if not `schema.time_column`; kept in the result.
        split: "time" (sorted by time, first rows train), "random" (seeded shuffle) or "user_time"
            (per user, the latest rows are held out); see `split_frame`.
        split_ratios: train/validation/test fractions.
        seed: seed of the "random" split.
        splits: for a split source whose splits are named otherwise, the source's name of each
            of "train", "validation" and "test", e.g. `{"validation": "dev"}`.
        multi_value_separator: how a multi-categorical value given as one string is delimited
            ("Action|Comedy" -> ["Action", "Comedy"]).
        streaming: read the splits as they are iterated, never whole, for data larger than memory: the result
            is a `datasets.IterableDatasetDict` whose batches are checked and normalized as they are read, by the
            same rules, except that numeric fields are float64 (a stream cannot first see that every value is
            whole) and the time column is left out (it only served to split). Needs a split source: a time or
            random split has to hold every row before it can cut.

    Returns:
        The DatasetDict (an IterableDatasetDict when streaming) and the schema (with `time_column` filled in
        when given here).
    """
    label_column = label_column or schema.label_column
    time_column = time_column or schema.time_column
    if time_column != schema.time_column:
        schema = dataclasses.replace(schema, time_column=time_column)

    if streaming:
        return _stream_splits(source, schema, label_column, splits, multi_value_separator), schema
    if isinstance(source, datasets.IterableDatasetDict):
        raise ValueError("An IterableDatasetDict is read as a stream: pass streaming=True.")
    if isinstance(source, Mapping):
        is_files = not isinstance(source, datasets.DatasetDict)
        where = "the split files" if is_files else "the DatasetDict"
        frames = {name: _read_files(source[source_name], schema) if is_files else source[source_name].to_pandas()
                  for name, source_name in _split_names(source, splits, where).items()}
        return _check_split_frames(frames, schema, label_column, multi_value_separator, where), schema
    if splits is not None:
        raise ValueError("splits= only applies to a source that is already split; this one is split by split=.")

    frame, where = _to_frame(source, schema)
    frame = _rename_label(frame, label_column, schema.label_column)
    dataset = frame_to_dataset_dict(
        frame,
        schema,
        split=split,
        split_ratios=split_ratios,
        seed=seed,
        multi_value_separator=multi_value_separator,
        where=where,
    )
    return dataset, schema


def frame_to_dataset_dict(
    frame: pd.DataFrame,
    schema: TabularSchema,
    *,
    split: str,
    split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    sort_columns: Sequence[str] = (),
    multi_value_separator: str = "|",
    where: str = "the data",
) -> datasets.DatasetDict:
    """Check and normalize `frame` against the schema, split it and convert it (the recipes' last step)."""
    frame = prepare_frame(frame, schema, multi_value_separator=multi_value_separator, where=where)
    parts = split_frame(
        frame,
        split,
        time_column=schema.time_column,
        group_column=schema.group_column,
        sort_columns=sort_columns,
        ratios=split_ratios,
        seed=seed,
    )
    logger.info(
        "Split %s by %s: %s.", where, split, ", ".join(f"{name} {len(part)}" for name, part in parts.items())
    )
    return _frames_to_dataset_dict(parts, schema)


def prepare_frame(
    frame: pd.DataFrame,
    schema: TabularSchema,
    *,
    multi_value_separator: str = "|",
    where: str = "the data",
) -> pd.DataFrame:
    """Return the contract columns of `frame` (fields in order, label, time) with normalized values.

    Categorical values become str, multi-categorical ones lists of str (split on
    `multi_value_separator` when given as one string), numeric ones Int64 when every value is
    whole, else float64; nulls become None. Any other column is left out.
    """
    schema.check_columns(frame.columns, where=where)
    time_column = schema.time_column
    if time_column is not None and time_column not in frame.columns:
        raise ValueError(
            f"{where} has no time column {time_column!r}. Its columns are {list(frame.columns)}. "
            "Pass time_column= with the name of the timestamp column, or use a schema without a "
            "time_column and split='random'."
        )
    out = pd.DataFrame(index=frame.index)
    for spec in schema.fields:
        column = frame[spec.name]
        if spec.kind == "categorical":
            out[spec.name] = _as_strings(column, spec.name, where)
        elif spec.kind == "multi_categorical":
            out[spec.name] = _as_string_lists(column, spec.name, multi_value_separator, where)
        else:
            out[spec.name] = _as_numbers(column, spec.name, where)
    out[schema.label_column] = _as_labels(frame[schema.label_column], schema.label_column, where)
    if time_column is not None:
        out[time_column] = frame[time_column]
    dropped = [c for c in frame.columns if c not in out.columns]
    if dropped:
        logger.debug("Columns of %s that are not in the schema, left out: %s.", where, dropped)
    return out


def split_frame(
    frame: pd.DataFrame,
    how: str,
    *,
    time_column: str | None = None,
    group_column: str | None = None,
    sort_columns: Sequence[str] = (),
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> dict[str, pd.DataFrame]:
    """Split rows into train/validation/test.

    * "time": stable sort by the time column, then `sort_columns` (ties keep their input order
      after that); the first `ratios[0]` of rows are train, the next `ratios[1]` validation, the
      rest test. Cut points are `n * cumulative ratio` rounded half up.
    * "random": a seeded permutation cut the same way; each split keeps the input row order.
    * "user_time": for each user (`group_column`) with k rows sorted as in "time", the last
      round(k * ratios[2]) rows go to test and the round(k * ratios[1]) before them to validation,
      rounded half up, so a user with fewer than 5 rows (at 8:1:1) keeps everything in train.
      Each split is then in global time order.

    Raises ValueError on unknown methods, bad ratios, a missing or null time/user column and an
    empty split, saying how many rows there were.
    """
    ratios = _check_ratios(ratios)
    if how not in SPLIT_METHODS:
        raise ValueError(f"Unknown split {how!r}; choose one of {', '.join(SPLIT_METHODS)}.")
    n = len(frame)
    if how == "random":
        order = np.random.default_rng(seed).permutation(n)
        cut1, cut2 = _cut_points(n, ratios)
        positions = [np.sort(order[:cut1]), np.sort(order[cut1:cut2]), np.sort(order[cut2:])]
        parts = [frame.iloc[p] for p in positions]
    else:
        ordered = _sort_by_time(frame, how, time_column, sort_columns)
        if how == "time":
            cut1, cut2 = _cut_points(n, ratios)
            parts = [ordered.iloc[:cut1], ordered.iloc[cut1:cut2], ordered.iloc[cut2:]]
        else:
            parts = _split_per_user(ordered, group_column, ratios)
    for name, part in zip(SPLIT_NAMES, parts):
        if part.empty:
            raise ValueError(
                f"The {name} split is empty: split={how!r} with ratios {tuple(ratios)} left it no row "
                f"out of {n}. Provide more rows or change split_ratios."
            )
    return dict(zip(SPLIT_NAMES, parts))


def read_table(path: str | os.PathLike, schema: TabularSchema | None = None) -> pd.DataFrame:
    """Read a CSV / TSV / parquet file; categorical columns of a CSV are read as text to keep "02134"."""
    path = Path(path)
    kind = _file_kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {str(path)!r}.")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep=CSV_SEPARATORS[kind], dtype={name: "string" for name in _text_columns(schema)})
    except pd.errors.EmptyDataError:
        raise ValueError(f"Cannot read {str(path)!r}: the file is empty. It needs a header row and data rows.") from None
    except (pa.ArrowException, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ValueError(
            f"Cannot read {str(path)!r}: the file is corrupted or not in the format its name says "
            f"({error}). Supported formats are {', '.join(SUPPORTED_FILES)} (CSV in UTF-8)."
        ) from error


def _file_kind(path: str | os.PathLike) -> str:
    """"parquet", "csv" or "tsv", by the file's name; anything else is refused."""
    name = str(path).lower()
    if not name.endswith(SUPPORTED_FILES):
        raise ValueError(
            f"Cannot read {str(path)!r}: unsupported file type. Supported formats are "
            f"{', '.join(SUPPORTED_FILES)}; or load it yourself and pass a DataFrame."
        )
    return "parquet" if name.endswith((".parquet", ".pq")) else "tsv" if name.endswith(".tsv") else "csv"


def _text_columns(schema: TabularSchema | None) -> list[str]:
    """The fields a CSV must read as text, so that "02134" stays "02134"."""
    return [] if schema is None else [f.name for f in schema.fields if f.kind != "numeric"]


def _file_list(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    return [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]


def _read_files(files, schema: TabularSchema) -> pd.DataFrame:
    """One split's files (paths or globs, in order) as one frame."""
    paths = []
    for pattern in _file_list(files):
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matched:
            raise FileNotFoundError(f"No data file matches {pattern!r}.")
        paths += matched
    return pd.concat([read_table(path, schema) for path in paths], ignore_index=True)


def _stream_splits(source: Any, schema: TabularSchema, label_column: str, splits: Mapping[str, str] | None,
                   separator: str) -> datasets.IterableDatasetDict:
    """Each split of a split source as a normalized stream: files through `datasets.load_dataset(..., streaming=True)`,
    a DatasetDict through `to_iterable_dataset`."""
    if not isinstance(source, Mapping):
        raise ValueError(
            f"streaming=True needs data that is already split; got a {type(source).__name__}. A time or random split "
            "has to hold every row before it can cut, which a stream never does: pass a mapping of \"train\", "
            "\"validation\" and \"test\" to their files (e.g. split by date into files first), a DatasetDict or an "
            "IterableDatasetDict; or load this source without streaming."
        )
    is_files = not isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict))
    names = _split_names(source, splits, "the split files" if is_files else f"the {type(source).__name__}")
    if is_files:
        data_files = {name: _file_list(source[source_name]) for name, source_name in names.items()}
        kinds = {_file_kind(path) for paths in data_files.values() for path in paths}
        if len(kinds) > 1:
            raise ValueError(f"The split files mix formats ({', '.join(sorted(kinds))}); give them all in one format.")
        kind = kinds.pop()
        options = {} if kind == "parquet" else {
            "sep": CSV_SEPARATORS[kind], "converters": {name: str for name in _text_columns(schema)}}
        source = datasets.load_dataset("parquet" if kind == "parquet" else "csv", data_files=data_files, streaming=True,
                                       **options)
        names = {name: name for name in SPLIT_NAMES}
    schema = dataclasses.replace(schema, time_column=None)
    features = _features(schema)
    streams = {}
    for name, source_name in names.items():
        split = source[source_name]
        split = split.to_iterable_dataset() if isinstance(split, datasets.Dataset) else split
        streams[name] = split.with_format("arrow").map(
            _normalize_batch, batched=True, batch_size=STREAM_BATCH_SIZE, with_indices=True, features=features,
            fn_kwargs=dict(schema=schema, label_column=label_column, separator=separator, features=features,
                           where=f"the {name} split"),
        ).with_format(None)
    return datasets.IterableDatasetDict(streams)


def _normalize_batch(table: pa.Table, indices: list[int], *, schema: TabularSchema, label_column: str, separator: str,
                     features: datasets.Features, where: str) -> pa.Table:
    """One streamed batch in the data contract, by `prepare_frame`; errors name the row within the split."""
    frame = _rename_label(table.to_pandas().set_axis(indices), label_column, schema.label_column)
    frame = prepare_frame(frame, schema, multi_value_separator=separator, where=where)
    return pa.Table.from_pandas(frame, schema=features.arrow_schema, preserve_index=False)


def _to_frame(source: Any, schema: TabularSchema) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        return source, "the DataFrame"
    if isinstance(source, datasets.Dataset):
        return source.to_pandas(), "the Dataset"
    if isinstance(source, (str, os.PathLike)):
        return read_table(source, schema), repr(str(source))
    raise TypeError(
        f"Unsupported source of type {type(source).__name__}; pass a CSV or parquet path, a pandas "
        "DataFrame, a datasets.Dataset or a datasets.DatasetDict."
    )


def _rename_label(frame: pd.DataFrame, label_column: str, target: str) -> pd.DataFrame:
    if label_column == target:
        return frame
    if label_column not in frame.columns:
        raise ValueError(
            f"The data has no label column {label_column!r}. Its columns are {list(frame.columns)}."
        )
    return frame.drop(columns=[target], errors="ignore").rename(columns={label_column: target})


def _split_names(source: Mapping, splits: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """The source's name of each of train / validation / test (`splits` maps those named otherwise); all must be there."""
    names = {name: (splits or {}).get(name, name) for name in SPLIT_NAMES}
    missing = [
        f"{name} (looked for {source_name!r})" for name, source_name in names.items() if source_name not in source
    ]
    if missing:
        raise ValueError(
            f"There is no split for {', '.join(missing)} in {where}; its splits are {list(source)}. "
            'Pass splits={"validation": "<its name>", ...} to map them.'
        )
    return names


def _check_split_frames(
    frames: Mapping[str, pd.DataFrame], schema: TabularSchema, label_column: str, multi_value_separator: str, where: str
) -> datasets.DatasetDict:
    """Validate splits made in advance. They are normalized together so their types agree."""
    frames = {name: _rename_label(frame, label_column, schema.label_column) for name, frame in frames.items()}
    for name, frame in frames.items():
        if frame.empty:
            raise ValueError(f"The {name} split of {where} is empty (0 rows); every split needs rows.")
    combined = prepare_frame(
        pd.concat(frames, names=["split", "row"]),
        schema,
        multi_value_separator=multi_value_separator,
        where=where,
    )
    return _frames_to_dataset_dict({name: combined.loc[name] for name in SPLIT_NAMES}, schema)


def _frames_to_dataset_dict(parts: Mapping[str, pd.DataFrame], schema: TabularSchema) -> datasets.DatasetDict:
    features = _features(schema, next(iter(parts.values())))
    return datasets.DatasetDict(
        {name: datasets.Dataset.from_pandas(part, features=features, preserve_index=False)
         for name, part in parts.items()}
    )


def _features(schema: TabularSchema, frame: pd.DataFrame | None = None) -> datasets.Features:
    """Explicit types, so that a column that happens to be all None still gets its proper type. A numeric field is
    int64 where the prepared `frame` holds only whole numbers, else float64, as in a stream (no frame), whose
    values are not all seen first; the time column takes the frame's type."""
    features = {}
    for spec in schema.fields:
        if spec.kind == "categorical":
            features[spec.name] = datasets.Value("string")
        elif spec.kind == "multi_categorical":
            features[spec.name] = datasets.List(datasets.Value("string"))
        else:
            is_int = frame is not None and isinstance(frame[spec.name].dtype, pd.Int64Dtype)
            features[spec.name] = datasets.Value("int64" if is_int else "float64")
    features[schema.label_column] = datasets.Value("int64")
    if schema.time_column is not None:
        arrow = pa.Schema.from_pandas(frame[[schema.time_column]], preserve_index=False)
        features[schema.time_column] = datasets.Features.from_arrow_schema(arrow)[schema.time_column]
    return datasets.Features(features)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value, so messages read 4 rather than np.int64(4)."""
    return value.item() if isinstance(value, np.generic) else value


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _as_strings(column: pd.Series, name: str, where: str) -> pd.Series:
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind == "string":  # text already (the common case): only its nulls change, to None
        return column.astype(object).where(column.notna(), None)
    if kind == "integer" and not column.hasnans:
        return column.astype(str).astype(object)

    def to_str(index, value):
        if _is_missing(value):
            return None
        if isinstance(value, (list, tuple, np.ndarray)):
            raise ValueError(
                f"Categorical field {name!r} holds a list {list(value)!r} at row index {_plain(index)!r} of "
                f"{where}. Declare the field with kind='multi_categorical'."
            )
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))  # an int column with nulls was read as float: keep "3", not "3.0"
        return str(value)

    return pd.Series([to_str(i, v) for i, v in column.items()], index=column.index, dtype=object)


def _as_string_lists(column: pd.Series, name: str, separator: str, where: str) -> pd.Series:
    if set(map(type, column)) <= {list, np.ndarray}:  # lists of text already (what Arrow gives): only copied
        lists = [cell.tolist() if type(cell) is np.ndarray else list(cell) for cell in column]
        if pd.api.types.infer_dtype(list(chain.from_iterable(lists)), skipna=False) in ("string", "empty"):
            return pd.Series(lists, index=column.index, dtype=object)

    def to_list(index, value):
        if isinstance(value, (list, tuple, np.ndarray)):
            return [str(v) for v in value if not _is_missing(v)]
        if _is_missing(value):
            return None
        if isinstance(value, str):
            return [part.strip() for part in value.split(separator) if part.strip()]
        raise ValueError(
            f"Multi-categorical field {name!r} has {_plain(value)!r} at row index {_plain(index)!r} "
            f"of {where}; "
            f"expected a list of values or a string delimited by {separator!r} "
            "(set multi_value_separator= to the delimiter used)."
        )

    return pd.Series([to_list(i, v) for i, v in column.items()], index=column.index, dtype=object)


def _as_numbers(column: pd.Series, name: str, where: str) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(column):
        values = []
        for index, value in column.items():
            try:
                values.append(np.nan if _is_missing(value) else float(value))
            except (TypeError, ValueError):
                raise ValueError(
                    f"Numeric field {name!r} has the non-numeric value {_plain(value)!r} at row index "
                    f"{_plain(index)!r} of {where}. Clean that column, or declare the field with "
                    "kind='categorical'."
                ) from None
        column = pd.Series(values, index=column.index, dtype="float64")
    infinite = column[np.isinf(column.to_numpy(dtype="float64", na_value=np.nan))]
    if len(infinite):
        raise ValueError(
            f"Numeric field {name!r} has the infinite value {_plain(infinite.iloc[0])!r} at row index "
            f"{_plain(infinite.index[0])!r} of {where} ({len(infinite)} such rows). Replace infinities with a "
            "finite number, or with NaN for a missing value."
        )
    present = column.dropna()
    if (present == np.floor(present)).all():
        return column.astype("Int64")
    return column.astype("float64")


def _as_labels(column: pd.Series, name: str, where: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        value = _plain(column.iloc[position])
        index = _plain(column.index[position])
        if _is_missing(value):
            raise ValueError(
                f"The label column {name!r} is missing at row index {index!r} of {where} "
                f"({int(bad.sum())} bad row(s) in all). Every row needs a 0/1 label: fill or drop those "
                "rows before loading."
            )
        raise ValueError(
            f"The label column {name!r} must hold 0 or 1, but row index {index!r} of {where} has "
            f"{value!r} ({int(bad.sum())} bad row(s) in all). Binarize it first, e.g. "
            f"df[{name!r}] = (df['rating'] >= 4).astype(int)."
        )
    return values.astype("int64")


def _sort_by_time(
    frame: pd.DataFrame, how: str, time_column: str | None, sort_columns: Sequence[str]
) -> pd.DataFrame:
    if time_column is None:
        raise ValueError(
            f"split={how!r} needs a time column, and there is none; pass time_column= or use split='random'."
        )
    nulls = frame[time_column].isna().to_numpy()
    if nulls.any():
        raise ValueError(
            f"The time column {time_column!r} is missing at row index "
            f"{_plain(frame.index[np.argmax(nulls)])!r} "
            f"({int(nulls.sum())} row(s) in all); a {how!r} split needs a time on every row. Fill those "
            "times or use split='random'."
        )
    return frame.sort_values([time_column, *sort_columns], kind="stable")


def _split_per_user(
    ordered: pd.DataFrame, group_column: str | None, ratios: Sequence[float]
) -> list[pd.DataFrame]:
    if group_column is None:
        raise ValueError("split='user_time' needs the schema's group_column (the user id field).")
    groups = ordered.groupby(group_column, sort=False, dropna=False)
    from_end = groups.cumcount(ascending=False).to_numpy()
    sizes = groups[group_column].transform("size").to_numpy()
    n_test = np.floor(sizes * ratios[2] + 0.5)
    n_validation = np.floor(sizes * ratios[1] + 0.5)
    test = from_end < n_test
    validation = ~test & (from_end < n_test + n_validation)
    return [ordered[~test & ~validation], ordered[validation], ordered[test]]


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or min(ratios) <= 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(
            "split_ratios must be three positive fractions (train, validation, test) summing to 1, "
            f"got {ratios}."
        )
    return ratios


def _cut_points(n: int, ratios: Sequence[float]) -> tuple[int, int]:
    return math.floor(n * ratios[0] + 0.5), math.floor(n * (ratios[0] + ratios[1]) + 0.5)

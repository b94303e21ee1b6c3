"""The tabular schema: which columns are fields, of what kind, and how the prompt names them.

Fields are kept in an ordered *list* everywhere (never a dict) because configs and processor files
are written with sorted keys, and field order is the order of the ID embeddings and of the prompt.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FIELD_KINDS = ("categorical", "multi_categorical", "numeric", "text")


@dataclass
class FieldSpec:
    """One input feature.

    Args:
        name: the column name in the data.
        kind: "categorical" (one value), "multi_categorical" (a list of values, e.g. genres),
            "numeric" (bucketized into `num_buckets` quantile bins for the ID side, printed as is in
            the text) or "text" (free text such as a review or a description: written into the prompt
            whole, cut inside its own span when the prompt is too long; the ID side gets only whether
            the text is present, since one id per distinct text would be a vocabulary of one row each).
        prompt_name: the words used for the field in the prompt ("zip code"); defaults to the name
            with underscores turned into spaces.
        num_buckets: number of quantile bins for a numeric field (32: on UCI Adult, 10 bins cost 0.02 test
            AUC against 32; a value holding >= 1/num_buckets of the rows gets a bin of its own).
    """

    name: str
    kind: str = "categorical"
    prompt_name: str | None = None
    num_buckets: int = 32

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"A field name must be a non-empty string, got {self.name!r}.")
        if self.kind not in FIELD_KINDS:
            raise ValueError(
                f"Field {self.name!r} has kind {self.kind!r}; valid kinds are {', '.join(FIELD_KINDS)}."
            )
        if self.prompt_name is None:
            self.prompt_name = self.name.replace("_", " ")
        if self.kind == "numeric" and self.num_buckets < 1:
            raise ValueError(f"Numeric field {self.name!r} needs num_buckets >= 1, got {self.num_buckets}.")

    @property
    def is_multi_valued(self) -> bool:
        return self.kind == "multi_categorical"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TabularSchema:
    """The ordered fields of a dataset, plus the columns that are not fields.

    Args:
        fields: the input features, in prompt and embedding order.
        label_column: the 0/1 click column.
        time_column: a timestamp column used for temporal splits, if any.
        group_column: the field that groups rows for gAUC (usually the user id), if any.
        name: a short dataset name, used in model cards.
    """

    fields: list[FieldSpec]
    label_column: str = "label"
    time_column: str | None = None
    group_column: str | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.fields = [f if isinstance(f, FieldSpec) else FieldSpec(**f) for f in self.fields]
        if not self.fields:
            raise ValueError("A schema needs at least one field.")
        names = self.field_names
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Field names must be unique; repeated: {duplicates}.")
        if self.label_column in names:
            raise ValueError(f"The label column {self.label_column!r} cannot also be a field.")
        if self.group_column is not None and self.group_column not in names:
            raise ValueError(
                f"group_column {self.group_column!r} is not a field; choose one of {names} or None."
            )

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(f"No field {name!r} in the schema; fields are {self.field_names}.")

    def check_columns(self, columns, where: str = "the data", require_label: bool = True) -> None:
        """Raise a clear error if `columns` lacks a field (or the label)."""
        columns = list(columns)
        missing = [n for n in self.field_names if n not in columns]
        if missing:
            raise ValueError(
                f"{where} has no column for field(s) {missing}. Its columns are {columns}. "
                "Rename the columns or pass a schema whose field names match the data."
            )
        if require_label and self.label_column not in columns:
            raise ValueError(
                f"{where} has no label column {self.label_column!r}. Its columns are {columns}. "
                "Pass label_column= with the name of the 0/1 click column."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [f.to_dict() for f in self.fields],
            "label_column": self.label_column,
            "time_column": self.time_column,
            "group_column": self.group_column,
            "name": self.name,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TabularSchema":
        return cls(**data)

    def to_json_file(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "TabularSchema":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

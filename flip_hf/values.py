"""How a raw cell is read, the same way for IDs and prompts: the one null rule, and numbers."""

from __future__ import annotations

import math

import numpy as np


def is_null(value) -> bool:
    """The one null rule, for every field kind: None, NaN, an empty or whitespace-only string, and a list of values
    (a multi-valued field's cell) with no value that is not null ([], [''], [None, ' ']). A null maps to the unknown
    id, prints as "unknown" and is never counted into a vocabulary; a null element of a non-null list maps to the
    unknown id and prints as "unknown" in its own place."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, np.ndarray)):
        return all(is_null(v) for v in value)
    return False


def as_number(field: str, value) -> float:
    """The value as a float (NaN stays NaN, a null); raises on text and on infinities, which no bucket can hold."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"Numeric field {field!r} got {value!r}, which is not a number. "
            "Convert the column to numbers, or declare the field categorical."
        ) from None
    if math.isinf(number):
        raise ValueError(
            f"Numeric field {field!r} got {value!r}, which is infinite. Replace infinities with a finite number, "
            "or with None / NaN for a missing value (it maps to the unknown id)."
        )
    return number

"""Prompts: a row's field values written into a template, with the character span of each value.

The spans are what later ties every text token back to its field (`token_field_ids`), which FLIP's
field-level masking needs. A prompt comes from a built-in style or from a user template.
"""

from __future__ import annotations

import math
import string

from .schema import FieldSpec, TabularSchema
from .values import as_number, is_null

PROMPT_STYLES = ("natural", "compact")
# How a null value reads in a prompt.
UNKNOWN_TEXT = "unknown"


def _segments_for_style(schema: TabularSchema, style: str) -> list[tuple[str, int | None]]:
    """The built-in templates as (literal text, field index) segments.

    natural (the paper): "user id is 196. gender is male. ... genres are comedy, drama."
    compact (fewer tokens): "user id: 196 gender: male ... genres: comedy, drama"
    """
    segments: list[tuple[str, int | None]] = []
    for index, spec in enumerate(schema.fields):
        lead = " " if index else ""
        if style == "natural":
            verb = "are" if spec.is_multi_valued else "is"
            segments += [(f"{lead}{spec.prompt_name} {verb} ", None), ("", index), (".", None)]
        else:
            segments += [(f"{lead}{spec.prompt_name}: ", None), ("", index)]
    return segments


def _segments_for_template(schema: TabularSchema, template: str) -> list[tuple[str, int | None]]:
    """Parse a user template such as "User {user_id} ({gender}) rated {title}." into segments."""
    names = schema.field_names
    segments: list[tuple[str, int | None]] = []
    seen: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if literal:
            segments.append((literal, None))
        if name is None:
            continue
        if name not in names:
            raise ValueError(
                f"prompt_template names {{{name}}}, which is not a field. Fields are {names}; "
                "use their names in braces, e.g. '{user_id}'."
            )
        if spec or conversion:
            raise ValueError(f"prompt_template: write {{{name}}} without a format spec or conversion.")
        if name in seen:
            raise ValueError(f"prompt_template uses {{{name}}} twice; each field must appear exactly once.")
        seen.append(name)
        segments.append(("", names.index(name)))
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(
            f"prompt_template leaves out field(s) {missing}. Every field must appear once, or the text "
            "side never sees it; add them, or drop them from the schema."
        )
    return segments


class PromptTemplate:
    """Literal pieces and one slot per field, in prompt order.

    Args:
        schema: the fields.
        style: "natural" (the paper's "<field> is <value>.") or "compact" ("<field>: <value>").
        template: a user template with one `{field_name}` per field; overrides the style.
    """

    def __init__(self, schema: TabularSchema, style: str = "natural", template: str | None = None):
        if style not in PROMPT_STYLES:
            raise ValueError(f"Unknown prompt_style {style!r}; valid styles: {', '.join(PROMPT_STYLES)}.")
        self.fields = schema.fields
        self.segments = _segments_for_template(schema, template) if template is not None else _segments_for_style(schema, style)

    def render(self, values: list[str]) -> tuple[str, list[tuple[int, int]]]:
        """Fill the template with each field's value text; return the text and each value's character span."""
        parts, spans, position = [], [None] * len(values), 0
        for literal, field_index in self.segments:
            if field_index is None:
                parts.append(literal)
                position += len(literal)
            else:
                value = values[field_index]
                spans[field_index] = (position, position + len(value))
                parts.append(value)
                position += len(value)
        return "".join(parts), spans

    def render_row(self, row: dict) -> str:
        return self.render([value_text(spec, row[spec.name]) for spec in self.fields])[0]

    def placeholder_text(self) -> str:
        """The prompt with a "{field}" placeholder for each value."""
        return self.render([f"{{{spec.name}}}" for spec in self.fields])[0]


def value_text(spec: FieldSpec, value) -> str:
    """How one cell reads in a prompt: nulls as UNKNOWN_TEXT, lists joined by ", ", whole numbers without ".0"."""
    if is_null(value):
        return UNKNOWN_TEXT
    if spec.is_multi_valued:
        if isinstance(value, str):
            return value
        return ", ".join(UNKNOWN_TEXT if is_null(v) else str(v) for v in value)
    if spec.kind == "numeric":
        number = as_number(spec.name, value)
        if math.isnan(number):
            return UNKNOWN_TEXT
        return str(int(number)) if number.is_integer() else f"{number:.6g}"
    return str(value)

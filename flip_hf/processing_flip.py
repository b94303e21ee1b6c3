"""FlipProcessor: one tabular row in, both modalities out.

The processor owns everything needed to turn raw field values into model inputs:
* the schema (ordered fields),
* per-field vocabularies fit on the training split (FuxiCTR style) in one pass over its batches, so a
  streamed split that never fits in memory works too, with reserved ids 0 = padding, 1 = unknown (unseen, rare
  or null), 2 = mask,
* quantile bucket boundaries for numeric fields, and each one's training range, which place a number inside
  its bucket (`numeric_positions`, for the piecewise-linear encoding),
* the prompt template (`flip_hf.prompting`) and the tokenizer.

Text and IDs come from the same row, and the tokenizer's offset mapping ties every value token
back to its field (`token_field_ids`), which is what field-level masking needs.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import unicodedata
from collections import Counter
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
from transformers import AutoTokenizer
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PROCESSOR_NAME as PROCESSOR_FILE

from .configuration_flip import NO_FIELD, NUM_RESERVED_IDS, PAD_ID, UNKNOWN_ID
from .loading import check_source
from .prompting import PromptTemplate, value_text
from .schema import FieldSpec, TabularSchema
from .values import as_number, is_null

logger = logging.getLogger(__name__)


# The one vocabulary entry of a free-text field: its ID says whether a text is there, nothing more.
TEXT_PRESENT = "<text>"
# Numbers a numeric field keeps for its quantiles: all of them up to this many, else a uniform sample of this many.
QUANTILE_SAMPLE_SIZE = 2**22
# Rows read at a time by `fit` from a `datasets.Dataset` or `IterableDataset`.
FIT_BATCH_SIZE = 10_000


class FlipProcessor(ProcessorMixin):
    """Schema + vocabularies + prompt template + tokenizer, saved as JSON next to the tokenizer.

    Example:
        >>> processor = FlipProcessor(tokenizer, schema)
        >>> processor.fit(dataset["train"])
        >>> encoded = dataset.map(processor, batched=True, remove_columns=dataset["train"].column_names)

    Args:
        tokenizer: a *fast* tokenizer (offsets are needed to align tokens with fields).
        schema: a `TabularSchema` (or its dict).
        prompt_style: "natural" (the paper's "<field> is <value>.") or "compact".
        prompt_template: a user template with one `{field_name}` per field; overrides the style.
        max_length: token budget; long values are cut inside their own span, never a whole field.
        min_frequency: values seen fewer times in training map to the unknown id.
        max_vocab_size: keep at most this many values per field, the most frequent (the others map to the unknown
            id, as rare ones do); None keeps every value that passes `min_frequency`.
        vocabularies, bucket_boundaries, numeric_ranges, max_values: fitted state, set by `fit` (and on load).
            `numeric_ranges` holds [min, max] seen in training per numeric field (None for other fields).
    """

    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer=None,
        schema: TabularSchema | dict | None = None,
        prompt_style: str = "natural",
        prompt_template: str | None = None,
        max_length: int = 128,
        min_frequency: int = 1,
        max_vocab_size: int | None = None,
        vocabularies: list[list[str]] | None = None,
        bucket_boundaries: list[list[float] | None] | None = None,
        numeric_ranges: list[list[float] | None] | None = None,
        max_values: list[int] | None = None,
        **kwargs,
    ):
        if tokenizer is None:
            raise ValueError("FlipProcessor needs a tokenizer, e.g. AutoTokenizer.from_pretrained(<plm>).")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"FlipProcessor needs a fast tokenizer (offset mappings align tokens with fields); got "
                f"{type(tokenizer).__name__}. Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if schema is None:
            raise ValueError("FlipProcessor needs a schema: a TabularSchema listing the fields.")
        if max_vocab_size is not None and max_vocab_size < 1:
            raise ValueError(f"max_vocab_size must be at least 1 (or None for no cap), got {max_vocab_size}.")
        super().__init__(tokenizer, **kwargs)
        self.schema = schema if isinstance(schema, TabularSchema) else TabularSchema.from_dict(schema)
        self.prompt = PromptTemplate(self.schema, prompt_style, prompt_template)
        self.prompt_style = prompt_style
        self.prompt_template = prompt_template
        self.max_length = max_length
        self.min_frequency = min_frequency
        self.max_vocab_size = max_vocab_size
        self.vocabularies = vocabularies
        self.bucket_boundaries = bucket_boundaries
        self.numeric_ranges = numeric_ranges
        self.max_values = max_values
        self.num_fit_rows: int | None = None  # rows the last fit read (not saved): a stream's length, counted nowhere else
        self._build_lookups()
        self._segment_plan = None  # decided on first use, see _plan_segments

    # ------------------------------------------------------------------ state
    @property
    def fields(self) -> list[FieldSpec]:
        return self.schema.fields

    @property
    def is_fitted(self) -> bool:
        return self.vocabularies is not None

    def _build_lookups(self) -> None:
        self._lookups = None
        if self.vocabularies is None:
            return
        if len(self.vocabularies) != len(self.fields):
            raise ValueError(
                f"The processor has {len(self.vocabularies)} vocabularies for {len(self.fields)} fields; "
                "re-run fit() on the training split."
            )
        self._lookups = [
            {value: index + NUM_RESERVED_IDS for index, value in enumerate(vocab)} for vocab in self.vocabularies
        ]

    def vocabulary_fingerprint(self) -> str:
        """A digest of every id this processor assigns: fields, vocabularies, numeric buckets and ranges, slots. A
        model stores the fingerprint of the processor it was built for, so a mismatched pair is caught on load.
        (Processors saved before numeric ranges existed keep their fingerprint.) The fit options (`min_frequency`,
        `max_vocab_size`) are not in it: the vocabularies they produced are, and they alone decide the ids."""
        self._require_fitted()
        state = [self.field_infos(), self.vocabularies, self.bucket_boundaries]
        if any(value_range is not None for value_range in self.numeric_ranges or []):
            state.append(self.numeric_ranges)
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]

    def check_matches(self, config) -> None:
        """Raise if this processor assigns other ids than the model (`config`, a FlipConfig) was trained on."""
        mine = [(f["name"], f["vocab_size"], f["num_slots"]) for f in self.field_infos()]
        theirs = [(f["name"], f["vocab_size"], f.get("num_slots", 1)) for f in config.fields]
        expected = getattr(config, "vocabulary_fingerprint", None)
        if mine != theirs or (expected is not None and expected != self.vocabulary_fingerprint()):
            raise ValueError(
                "This FlipProcessor assigns other ids than the model was trained with "
                f"(model: fields {theirs}, vocabulary fingerprint {expected}; processor: fields {mine}, fingerprint "
                f"{self.vocabulary_fingerprint()}). Load the processor saved with the model: "
                "AutoProcessor.from_pretrained(<the model's folder or repo>)."
            )

    def field_infos(self) -> list[dict[str, Any]]:
        """What the model needs per field, in order: name, kind, vocabulary size, slots."""
        self._require_fitted()
        return [
            {
                "name": spec.name,
                "kind": spec.kind,
                "vocab_size": len(vocab) + NUM_RESERVED_IDS,
                "num_slots": slots,
            }
            for spec, vocab, slots in zip(self.fields, self.vocabularies, self.max_values)
        ]

    @property
    def num_feature_slots(self) -> int:
        self._require_fitted()
        return sum(self.max_values)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("This FlipProcessor is not fitted yet: call processor.fit(dataset['train']) first.")

    def to_dict(self) -> dict[str, Any]:
        output = {
            "processor_class": self.__class__.__name__,
            "schema": self.schema.to_dict(),
            "prompt_style": self.prompt_style,
            "prompt_template": self.prompt_template,
            "max_length": self.max_length,
            "min_frequency": self.min_frequency,
            "max_vocab_size": self.max_vocab_size,
            "vocabularies": self.vocabularies,
            "bucket_boundaries": self.bucket_boundaries,
            "numeric_ranges": self.numeric_ranges,
            "max_values": self.max_values,
        }
        if getattr(self, "auto_map", None):
            output["auto_map"] = self.auto_map
        return output

    # -------------------------------------------------------------------- fit
    def fit(self, train_split) -> "FlipProcessor":
        """Build vocabularies, numeric bins and multi-value slots from the training split only, in one pass.

        `train_split` is a dict of lists (or a DataFrame), a `datasets.Dataset`, or a streaming
        `datasets.IterableDataset` (`load_tabular(..., streaming=True)`); the datasets are read `FIT_BATCH_SIZE` rows
        at a time, so a split larger than memory fits in one pass. Values are counted exactly. A numeric field's
        bucket boundaries are the quantiles of all its numbers while there are at most `QUANTILE_SAMPLE_SIZE`,
        beyond that of a uniform sample of that many (reservoir sampling with a fixed seed, so a refit gives the
        same boundaries); its range is the exact minimum and maximum. `num_fit_rows` holds the rows read.
        """
        statistics = [_FieldStatistics(spec) for spec in self.fields]
        num_rows = 0
        batches = train_split.iter(batch_size=FIT_BATCH_SIZE) if hasattr(train_split, "iter") else [train_split]
        for batch in batches:
            self.schema.check_columns(batch.keys(), where="The training split", require_label=False)
            self._check_single_values(batch)
            for field in statistics:
                field.update(batch[field.spec.name])
            num_rows += len(batch[self.fields[0].name])
        if num_rows == 0:
            raise ValueError("The training split is empty: fit() needs at least one row.")
        fitted = [field.fitted(self.min_frequency, self.max_vocab_size) for field in statistics]
        self.vocabularies, self.bucket_boundaries, self.numeric_ranges, self.max_values = map(list, zip(*fitted))
        self.num_fit_rows = num_rows
        self._build_lookups()
        logger.info(
            "Fitted FlipProcessor on %d rows: %s",
            num_rows,
            ", ".join(f"{s.name}={len(v) + NUM_RESERVED_IDS}" for s, v in zip(self.fields, self.vocabularies)),
        )
        return self

    # ----------------------------------------------------------------- encode
    def encode_ids(self, batch: dict[str, list]) -> list[list[int]]:
        """`feature_ids` rows: one id per single-valued field, `max_values` padded ids per multi-valued one.

        Encodes a column at a time rather than a row at a time, since this runs over every row of every split:
        each distinct value of a column is read once and numpy spreads the ids over the rows. The ids are those
        of the per-value rule: a null is the unknown id, any other value the vocabulary id of `str(value)`
        (unseen: the unknown id), a number its bucket.
        """
        return self._id_array(batch, self._checked_rows(batch)).tolist()

    def _id_array(self, batch: dict[str, list], num_rows: int) -> np.ndarray:
        """`encode_ids` as a (rows, slots) array, for a batch already checked (`_checked_rows`)."""
        blocks = []
        for field_index, spec in enumerate(self.fields):
            column = batch[spec.name]
            if spec.kind == "numeric":
                ids = self._bucket_ids(field_index, column)
            elif spec.is_multi_valued:
                ids = self._multi_ids(field_index, column)
            elif spec.kind == "text":
                ids = np.where(_value_ids(column, {})[1], UNKNOWN_ID, NUM_RESERVED_IDS)  # only presence counts
            else:
                ids = _value_ids(column, self._lookups[field_index])[0]
            blocks.append(ids.reshape(num_rows, self.max_values[field_index]))
        return np.concatenate(blocks, axis=1)

    def _bucket_ids(self, field_index: int, column) -> np.ndarray:
        """`bisect_right` bucket of each number (after the reserved ids); the unknown id for nulls and NaN."""
        numbers, buckets = self._buckets(field_index, column)
        ids = NUM_RESERVED_IDS + buckets
        ids[np.isnan(numbers)] = UNKNOWN_ID
        return ids

    def _buckets(self, field_index: int, column) -> tuple[np.ndarray, np.ndarray]:
        """Each value as a float (NaN for nulls) and its `bisect_right` bucket index."""
        numbers = _as_numbers(self.fields[field_index].name, column)
        boundaries = np.asarray(self.bucket_boundaries[field_index], dtype=np.float64)
        return numbers, np.searchsorted(boundaries, numbers, side="right")

    def encode_positions(self, batch: dict[str, list]) -> list[list[float]]:
        """`numeric_positions` rows: per numeric field, where the number lies inside its bucket, in [0, 1].

        A bucket id alone makes every value of a bucket look the same; the position t = (x - lo) / (hi - lo) lets
        the model interpolate between the bucket's embedding and the next one's (`FlipConfig.numeric_encoding`).
        lo and hi are the bucket's boundaries, the training minimum and maximum at the ends. t is clamped to
        [0, 1], and 0 for a null, a bucket of zero width, and a processor saved before ranges were fitted.
        """
        return self._position_array(batch, self._checked_rows(batch)).tolist()

    def _position_array(self, batch: dict[str, list], num_rows: int) -> np.ndarray:
        """`encode_positions` as a (rows, numeric fields) array, for a batch already checked (`_checked_rows`)."""
        columns = []
        for field_index, spec in enumerate(self.fields):
            if spec.kind != "numeric":
                continue
            value_range = self.numeric_ranges[field_index] if self.numeric_ranges is not None else None
            if value_range is None:
                columns.append(np.zeros(num_rows))
                continue
            numbers, buckets = self._buckets(field_index, batch[spec.name])
            knots = np.array([value_range[0], *self.bucket_boundaries[field_index], value_range[1]])
            lo, width = knots[buckets], np.diff(knots)[buckets]
            t = np.where(width > 0, (numbers - lo) / np.where(width > 0, width, 1.0), 0.0)
            columns.append(np.clip(np.nan_to_num(t), 0.0, 1.0))  # a null's NaN becomes 0
        return np.stack(columns, axis=1) if columns else np.zeros((num_rows, 0))

    def _multi_ids(self, field_index: int, column) -> np.ndarray:
        """(rows, slots) ids: each row's value ids in order, cut to the fitted slots, then padding. A null row
        (None, [], [''], [None, ' ']) gets one unknown id, like any null."""
        name, slots = self.fields[field_index].name, self.max_values[field_index]
        values, lengths = _flatten(name, column)
        ids, null = _value_ids(values, self._lookups[field_index])
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        null_rows = ~_rows_with_values(lengths, null)
        out = np.full((len(lengths), slots), PAD_ID, dtype=np.int64)
        kept = position < slots
        out[row_of[kept], position[kept]] = ids[kept]
        out[null_rows] = PAD_ID
        out[null_rows, 0] = UNKNOWN_ID
        for row in np.flatnonzero((lengths > slots) & ~null_rows):
            logger.warning(
                "Field %r has %d values in a row but the processor was fit with %d slots; the last %d values "
                "are left out of the ID side (the text keeps them). Refit on data that includes such rows.",
                name, int(lengths[row]), slots, int(lengths[row]) - slots,
            )
        return out

    def render_text(self, row: dict[str, Any]) -> str:
        """The prompt of one row (handy for model cards and debugging)."""
        return self.prompt.render_row(row)

    def template_text(self) -> str:
        """The prompt with a "{field}" placeholder for each value: the template, whatever the prompt style."""
        return self.prompt.placeholder_text()

    def encode_text(self, batch: dict[str, list]) -> dict[str, list[list[int]]]:
        """Tokenize the prompts; `token_field_ids` maps each token to its field (-1: template/special)."""
        return self._text_columns(batch, self._check_batch(batch, require_label=False))

    def _text_columns(self, batch: dict[str, list], num_rows: int) -> dict[str, list[list[int]]]:
        """`encode_text`, for a batch already checked."""
        value_texts = [[value_text(spec, v) for v in batch[spec.name]] for spec in self.fields]
        rows = [[column[i] for column in value_texts] for i in range(num_rows)]
        if self._segment_plan is None:
            self._segment_plan = self._plan_segments(rows[:32])
        if self._segment_plan:
            encoded = self._encode_by_segments(value_texts, num_rows)
        else:
            encoded = self._encode_whole(rows)
        input_ids, token_field_ids = [], []
        truncated_rows = 0
        for i, (ids, field_ids) in enumerate(encoded):
            if len(ids) > self.max_length:
                ids, offsets, spans = self._truncate_values(rows[i], len(ids))
                field_ids = _align_tokens(offsets, spans)
                truncated_rows += 1
            missing = set(range(len(self.fields))) - set(field_ids)
            if missing:
                names = [self.fields[f].name for f in sorted(missing)]
                raise ValueError(
                    f"Row {i}: no token carries field(s) {names} (value(s) {[rows[i][f] for f in sorted(missing)]!r}). "
                    "The template glues them to neighbouring text; put a space or punctuation around each field."
                )
            input_ids.append(ids)
            token_field_ids.append(field_ids)
        if truncated_rows:
            logger.warning(
                "Cut long values in %d of %d rows to fit max_length=%d (every field keeps at least one token); "
                "raise max_length or use prompt_style='compact' to keep them whole.",
                truncated_rows, num_rows, self.max_length,
            )
        return {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "token_field_ids": token_field_ids,
        }

    def _encode_whole(self, rows: list[list[str]]):
        """Exact path for any fast tokenizer: tokenize each prompt, align tokens through offsets."""
        rendered = [self.prompt.render(values) for values in rows]
        encoded = self.tokenizer(
            [text for text, _ in rendered], add_special_tokens=True, return_offsets_mapping=True,
            return_attention_mask=False, truncation=False,
        )
        for (_, spans), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
            yield list(ids), _align_tokens(offsets, spans)

    def _plan_segments(self, sample_rows: list[list[str]]):
        """Token ids of the template pieces, if prompts can be tokenized piece by piece (else False).

        That holds for WordPiece with BERT pre-tokenization when every field value is bounded by
        whitespace or punctuation: the pieces then tokenize exactly as the whole prompt does, and
        each distinct value is tokenized once. A sample is checked against the exact path.
        """
        backend = self.tokenizer.backend_tokenizer
        if type(backend.pre_tokenizer).__name__ != "BertPreTokenizer" or type(backend.model).__name__ != "WordPiece":
            return False
        pieces = self.prompt.segments
        for position, (literal, field) in enumerate(pieces):
            if field is None:
                continue
            before = pieces[position - 1][0] if position > 0 else ""
            after = pieces[position + 1][0] if position + 1 < len(pieces) else ""
            if (position > 0 and not _is_boundary(before[-1:])) or (position + 1 < len(pieces) and not _is_boundary(after[:1])):
                return False
        literal_ids = self.tokenizer([lit for lit, f in pieces if f is None], add_special_tokens=False)["input_ids"]
        literal_ids = iter(literal_ids)
        plan = [(next(literal_ids), None) if f is None else (None, f) for _, f in pieces]
        empty = self.tokenizer("")["input_ids"]
        self._special_prefix, self._special_suffix = empty[:1] if len(empty) == 2 else [], empty[1:] if len(empty) == 2 else empty
        self._value_cache = [dict() for _ in self.fields]
        self._segment_plan = plan
        if list(self._encode_by_segments([list(c) for c in zip(*sample_rows)], len(sample_rows))) != list(self._encode_whole(sample_rows)):
            logger.info("Piecewise tokenization differs from whole-prompt tokenization here; using the exact path.")
            return False
        return plan

    def _encode_by_segments(self, value_texts: list[list[str]], num_rows: int):
        for cache, texts in zip(self._value_cache, value_texts):
            if len(cache) > 1_000_000:
                cache.clear()
            new = list({text for text in texts if text not in cache})
            if new:
                cache.update(zip(new, self.tokenizer(new, add_special_tokens=False)["input_ids"]))
        prefix, suffix = self._special_prefix, self._special_suffix
        for i in range(num_rows):
            ids, field_ids = list(prefix), [NO_FIELD] * len(prefix)
            for literal_ids, field in self._segment_plan:
                if field is None:
                    ids += literal_ids
                    field_ids += [NO_FIELD] * len(literal_ids)
                else:
                    value_ids = self._value_cache[field][value_texts[field][i]]
                    ids += value_ids
                    field_ids += [field] * len(value_ids)
            ids += suffix
            field_ids += [NO_FIELD] * len(suffix)
            yield ids, field_ids

    def _truncate_values(self, values: list[str], length: int):
        """Shorten the longest values token by token until the prompt fits; never drop a field."""
        values = list(values)
        for _ in range(8):
            value_tokens = self.tokenizer(values, add_special_tokens=False, return_offsets_mapping=True)
            kept = [len(ids) for ids in value_tokens["input_ids"]]
            excess = length - self.max_length
            if excess > sum(k - 1 for k in kept):
                raise ValueError(
                    f"max_length={self.max_length} is too small for this prompt: even with one token per value it "
                    f"needs {length - sum(k - 1 for k in kept)} tokens. Raise max_length, use prompt_style='compact', "
                    "or a shorter template."
                )
            for _ in range(excess):
                longest = max(range(len(kept)), key=kept.__getitem__)
                kept[longest] -= 1
            for f, offsets in enumerate(value_tokens["offset_mapping"]):
                if kept[f] < len(offsets):
                    values[f] = values[f][: offsets[kept[f] - 1][1]]
            text, spans = self.prompt.render(values)
            encoded = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
            length = len(encoded["input_ids"])
            if length <= self.max_length:
                return encoded["input_ids"], encoded["offset_mapping"], spans
        raise ValueError(f"Could not fit a prompt into max_length={self.max_length}; raise max_length.")

    def __call__(self, batch: dict[str, list] | None = None, text: bool = True, return_tensors: str | None = None, **kwargs):
        """Encode a batch (dict of lists, as `Dataset.map(batched=True)` passes) or a single row dict.

        Returns `feature_ids`, `numeric_positions` when the schema has numeric fields, and with `text=True`
        also `input_ids`, `attention_mask` and `token_field_ids`; plus `labels` when the label column is
        present. With `return_tensors="pt"` the result is padded into tensors; with `text=False` as well, every
        row has the same width, and the arrays become tensors at once, without a pass over rows.
        """
        if batch is None:
            raise ValueError("Call the processor with a batch: a dict of lists, or one row as a dict.")
        if self._is_single_row(batch):
            batch = {key: [value] for key, value in batch.items()}
        num_rows = self._checked_rows(batch)  # once per batch: every column below reads the same checked batch
        output: dict[str, Any] = {"feature_ids": self._id_array(batch, num_rows)}
        if any(spec.kind == "numeric" for spec in self.fields):
            output["numeric_positions"] = self._position_array(batch, num_rows)
        if text:
            output.update(self._text_columns(batch, num_rows))
        label_column = self.schema.label_column
        if label_column in batch:
            output["labels"] = _check_labels(batch[label_column], label_column)
        if return_tensors is not None and not text:
            from .padding import stack_columns  # imports torch: only when tensors are asked for

            return stack_columns(output)
        output = {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in output.items()}
        if return_tensors is not None:
            from .padding import pad_features

            output = pad_features([dict(zip(output, row)) for row in zip(*output.values())], self.tokenizer.pad_token_id)
        return output

    def _is_single_row(self, batch: dict[str, Any]) -> bool:
        spec = self.fields[0]
        value = batch.get(spec.name)
        if spec.is_multi_valued:
            return not (isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (list, tuple)) for v in value))
        return not isinstance(value, (list, tuple))

    def _checked_rows(self, batch: dict[str, list]) -> int:
        """The number of rows of a batch to encode for the ID side, after checking the processor and the batch."""
        self._require_fitted()
        return self._check_batch(batch, require_label=False)

    def _check_batch(self, batch: dict[str, list], require_label: bool) -> int:
        self.schema.check_columns(batch.keys(), where="The input batch", require_label=require_label)
        lengths = {spec.name: len(batch[spec.name]) for spec in self.fields}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The fields of a batch need one value per row each; got column lengths {lengths}.")
        self._check_single_values(batch)
        return len(batch[self.fields[0].name])

    def _check_single_values(self, columns) -> None:
        """A list where a field holds one value per row would be encoded as its string: refuse it, naming the field.

        Every batch passes here, so a column's value types are checked, and its values only when one type is wrong.
        """
        containers = (list, tuple, set, dict, np.ndarray)
        for spec in self.fields:
            if spec.is_multi_valued:
                continue
            column = columns[spec.name]
            if any(issubclass(kind, containers) for kind in set(map(type, column))):
                value = next(v for v in column if isinstance(v, containers))
                raise ValueError(
                    f"Field {spec.name!r} ({spec.kind}) holds one value per row but got {value!r}. Pass a single "
                    "value, or declare the field kind='multi_categorical'."
                )

    # ------------------------------------------------------------------- I/O
    @classmethod
    def from_text_pretrained(cls, plm_name_or_path: str, schema: TabularSchema, **kwargs) -> "FlipProcessor":
        """A processor whose tokenizer comes from a PLM (Hub id or local path)."""
        tokenizer = AutoTokenizer.from_pretrained(plm_name_or_path)
        return cls(tokenizer=tokenizer, schema=schema, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "FlipProcessor":
        """As `ProcessorMixin.from_pretrained`; a local folder without a processor_config.json is named as such."""
        check_source(pretrained_model_name_or_path, (PROCESSOR_FILE,), "FlipProcessor",
                     "Save the fitted processor next to the model: processor.save_pretrained(folder).")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "token_field_ids", "feature_ids", "numeric_positions"]


def _check_multi_value(field: str, values) -> None:
    if isinstance(values, str) and not is_null(values):
        raise ValueError(
            f"Multi-valued field {field!r} got the string {values!r}; it needs a list of values. "
            "Split it first (load_tabular(..., multi_value_separator='|') does this)."
        )


def _value_ids(values, lookup: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per value: `lookup[str(value)]` (the unknown id if unseen or null) and `is_null(value)`."""
    codes, texts, null = _distinct_values(values)
    ids = np.array([lookup.get(text, UNKNOWN_ID) for text in texts], dtype=np.int64)[codes]
    ids[null] = UNKNOWN_ID
    return ids, null


def _distinct_values(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`codes` and `texts` such that `texts[codes[i]] == str(values[i])`, and `is_null(values[i])` per value.

    Each distinct text is then handled once (looked up, counted), and `is_null` is asked only of the values whose
    text a null can have: 196 and "196" share a text, None and "None" are told apart.
    """
    codes, texts = pd.factorize(np.array(list(map(str, values)), dtype=object))
    maybe_null = np.array([_may_be_null(text) for text in texts], dtype=bool)[codes]
    null = np.zeros(len(codes), dtype=bool)
    checked = np.flatnonzero(maybe_null)
    null[checked] = [is_null(values[i]) for i in checked]
    return codes, texts, null


def _flatten(field: str, column) -> tuple[list, np.ndarray]:
    """A multi-valued column's values in row order, and each row's number of values (none for a null cell)."""
    rows = column if set(map(type, column)) <= {list} else [_other_cell(field, values) for values in column]
    return list(chain.from_iterable(rows)), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))


def _rows_with_values(lengths: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Which rows of a flattened multi-valued column hold a value that is not null (the others are null rows)."""
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    return np.bincount(row_of[~null], minlength=len(lengths)) > 0


class _FieldStatistics:
    """What `fit` learns of one field, a batch at a time: value counts and the most values in a row, or a numeric
    field's numbers (all, or a uniform sample: `_Reservoir`) and exact range."""

    def __init__(self, spec: FieldSpec):
        self.spec = spec
        self.counts: Counter = Counter()
        self.longest = 1
        self.numbers = _Reservoir(QUANTILE_SAMPLE_SIZE) if spec.kind == "numeric" else None
        self.low, self.high = np.inf, -np.inf

    def update(self, column) -> None:
        spec = self.spec
        if spec.kind == "text":  # one id per distinct text would be a vocabulary of single rows
            return
        if spec.kind == "numeric":
            numbers = _as_numbers(spec.name, column)
            numbers = numbers[~np.isnan(numbers)]
            if len(numbers):
                self.numbers.add(numbers)
                self.low, self.high = min(self.low, numbers.min()), max(self.high, numbers.max())
            return
        values, lengths = _flatten(spec.name, column) if spec.is_multi_valued else (column, None)
        codes, texts, null = _distinct_values(values)
        counts = np.bincount(codes[~null], minlength=len(texts))
        counted = counts > 0
        self.counts.update(dict(zip(texts[counted].tolist(), counts[counted].tolist())))
        if lengths is not None:
            self.longest = max(self.longest, int(lengths[_rows_with_values(lengths, null)].max(initial=0)))

    def fitted(self, min_frequency: int, max_vocab_size: int | None) -> tuple[list[str], list | None, list | None, int]:
        """(vocabulary, bucket boundaries, [min, max], slots) of the field."""
        spec = self.spec
        if spec.kind == "text":
            return [TEXT_PRESENT], None, None, 1
        if spec.kind == "numeric":
            numbers = self.numbers.values()
            if not len(numbers):
                return ["bucket 0"], [], None, 1
            edges = _bucket_edges(numbers, spec.num_buckets)
            vocabulary = [f"bucket {i}" for i in range(len(edges) + 1)]
            return vocabulary, [float(e) for e in edges], [float(self.low), float(self.high)], 1
        # most frequent first; ties broken by value so the vocabulary is deterministic
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return [value for value, count in ranked if count >= min_frequency][:max_vocab_size], None, None, self.longest


def _bucket_edges(numbers: np.ndarray, num_buckets: int) -> np.ndarray:
    """Quantile bucket boundaries, where a value that alone holds at least 1/num_buckets of the rows (a point mass:
    Adult's capital-gain is 0 in 92% of rows) gets a bucket of its own and the other buckets are quantiles of the
    other values. Plain quantiles would all land on the point mass, leaving the whole field one bucket and its
    signal (a non-zero gain) unseen. A field without point masses gets exactly its quantiles."""
    values, counts = np.unique(numbers, return_counts=True)
    heavy = counts * num_buckets >= len(numbers)
    rest = numbers[~np.isin(numbers, values[heavy])]
    budget = max(num_buckets - 2 * int(heavy.sum()), 1)  # a point mass takes up to two boundaries: itself, the next value
    quantiles = np.quantile(rest, np.linspace(0, 1, budget + 1)[1:-1]) if len(rest) else np.empty(0)
    return np.unique(np.concatenate([values[heavy], values[1:][heavy[:-1]], quantiles]))


class _Reservoir:
    """Every number added while there are at most `size`, then a uniform sample of `size` of them: Algorithm R, the
    i-th number (from 0) replacing a random kept one with probability size / (i + 1), drawn with a fixed seed."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seen = size, 0
        self.chunks: list[np.ndarray] = []
        self.sample: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)

    def add(self, numbers: np.ndarray) -> None:
        if self.sample is None:
            self.chunks.append(numbers)
            self.seen += len(numbers)
            if self.seen <= self.size:
                return
            numbers = np.concatenate(self.chunks)
            self.sample, numbers, self.seen, self.chunks = numbers[: self.size].copy(), numbers[self.size :], self.size, []
        slots = self.rng.integers(0, np.arange(self.seen, self.seen + len(numbers)) + 1)
        kept = slots < self.size
        self.sample[slots[kept]] = numbers[kept]
        self.seen += len(numbers)

    def values(self) -> np.ndarray:
        return self.sample if self.sample is not None else np.concatenate([np.empty(0), *self.chunks])


def _may_be_null(text: str) -> bool:
    """Whether a value printed as `text` can be null: None, NaN, a blank string, a list / tuple / array of nulls."""
    return text in ("None", "nan") or not text.strip() or text[0] in "[("


def _as_numbers(field: str, values) -> np.ndarray:
    """Each value as a float, NaN for a null; raises as `as_number` does on text and infinities."""
    if set(map(type, values)) <= {int, float, type(None)}:  # what Arrow hands over: numpy converts it at once
        numbers = np.array(values, dtype=np.float64)  # None -> NaN
    else:
        numbers = np.array([np.nan if is_null(v) else as_number(field, v) for v in values], dtype=np.float64)
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        as_number(field, values[infinite[0]])  # raises, naming the value
    return numbers


def _other_cell(field: str, values):
    """A multi-valued field's cell: () when it is None, NaN or blank, else itself; a string is refused."""
    _check_multi_value(field, values)
    return values if type(values) is list or not is_null(values) else ()


def _check_labels(labels, label_column: str) -> list[int]:
    checked = []
    for row, label in enumerate(labels):
        if label is None or isinstance(label, bool) or label not in (0, 1):
            raise ValueError(
                f"Column {label_column!r}, row {row}: label {label!r} is not 0 or 1. CTR labels must be binary "
                "clicks; binarize them first (e.g. rating >= 4 -> 1) and drop or fill missing labels."
            )
        checked.append(int(label))
    return checked


def _is_boundary(char: str) -> bool:
    """Whether BERT's pre-tokenizer always splits at this character (whitespace or punctuation)."""
    if not char:
        return True
    if char.isspace():
        return True
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _align_tokens(offsets, spans) -> list[int]:
    """Field index of each token: the field whose value span holds the token's last character."""
    starts = [start for start, _ in spans]
    order = sorted(range(len(spans)), key=starts.__getitem__)
    sorted_starts = [starts[i] for i in order]
    field_ids = []
    for token_start, token_end in offsets:
        if token_end <= token_start:
            field_ids.append(NO_FIELD)
            continue
        last_char = token_end - 1
        position = bisect.bisect_right(sorted_starts, last_char) - 1
        if position >= 0:
            field = order[position]
            start, end = spans[field]
            if start <= last_char < end:
                field_ids.append(field)
                continue
        field_ids.append(NO_FIELD)
    return field_ids

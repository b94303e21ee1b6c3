"""FlipProcessor.encode_ids works a column at a time; these tests hold it to the plain per-row, per-value rule.

`reference_ids` below is that rule written out row by row from the processor's saved state (vocabularies, bucket
boundaries, slots), with its own null test. Generated batches mix ints and their strings, every kind of null,
unseen values, numbers exactly on bucket boundaries, multi-valued rows with null elements and more values than
slots, and free text.
"""

import bisect
import logging
import math
import random

import numpy as np
import pytest
from datasets import Dataset
from tiny import GENRES, TITLES, tiny_rows, tiny_schema

import flip_hf  # noqa: F401  (registers the Auto classes)
from flip_hf import FieldSpec, FlipProcessor, TabularSchema
from flip_hf.configuration_flip import NUM_RESERVED_IDS, PAD_ID, UNKNOWN_ID
from flip_hf.values import as_number

LOGGER = "flip_hf.processing_flip"
NULLS = [None, float("nan"), np.float64("nan"), "", " ", "\t\n"]
# values whose text is a null's, or another value's: each must keep its own id
LOOKALIKES = ["None", "nan", "NaN", "196", 196, 196.0, "196.0", True, "True", np.int64(7), "7", np.str_("male"), " male "]


# ------------------------------------------------------------------------------------------- reference
def null(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return all(null(v) for v in value)
    return False


def reference_ids(processor, batch) -> list[list[int]]:
    """One row, one field, one value at a time."""
    rows = []
    for i in range(len(batch[processor.fields[0].name])):
        row = []
        for spec, vocab, edges, slots in zip(processor.fields, processor.vocabularies, processor.bucket_boundaries, processor.max_values):
            lookup = {value: NUM_RESERVED_IDS + index for index, value in enumerate(vocab)}
            value = batch[spec.name][i]
            if spec.kind == "numeric":
                number = math.nan if null(value) else float(value)
                row.append(UNKNOWN_ID if math.isnan(number) else NUM_RESERVED_IDS + bisect.bisect_right(edges, number))
            elif spec.kind == "text":
                row.append(UNKNOWN_ID if null(value) else NUM_RESERVED_IDS)
            elif spec.is_multi_valued:
                if null(value):
                    row += [UNKNOWN_ID] + [PAD_ID] * (slots - 1)
                else:
                    ids = [UNKNOWN_ID if null(v) else lookup.get(str(v), UNKNOWN_ID) for v in value][:slots]
                    row += ids + [PAD_ID] * (slots - len(ids))
            else:
                row.append(UNKNOWN_ID if null(value) else lookup.get(str(value), UNKNOWN_ID))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- data
def schema() -> TabularSchema:
    return TabularSchema(fields=tiny_schema().fields + [FieldSpec("review", kind="text")], name="tiny-vectorised")


def category(rng: random.Random, seen: list) -> object:
    pool = rng.choice([seen, NULLS, LOOKALIKES, ["never-seen", 10**30, -0.0, "x" * 50]])
    return rng.choice(pool)


def genre_list(rng: random.Random):
    elements = GENRES + NULLS + LOOKALIKES + ["western", ["comedy"], [None], ("", " ")]
    cell = [rng.choice(elements) for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 5]))]
    array = np.empty(len(cell), dtype=object)
    array[:] = [None] * len(cell)
    for i, value in enumerate(cell):
        array[i] = value
    return rng.choice([cell, cell, cell, tuple(cell), array, None, float("nan"), "", " "])


def tricky_batch(seed: int, num_rows: int, edges: list[float], plain_numbers: bool = False) -> dict[str, list]:
    """Rows in which every cell may be tricky; `plain_numbers` keeps ages to int / float / None (Arrow's types)."""
    rng = random.Random(seed)
    rows = tiny_rows(num_rows, seed=seed)
    on_edges = [e for edge in edges for e in (edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf))]
    plain_ages = on_edges + [None, float("nan"), 0, -5, 18, 60, 10**6, -0.0, 2**60]
    other_ages = [np.float64("nan"), "", " ", "42", " 42.5 ", np.float32(30.5), np.int64(40), True, str(edges[0]) if edges else "1"]
    for i in range(num_rows):
        rows["user_id"][i] = category(rng, rows["user_id"])
        rows["gender"][i] = category(rng, ["male", "female"])
        rows["title"][i] = category(rng, TITLES)
        rows["age"][i] = rng.choice(plain_ages if plain_numbers or rng.random() < 0.5 else other_ages)
        rows["genres"][i] = genre_list(rng)
    rows["review"] = [rng.choice([f"review {i} of {rng.choice(TITLES)}", 5, "None"] + NULLS) for i in range(num_rows)]
    return rows


def fitted_processor(tokenizer) -> FlipProcessor:
    """Fit on data whose vocabularies hold lookalike strings ("None", "nan", "196", "True", "['comedy']")."""
    rows = tiny_rows(80)
    for k, i in enumerate(range(0, 80, 4)):
        rows["user_id"][i] = ["None", "nan", "196", 196, 196.0, "True", 7, None, ""][k % 9]
        rows["title"][i] = ["None", "nan", None, " "][k % 4]
        rows["genres"][i] = ["drama", "action"] + [["None", "nan", ["comedy"], None, "western"][k % 5]]
        rows["age"][i] = [None, float("nan"), "", 45.5][k % 4]
    rows["review"] = [f"review {i}" if i % 3 else None for i in range(80)]
    return FlipProcessor(tokenizer, schema()).fit(rows)


# ------------------------------------------------------------------------------------------- tests
def test_the_fitted_vocabularies_hold_the_lookalikes(bert_tokenizer):
    """Otherwise the comparisons below would not tell a null from its text."""
    processor = fitted_processor(bert_tokenizer)
    user_ids, titles, genres = processor.vocabularies[0], processor.vocabularies[3], processor.vocabularies[4]
    assert {"None", "nan", "196", "196.0", "True"} <= set(user_ids)
    assert {"None", "nan"} <= set(titles) and {"None", "nan", "['comedy']"} <= set(genres)
    assert processor.max_values[4] == 3 and len(processor.bucket_boundaries[2]) >= 1


@pytest.mark.parametrize("seed", range(6))
def test_encode_ids_matches_the_per_value_rule(bert_tokenizer, seed):
    processor = fitted_processor(bert_tokenizer)
    batch = tricky_batch(seed, 300, processor.bucket_boundaries[2], plain_numbers=seed % 2 == 0)
    ids = processor.encode_ids(batch)
    assert ids == reference_ids(processor, batch)
    assert all(type(row) is list and all(type(i) is int for i in row) for row in ids)
    # batch boundaries do not matter: each row's ids are its own
    halves = processor.encode_ids({k: v[:137] for k, v in batch.items()}) + processor.encode_ids({k: v[137:] for k, v in batch.items()})
    assert halves == ids
    assert processor(batch, text=False)["feature_ids"] == ids


def test_lookalikes_keep_their_own_ids(bert_tokenizer):
    processor = fitted_processor(bert_tokenizer)
    lookup = processor._lookups[0]
    values = [None, "None", float("nan"), "nan", np.float64("nan"), 196, "196", 196.0, "196.0", True, "True", " ", "never"]
    batch = {**{k: v[:1] * len(values) for k, v in tricky_batch(0, 1, []).items()}, "user_id": values}
    got = [row[0] for row in processor.encode_ids(batch)]
    expected = [UNKNOWN_ID, lookup["None"], UNKNOWN_ID, lookup["nan"], UNKNOWN_ID, lookup["196"], lookup["196"],
                lookup["196.0"], lookup["196.0"], lookup["True"], lookup["True"], UNKNOWN_ID, UNKNOWN_ID]
    assert got == expected


def test_numbers_on_bucket_boundaries_go_up_like_bisect_right(bert_tokenizer):
    processor = fitted_processor(bert_tokenizer)
    edges = processor.bucket_boundaries[2]
    ages = [e for edge in edges for e in (edge, math.nextafter(edge, -math.inf), str(edge))]
    batch = {**{k: v[:1] * len(ages) for k, v in tricky_batch(0, 1, []).items()}, "age": ages}
    got = [row[2] for row in processor.encode_ids(batch)]
    assert got == [NUM_RESERVED_IDS + bisect.bisect_right(edges, float(a)) for a in ages]
    assert got[0::3] == [NUM_RESERVED_IDS + 1 + i for i in range(len(edges))]  # on an edge: the bucket above it
    assert got[1::3] == [NUM_RESERVED_IDS + i for i in range(len(edges))]  # just below: the bucket below


def test_multi_valued_rows_are_cut_to_their_slots_with_one_warning_each(bert_tokenizer, caplog):
    processor = fitted_processor(bert_tokenizer)
    slots, lookup = processor.max_values[4], processor._lookups[4]
    genres = [GENRES * 2, [None, " ", "nan"] * 3, [None] * 9, ["drama", None, "", "comedy", "never"], ["horror"], None, []]
    batch = {**{k: v[:1] * len(genres) for k, v in tricky_batch(0, 1, []).items()}, "genres": genres}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ids = processor.encode_ids(batch)
    assert [row[4 : 4 + slots] for row in ids] == [  # genres is the fifth field, after four single ones
        [lookup[g] for g in GENRES[:slots]],
        [UNKNOWN_ID, UNKNOWN_ID, lookup["nan"]],
        [UNKNOWN_ID, PAD_ID, PAD_ID],  # only nulls: a null row, no warning
        [lookup["drama"], UNKNOWN_ID, UNKNOWN_ID],
        [lookup["horror"], PAD_ID, PAD_ID],
        [UNKNOWN_ID, PAD_ID, PAD_ID],
        [UNKNOWN_ID, PAD_ID, PAD_ID],
    ]
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 3
    for warning, count in zip(warnings, [8, 9, 5]):
        assert warning.startswith(f"Field 'genres' has {count} values in a row but the processor was fit with {slots} slots; "
                                  f"the last {count - slots} values are left out")


def test_arrow_typed_columns_through_dataset_map(bert_tokenizer):
    processor = fitted_processor(bert_tokenizer)
    rows = tiny_rows(200, seed=3)
    rng = random.Random(3)
    rows["user_id"] = [rng.choice(["None", "nan", "196", "1", "12", "never", None, "", " "]) for _ in range(200)]
    rows["age"] = [rng.choice([None, 18.0, 45.5, 60.0, *processor.bucket_boundaries[2]]) for _ in range(200)]
    rows["genres"] = [rng.choice([None, [], [None], ["drama", None], GENRES, ["", "comedy"]]) for _ in range(200)]
    rows["review"] = [rng.choice([None, "", "good", "None"]) for _ in range(200)]
    dataset = Dataset.from_dict(rows)
    encoded = dataset.map(processor, batched=True, batch_size=64, fn_kwargs={"text": False}, remove_columns=dataset.column_names)
    assert encoded["feature_ids"] == reference_ids(processor, dataset[:])


def test_an_empty_batch_has_no_rows(bert_tokenizer):
    processor = fitted_processor(bert_tokenizer)
    assert processor.encode_ids({name: [] for name in processor.schema.field_names}) == []


# ------------------------------------------------------------------------------------------- errors
def one_column(processor, name, values):
    base = tricky_batch(0, 1, [])
    return {**{k: v[:1] * len(values) for k, v in base.items()}, name: values}


@pytest.mark.parametrize(
    "ages, bad",
    [([1, 2.0, None, math.inf, -math.inf], math.inf), ([1, 2.0, -math.inf], -math.inf), ([1, "ten", math.inf], "ten"),
     ([None, " 3 ", "inf", "ten"], "inf"), ([np.float32(1), np.float32("-inf")], np.float32("-inf")), ([1, [2]], [2])],
)
def test_the_first_bad_number_is_named(bert_tokenizer, ages, bad):
    processor = fitted_processor(bert_tokenizer)
    with pytest.raises(ValueError) as raised:
        processor.encode_ids(one_column(processor, "age", ages))
    if isinstance(bad, list):
        assert "Field 'age' (numeric) holds one value per row but got [2]" in str(raised.value)
        return
    with pytest.raises(ValueError) as expected:
        as_number("age", bad)
    assert str(raised.value) == str(expected.value)


@pytest.mark.parametrize("container", [["male"], ("male",), {"male"}, {"g": "male"}, np.array(["male"])])
def test_a_container_in_a_single_valued_field_is_refused_by_name(bert_tokenizer, container):
    processor = fitted_processor(bert_tokenizer)
    with pytest.raises(ValueError, match=r"Field 'gender' \(categorical\) holds one value per row but got "):
        processor.encode_ids(one_column(processor, "gender", ["male", None, container]))
    with pytest.raises(ValueError, match=r"Field 'review' \(text\) holds one value per row"):
        processor.encode_ids(one_column(processor, "review", ["fine", container]))


def test_a_string_in_a_multi_valued_field_is_refused_by_name(bert_tokenizer):
    processor = fitted_processor(bert_tokenizer)
    with pytest.raises(ValueError, match=r"Multi-valued field 'genres' got the string 'comedy\|drama'"):
        processor.encode_ids(one_column(processor, "genres", [["drama"], None, " ", "comedy|drama"]))

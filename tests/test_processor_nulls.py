"""FlipProcessor's null rule: None, NaN, '' and whitespace-only strings (and a list holding only those) are one null.

A null maps to the unknown id, prints as "unknown" in the prompt and never enters a vocabulary, whatever the field kind.
"""

import math

import numpy as np
import pytest
from tiny import tiny_rows, tiny_schema

import flip_hf  # noqa: F401  (registers the Auto classes)
from flip_hf import FieldSpec, FlipProcessor, TabularSchema
from flip_hf.configuration_flip import PAD_ID, UNKNOWN_ID
from flip_hf.prompting import UNKNOWN_TEXT
from flip_hf.values import is_null

BLANKS = ["", " ", "   ", "\t\n"]
NULL_LISTS = [None, [], [""], ["", " "], [None, "  "], [float("nan"), ""], ("",), np.array(["", " "])]
GENDER, AGE, TITLE, GENRES = 1, 2, 3, 4  # field indexes in tiny_schema()


def one_row(**values):
    row = {key: column[0] for key, column in tiny_rows(1).items()}
    row.update(values)
    return row


def state(processor):
    return {k: v for k, v in processor.to_dict().items() if k != "auto_map"}


def encode(processor, row):
    out = processor(row)
    return out["feature_ids"][0], out["input_ids"][0], out["token_field_ids"][0]


@pytest.mark.parametrize(
    "value, null",
    [(None, True), (float("nan"), True), (np.float64("nan"), True)]
    + [(blank, True) for blank in BLANKS]
    + [(v, True) for v in NULL_LISTS[1:]]
    + [("a", False), (" a ", False), (0, False), (0.0, False), ("0", False), (["a", ""], False), ([None, "x"], False)],
)
def test_is_null_is_the_one_rule(value, null):
    assert is_null(value) is null


def test_blank_categorical_values_are_not_in_the_vocabulary_and_map_to_unknown(bert_tokenizer):
    rows, nulled = tiny_rows(32), tiny_rows(32)
    rows["gender"][:4] = BLANKS
    nulled["gender"][:4] = [None] * 4
    rows["title"][:2] = ["", "  "]
    nulled["title"][:2] = [None, None]
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(rows)
    assert not any(is_null(value) for vocab in processor.vocabularies for value in vocab)
    assert processor.vocabularies == FlipProcessor(bert_tokenizer, tiny_schema()).fit(nulled).vocabularies
    ids = processor.encode_ids({"gender": BLANKS, **{k: v[:4] for k, v in tiny_rows(4).items() if k != "gender"}})
    assert [row[GENDER] for row in ids] == [UNKNOWN_ID] * 4


def test_blank_numeric_values_fit_and_map_to_unknown(bert_tokenizer):
    schema = TabularSchema([FieldSpec("age", kind="numeric", num_buckets=4)])
    train = [float(v) for v in range(1, 41)]
    processor = FlipProcessor(bert_tokenizer, schema).fit({"age": train + BLANKS})  # no error from the blanks
    assert processor.bucket_boundaries == FlipProcessor(bert_tokenizer, schema).fit({"age": train + [None]}).bucket_boundaries
    assert [row[0] for row in processor.encode_ids({"age": BLANKS + [None, 20]})] == [UNKNOWN_ID] * 5 + [4]
    for blank in BLANKS:
        assert processor.render_text({"age": blank}) == processor.render_text({"age": None}) == f"age is {UNKNOWN_TEXT}."
    with pytest.raises(ValueError, match=r"Numeric field 'age' got 'ten', which is not a number"):
        processor.encode_ids({"age": ["ten"]})


@pytest.mark.parametrize("infinite", [float("inf"), -math.inf, np.float32("inf"), "inf"])
def test_an_infinite_numeric_value_is_refused_by_name(bert_tokenizer, infinite):
    schema = TabularSchema([FieldSpec("age", kind="numeric", num_buckets=4)])
    with pytest.raises(ValueError, match=r"Numeric field 'age' got .*inf.*, which is infinite"):
        FlipProcessor(bert_tokenizer, schema).fit({"age": [1.0, 2.0, infinite]})
    processor = FlipProcessor(bert_tokenizer, schema).fit({"age": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"Numeric field 'age' got .*inf.*, which is infinite"):
        processor.encode_ids({"age": [infinite]})
    with pytest.raises(ValueError, match=r"Numeric field 'age' got .*inf.*, which is infinite"):
        processor.render_text({"age": infinite})


@pytest.mark.parametrize("blank", BLANKS[:2])
def test_a_blank_row_encodes_like_a_null_row(tokenizer, blank):
    processor = FlipProcessor(tokenizer, tiny_schema()).fit(tiny_rows(32))
    null_row = one_row(gender=None, age=None, title=None, genres=None)
    blank_row = one_row(gender=blank, age=blank, title=blank, genres=[blank])
    ids, input_ids, field_ids = encode(processor, blank_row)
    assert (ids, input_ids, field_ids) == encode(processor, null_row)
    assert [ids[i] for i in (GENDER, AGE, TITLE, GENRES)] == [UNKNOWN_ID] * 4
    assert processor.render_text(blank_row) == processor.render_text(null_row)
    assert f"gender is {UNKNOWN_TEXT}. age is {UNKNOWN_TEXT}. title is {UNKNOWN_TEXT}. genres are {UNKNOWN_TEXT}." in (
        processor.render_text(blank_row)
    )


@pytest.mark.parametrize("genres", NULL_LISTS, ids=repr)
def test_a_list_of_only_nulls_is_a_null(bert_tokenizer, genres):
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(tiny_rows(32))
    slots = processor.max_values[GENRES]
    assert slots == 2
    row = one_row(genres=genres)
    ids, input_ids, field_ids = encode(processor, row)  # ids and text together: no error
    assert ids[-slots:] == [UNKNOWN_ID] + [PAD_ID] * (slots - 1)
    assert (ids, input_ids, field_ids) == encode(processor, one_row(genres=None))
    assert processor.render_text(row).endswith(f"genres are {UNKNOWN_TEXT}.")


def test_null_elements_keep_their_place_in_a_list(bert_tokenizer):
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(tiny_rows(32))
    lookup = processor._lookups[GENRES]
    for null in (None, "", "  "):
        row = one_row(genres=["comedy", null])
        assert processor(row)["feature_ids"][0][-2:] == [lookup["comedy"], UNKNOWN_ID]
        assert processor.render_text(row).endswith(f"genres are comedy, {UNKNOWN_TEXT}.")


def test_fit_counts_neither_blank_values_nor_null_lists(bert_tokenizer):
    rows, nulled = tiny_rows(32), tiny_rows(32)
    rows["genres"][:5] = [[""], ["", " ", "", "  "], "", ["comedy", " "], []]
    nulled["genres"][:5] = [None, None, None, ["comedy", None], None]
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(rows)
    reference = FlipProcessor(bert_tokenizer, tiny_schema()).fit(nulled)
    assert processor.vocabularies == reference.vocabularies
    assert processor.max_values == reference.max_values == [1, 1, 1, 1, 2]  # four blanks are not four slots
    assert processor(rows) == reference(nulled)
    only_nulls = {name: [None] * 3 if name == "genres" else column[:3] for name, column in tiny_rows(3).items()}
    only_nulls["genres"] = [[""], [" ", None], []]
    assert FlipProcessor(bert_tokenizer, tiny_schema()).fit(only_nulls).max_values[GENRES] == 1


def test_a_non_blank_string_in_a_multi_valued_field_is_still_refused(bert_tokenizer):
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(tiny_rows(32))
    with pytest.raises(ValueError, match=r"Multi-valued field 'genres' got the string 'comedy\|drama'"):
        processor(one_row(genres="comedy|drama"))


def test_save_and_load_round_trip_keeps_the_null_rule(tokenizer, tmp_path):
    rows = tiny_rows(32)
    rows["gender"][:3] = ["", "   ", None]
    rows["age"][:3] = ["", " ", float("nan")]
    rows["genres"][:4] = [[""], ["", " "], "", ["drama", ""]]
    processor = FlipProcessor(tokenizer, tiny_schema(), min_frequency=2).fit(rows)
    processor.save_pretrained(tmp_path)
    loaded = FlipProcessor.from_pretrained(tmp_path)
    assert state(loaded) == state(processor)
    assert loaded.vocabulary_fingerprint() == processor.vocabulary_fingerprint()
    assert loaded(rows) == processor(rows)
    assert not any(is_null(value) for vocab in loaded.vocabularies for value in vocab)
    assert [row[GENDER] for row in loaded(rows)["feature_ids"][:3]] == [UNKNOWN_ID] * 3
    assert not any(isinstance(e, float) and math.isnan(e) for edges in loaded.bucket_boundaries if edges for e in edges)

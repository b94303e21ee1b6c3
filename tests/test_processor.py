"""FlipProcessor: prompts, token-to-field alignment, vocabularies, truncation, errors, save/load, datasets."""

import json
import logging
import math

import pytest
import torch
from datasets import Dataset
from tiny import GENRES, TITLES, tiny_roberta_tokenizer, tiny_rows, tiny_schema

import flip_hf  # noqa: F401  (registers the Auto classes)
from flip_hf import FieldSpec, FlipProcessor, TabularSchema
from flip_hf.configuration_flip import MASK_ID, NO_FIELD, PAD_ID, UNKNOWN_ID

LOGGER = "flip_hf.processing_flip"


def fitted(tokenizer, rows=None, **kwargs):
    return FlipProcessor(tokenizer, tiny_schema(), **kwargs).fit(rows if rows is not None else tiny_rows(64))


def norm(text: str) -> str:
    return "".join(text.lower().split())


def value_text(spec: FieldSpec, value) -> str:
    """What the prompt should say for a value (independent of the library's own helper)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if spec.kind == "multi_categorical":
        return ", ".join("unknown" if v is None else str(v) for v in value) if value else "unknown"
    if spec.kind == "numeric":
        return f"{float(value):g}"
    return str(value) if str(value).strip() else "unknown"


def harder_rows() -> dict[str, list]:
    """ASCII rows with nulls, punctuation inside values, multi-word titles and odd lists."""
    rows = tiny_rows(6, seed=7)
    rows["user_id"] += ["u-42", None, "7", "x.y"]
    rows["gender"] += [None, "female", "", "male"]
    rows["age"] += [None, 17, float("nan"), 33.5]
    rows["title"] += ["kolya (1996)", "it's a test!", "golden eye: the return", "a,b;c"]
    rows["genres"] += [["comedy", None], None, [], ["sci-fi", "drama", "war"]]
    rows["label"] += [0, 1, 0, 1]
    rows["timestamp"] += [1, 2, 3, 4]
    return rows


def columns_to_rows(columns):
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


# ----------------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("make_rows", [lambda: tiny_rows(40, seed=3), harder_rows], ids=["tiny", "harder"])
def test_value_tokens_decode_to_the_field_value(tokenizer, make_rows):
    processor = fitted(tokenizer)
    rows = make_rows()
    encoded = processor(rows)
    special_ids = set(tokenizer.all_special_ids)
    for i, row in enumerate(columns_to_rows(rows)):
        ids, field_ids = encoded["input_ids"][i], encoded["token_field_ids"][i]
        assert len(ids) == len(field_ids) == len(encoded["attention_mask"][i])
        for f, spec in enumerate(processor.fields):
            tokens = [t for t, fid in zip(ids, field_ids) if fid == f]
            assert tokens, (i, spec.name)
            assert norm(tokenizer.decode(tokens)) == norm(value_text(spec, row[spec.name])), (i, spec.name)
        # special tokens carry no field; template tokens decode to the template words only
        assert all(fid == NO_FIELD for t, fid in zip(ids, field_ids) if t in special_ids)
        assert field_ids[0] == NO_FIELD and field_ids[-1] == NO_FIELD
        template = [t for t, fid in zip(ids, field_ids) if fid == NO_FIELD and t not in special_ids]
        expected_template = "".join(f"{s.prompt_name}{'are' if s.kind == 'multi_categorical' else 'is'}." for s in processor.fields)
        assert norm(tokenizer.decode(template)) == norm(expected_template)


def test_render_text_is_the_papers_prompt(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    row = {"user_id": "196", "gender": "male", "age": 25, "title": "kolya", "genres": ["comedy", "drama"]}
    assert processor.render_text(row) == "user id is 196. gender is male. age is 25. title is kolya. genres are comedy, drama."
    row.update(gender=None, genres=None, age=float("nan"))
    assert processor.render_text(row) == "user id is 196. gender is unknown. age is unknown. title is kolya. genres are unknown."


# ------------------------------------------------------------------- fast piecewise == exact whole path
def tricky_rows(n: int = 120) -> dict[str, list]:
    odd_values = [
        "a.b,c;d", "(x)", "--", "", "   ", None, "café crème", "naïve", "東京", "ß", "don't!", "x/y/z", "[mask]",
        "a  b\tc", " heat ", "##ab", "e\u0301", "100%", "3.14", "$5", "!!!", "l'été", "ｆｕｌｌ", "a" * 150,
    ]
    rows = tiny_rows(n, seed=11)
    for i in range(n):
        rows["user_id"][i] = odd_values[i % len(odd_values)]
        rows["title"][i] = odd_values[(i * 7 + 3) % len(odd_values)] if i % 3 else rows["title"][i]
        if i % 5 == 0:
            rows["genres"][i] = [odd_values[(i + 2) % len(odd_values)], "drama"]
        if i % 4 == 1:
            rows["gender"][i] = odd_values[(i * 5) % len(odd_values)]
        if i % 9 == 0:
            rows["age"][i] = None
    return rows


@pytest.mark.parametrize("style", ["natural", "compact", "template"])
def test_piecewise_path_equals_exact_path(bert_tokenizer, style):
    kwargs = {"prompt_template": "[{user_id}] {gender}; age={age} ({title}) genres: {genres}!"} if style == "template" else {"prompt_style": style}
    fast = fitted(bert_tokenizer, max_length=512, **kwargs)
    exact = fitted(bert_tokenizer, max_length=512, **kwargs)
    exact._segment_plan = False
    fast(tiny_rows(8))  # the plan is decided on clean rows ...
    assert fast._segment_plan, "the WordPiece piecewise path should be used here"
    rows = tricky_rows()
    for start in range(0, 120, 40):  # ... then the tricky rows go through it, in several batches
        batch = {k: v[start : start + 40] for k, v in rows.items()}
        got, want = fast(batch), exact(batch)
        assert got["input_ids"] == want["input_ids"]
        assert got["token_field_ids"] == want["token_field_ids"]
        assert got["attention_mask"] == want["attention_mask"]
    assert fast._segment_plan, "still on the piecewise path"


def test_glued_template_falls_back_to_exact_path(bert_tokenizer):
    processor = FlipProcessor(bert_tokenizer, tiny_schema(), prompt_template="id{user_id} {gender} {age} {title} {genres}")
    processor.fit(tiny_rows(64))
    processor(tiny_rows(4))
    assert processor._segment_plan is False


def test_byte_level_bpe_uses_exact_path():
    processor = fitted(tiny_roberta_tokenizer())
    processor(tiny_rows(4))
    assert processor._segment_plan is False


# ---------------------------------------------------------------------------------------- vocabularies
def test_vocabulary_order_ties_and_min_frequency(bert_tokenizer):
    schema = TabularSchema([FieldSpec("item"), FieldSpec("tags", kind="multi_categorical")])
    train = {
        "item": ["b", "a", "c", "a", "b", "d", "a", None, float("nan")],
        "tags": [["x"], ["y", "x"], ["z"], ["x"], None, ["y"], ["w"], [], ["z", None]],
    }
    processor = FlipProcessor(bert_tokenizer, schema).fit(train)
    assert processor.vocabularies[0] == ["a", "b", "c", "d"]  # a:3, b:2, then the tie c/d by value
    assert processor.vocabularies[1] == ["x", "y", "z", "w"]  # x:3, y:2, z:2 -> y before z, w:1
    assert processor.max_values == [1, 2]
    rare = FlipProcessor(bert_tokenizer, schema, min_frequency=2).fit(train)
    assert rare.vocabularies[0] == ["a", "b"]
    ids = rare.encode_ids({"item": ["a", "b", "c", "d", "never"], "tags": [["x"], ["w"], ["y", "z"], ["x", "w"], ["q"]]})
    assert [row[0] for row in ids] == [3, 4, UNKNOWN_ID, UNKNOWN_ID, UNKNOWN_ID]
    assert [row[1:] for row in ids] == [[3, PAD_ID], [UNKNOWN_ID, PAD_ID], [4, 5], [3, UNKNOWN_ID], [UNKNOWN_ID, PAD_ID]]
    # reserved ids are never given to a value
    for processor_ in (processor, rare):
        assert all(min(lookup.values()) >= 3 for lookup in processor_._lookups)
        assert [info["vocab_size"] for info in processor_.field_infos()] == [len(v) + 3 for v in processor_.vocabularies]


def test_vocabulary_is_deterministic_across_row_orders(bert_tokenizer):
    rows = tiny_rows(64)
    reversed_rows = {k: v[::-1] for k, v in rows.items()}
    assert fitted(bert_tokenizer, rows).vocabularies == fitted(bert_tokenizer, reversed_rows).vocabularies


def test_unseen_and_null_values(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    row = {"user_id": "never-seen", "gender": None, "age": float("nan"), "title": float("nan"), "genres": None, "label": 1}
    out = processor(row)
    assert out["feature_ids"] == [[UNKNOWN_ID, UNKNOWN_ID, UNKNOWN_ID, UNKNOWN_ID, UNKNOWN_ID, PAD_ID]]
    assert "gender is unknown. age is unknown. title is unknown. genres are unknown." in processor.render_text(row)
    assert processor({**row, "genres": ["western", None]})["feature_ids"][0][-2:] == [UNKNOWN_ID, UNKNOWN_ID]
    assert MASK_ID not in sum(processor(tiny_rows(64))["feature_ids"], [])


def test_numeric_bucketing(bert_tokenizer):
    schema = TabularSchema([FieldSpec("age", kind="numeric", num_buckets=4)])
    train = {"age": [float(v) for v in range(1, 101)] + [None, float("nan")]}
    processor = FlipProcessor(bert_tokenizer, schema).fit(train)
    edges = processor.bucket_boundaries[0]
    assert len(edges) == 3 and edges == sorted(edges)
    assert edges[1] == pytest.approx(50.5)
    assert processor.vocabularies[0] == ["bucket 0", "bucket 1", "bucket 2", "bucket 3"]
    ids = [row[0] for row in processor.encode_ids({"age": [-1e9, 1, 30, 50, 51, 99, 100, 1e9, None, float("nan"), "42"]})]
    assert ids == [3, 3, 4, 4, 5, 6, 6, 6, UNKNOWN_ID, UNKNOWN_ID, 4]
    # the bins come from the training split only
    other = FlipProcessor(bert_tokenizer, schema).fit({"age": [1000.0, 2000.0, 3000.0, 4000.0, 5000.0]})
    assert other.bucket_boundaries[0] != edges
    assert [r[0] for r in other.encode_ids({"age": [1, 1e6]})] == [3, 3 + len(other.bucket_boundaries[0])]
    assert processor.render_text({"age": 42.0}) == "age is 42."


def test_multi_valued_slots_and_overflow(bert_tokenizer, caplog):
    processor = fitted(bert_tokenizer)
    slots = processor.max_values[-1]
    assert slots == 2
    lookup = processor._lookups[-1]
    assert processor({**columns_to_rows(tiny_rows(1))[0], "genres": ["drama"]})["feature_ids"][0][-2:] == [lookup["drama"], PAD_ID]
    many = ["comedy", "drama", "action", "horror"]
    row = {**columns_to_rows(tiny_rows(1))[0], "genres": many}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = processor(row)
    assert out["feature_ids"][0][-2:] == [lookup["comedy"], lookup["drama"]]
    assert any("genres" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    genres_tokens = [t for t, f in zip(out["input_ids"][0], out["token_field_ids"][0]) if f == 4]
    assert norm(bert_tokenizer.decode(genres_tokens)) == norm(", ".join(many))  # the text keeps all values


# ---------------------------------------------------------------------------------------- prompt styles
def test_prompt_styles_and_user_template(bert_tokenizer):
    row = {"user_id": "7", "gender": "male", "age": 30, "title": "heat", "genres": ["drama"]}
    natural = fitted(bert_tokenizer)
    compact = fitted(bert_tokenizer, prompt_style="compact")
    custom = fitted(bert_tokenizer, prompt_template="User {user_id} ({gender}, {age}) rated {title} [{genres}].")
    assert natural.render_text(row) == "user id is 7. gender is male. age is 30. title is heat. genres are drama."
    assert compact.render_text(row) == "user id: 7 gender: male age: 30 title: heat genres: drama"
    assert custom.render_text(row) == "User 7 (male, 30) rated heat [drama]."
    assert natural.template_text() == "user id is {user_id}. gender is {gender}. age is {age}. title is {title}. genres are {genres}."
    assert compact.template_text() == "user id: {user_id} gender: {gender} age: {age} title: {title} genres: {genres}"
    assert custom.template_text() == "User {user_id} ({gender}, {age}) rated {title} [{genres}]."
    assert len(compact(row)["input_ids"][0]) < len(natural(row)["input_ids"][0])
    out = custom(row)
    for f, spec in enumerate(custom.fields):
        tokens = [t for t, fid in zip(out["input_ids"][0], out["token_field_ids"][0]) if fid == f]
        assert norm(bert_tokenizer.decode(tokens)) == norm(value_text(spec, row[spec.name]))
    with pytest.raises(ValueError, match="prompt_style"):
        FlipProcessor(bert_tokenizer, tiny_schema(), prompt_style="poetic")


@pytest.mark.parametrize(
    "template, name",
    [
        ("{user_id} {gender} {age} {title} {genres} {rating}", "rating"),
        ("{user_id} {gender} {age} {title}", "genres"),
        ("{user_id} {gender} {age} {title} {genres} {gender}", "gender"),
    ],
    ids=["unknown", "missing", "duplicate"],
)
def test_template_errors_name_the_field(bert_tokenizer, template, name):
    with pytest.raises(ValueError, match=name):
        FlipProcessor(bert_tokenizer, tiny_schema(), prompt_template=template)


# ------------------------------------------------------------------------------------------ truncation
def test_truncation_cuts_values_inside_their_span(tokenizer, caplog):
    rows = tiny_rows(6, seed=2)
    rows["title"] = ["golden eye " * 12, "toy story", "kolya " * 30, "heat", "fargo", "alien alien alien"]
    rows["genres"][0] = GENRES * 3
    full = fitted(tokenizer, max_length=512)(rows)
    max_length = 40
    processor = fitted(tokenizer, max_length=max_length)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = processor(rows)
    assert any("max_length" in r.getMessage() for r in caplog.records)
    for i in range(6):
        ids, field_ids, full_ids = out["input_ids"][i], out["token_field_ids"][i], full["input_ids"][i]
        assert len(ids) <= max_length
        assert set(range(len(processor.fields))) <= set(field_ids)  # every field keeps >= 1 token
        if len(full_ids) <= max_length:
            assert ids == full_ids
            continue
        # the template survives whole, only value tokens were cut
        template = [t for t, f in zip(ids, field_ids) if f == NO_FIELD]
        full_template = [t for t, f in zip(full_ids, full["token_field_ids"][i]) if f == NO_FIELD]
        assert norm(tokenizer.decode(template)) == norm(tokenizer.decode(full_template))
        assert ids[-1] == full_ids[-1] and ids[0] == full_ids[0]  # special tokens kept
        # every value is cut to a non-empty prefix of itself; the longest value lost the most
        lost = []
        for f in range(len(processor.fields)):
            cut = norm(tokenizer.decode([t for t, x in zip(ids, field_ids) if x == f]))
            whole = norm(tokenizer.decode([t for t, x in zip(full_ids, full["token_field_ids"][i]) if x == f]))
            assert cut and whole.startswith(cut), (i, f, cut, whole)
            lost.append(len(whole) - len(cut))
        assert lost[3] > 0 or lost[4] > 0
        assert lost[0] == lost[1] == 0  # short values untouched


def test_impossible_max_length_raises(tokenizer):
    processor = fitted(tokenizer, max_length=10)
    with pytest.raises(ValueError, match="max_length=10"):
        processor(tiny_rows(2))


# -------------------------------------------------------------------------------------------- errors
def test_missing_column_is_named(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    rows = tiny_rows(3)
    del rows["title"]
    with pytest.raises(ValueError, match=r"\['title'\]"):
        processor(rows)
    with pytest.raises(ValueError, match=r"\['title'\]"):
        FlipProcessor(bert_tokenizer, tiny_schema()).fit(rows)


@pytest.mark.parametrize("bad", [2, None, True, "1", -1])
def test_labels_must_be_binary(bert_tokenizer, bad):
    processor = fitted(bert_tokenizer)
    rows = tiny_rows(3)
    rows["label"][1] = bad
    with pytest.raises(ValueError, match=rf"'label', row 1: label {bad!r}"):
        processor(rows)
    with pytest.raises(ValueError, match="row 1"):
        processor(rows, text=False)


def test_bad_values_are_named(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    rows = tiny_rows(3)
    rows["age"][2] = "forty"
    with pytest.raises(ValueError, match=r"'age'.*'forty'"):
        processor(rows)
    rows = tiny_rows(3)
    rows["genres"][1] = "comedy|drama"
    with pytest.raises(ValueError, match=r"'genres'.*'comedy\|drama'"):
        processor(rows)
    with pytest.raises(ValueError, match=r"'genres'.*'comedy\|drama'"):
        processor({**columns_to_rows(tiny_rows(1))[0], "genres": "comedy|drama"})


def test_fit_names_a_non_numeric_value(bert_tokenizer):
    rows = tiny_rows(3)
    rows["age"][2] = "forty"
    with pytest.raises(ValueError, match=r"'age'.*'forty'"):
        FlipProcessor(bert_tokenizer, tiny_schema()).fit(rows)


def test_fit_rejects_a_string_for_a_multi_valued_field(bert_tokenizer):
    rows = tiny_rows(8)
    rows["genres"][3] = "comedy|drama"
    with pytest.raises(ValueError, match="genres"):
        FlipProcessor(bert_tokenizer, tiny_schema()).fit(rows)


def test_use_before_fit_and_slow_tokenizer(bert_tokenizer, tmp_path):
    processor = FlipProcessor(bert_tokenizer, tiny_schema())
    for call in (lambda: processor(tiny_rows(2)), lambda: processor.field_infos(), lambda: processor.encode_ids(tiny_rows(2))):
        with pytest.raises(RuntimeError, match=r"fit\("):
            call()
    from transformers import BertTokenizerLegacy

    (tmp_path / "vocab.txt").write_text("\n".join(bert_tokenizer.convert_ids_to_tokens(list(range(len(bert_tokenizer))))))
    slow = BertTokenizerLegacy(str(tmp_path / "vocab.txt"))
    assert not slow.is_fast
    with pytest.raises(ValueError, match="fast tokenizer"):
        FlipProcessor(slow, tiny_schema())
    with pytest.raises(ValueError, match="schema"):
        FlipProcessor(bert_tokenizer)
    with pytest.raises(ValueError, match="empty"):
        FlipProcessor(bert_tokenizer, tiny_schema()).fit({k: [] for k in tiny_rows(1)})


# ---------------------------------------------------------------------------------------- save / load
def state(processor):
    return {k: v for k, v in processor.to_dict().items() if k != "auto_map"}


def test_save_and_load_round_trip(tokenizer, tmp_path):
    from transformers import AutoProcessor

    processor = fitted(tokenizer, prompt_style="compact", max_length=96, min_frequency=2)
    processor.save_pretrained(tmp_path)
    loaded = FlipProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, FlipProcessor)
    assert state(loaded) == state(processor)
    assert state(loaded)["vocabularies"] == processor.vocabularies
    rows = harder_rows()
    assert loaded(rows) == processor(rows)
    auto = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(auto, FlipProcessor) and state(auto) == state(processor)
    assert auto(rows) == processor(rows)

    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert list(saved) == sorted(saved)
    assert isinstance(saved["vocabularies"], list) and isinstance(saved["schema"]["fields"], list)
    assert [f["name"] for f in saved["schema"]["fields"]] == processor.schema.field_names
    assert saved["vocabularies"] == processor.vocabularies
    assert isinstance(saved["bucket_boundaries"], list) and isinstance(saved["max_values"], list)


def test_field_order_survives_json(bert_tokenizer, tmp_path):
    names = ["zeta", "alpha", "mid", "Beta", "a_10", "a_9"]
    schema = TabularSchema([FieldSpec(n) for n in names])
    columns = {n: [f"{n}{i % 3}" for i in range(9)] for n in names}
    processor = FlipProcessor(bert_tokenizer, schema).fit(columns)
    processor.save_pretrained(tmp_path)
    loaded = FlipProcessor.from_pretrained(tmp_path)
    assert loaded.schema.field_names == names
    assert [info["name"] for info in loaded.field_infos()] == names
    assert loaded.vocabularies == processor.vocabularies
    assert loaded(columns) == processor(columns)


# ----------------------------------------------------------------------------------- call conventions
def test_single_row_and_tensors(tokenizer):
    processor = fitted(tokenizer)
    columns = tiny_rows(5, seed=4)
    batch = processor(columns)
    for i, row in enumerate(columns_to_rows(columns)):
        single = processor(row)
        assert {k: v[0] for k, v in single.items()} == {k: v[i] for k, v in batch.items()}
    tensors = processor(columns, return_tensors="pt")
    assert set(tensors) == {"feature_ids", "numeric_positions", "input_ids", "attention_mask", "token_field_ids", "labels"}
    longest = max(len(ids) for ids in batch["input_ids"])
    assert tensors["input_ids"].shape == (5, longest) and tensors["input_ids"].dtype == torch.long
    assert tensors["feature_ids"].tolist() == batch["feature_ids"]
    for i, ids in enumerate(batch["input_ids"]):
        n = len(ids)
        assert tensors["input_ids"][i, :n].tolist() == ids
        assert (tensors["input_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert tensors["attention_mask"][i].tolist() == [1] * n + [0] * (longest - n)
        assert (tensors["token_field_ids"][i, n:] == NO_FIELD).all()
    assert tensors["labels"].tolist() == [float(x) for x in columns["label"]]
    one = processor(columns_to_rows(columns)[0], return_tensors="pt")
    assert one["input_ids"].shape == (1, len(batch["input_ids"][0]))


def test_text_false_returns_only_ids(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    columns = tiny_rows(4)
    out = processor(columns, text=False)
    assert set(out) == {"feature_ids", "numeric_positions", "labels"}
    assert out["feature_ids"] == processor(columns)["feature_ids"]
    del columns["label"]
    assert set(processor(columns, text=False)) == {"feature_ids", "numeric_positions"}
    assert "labels" not in processor(columns)


def test_dataset_map_batched_keeps_row_order(tokenizer):
    processor = fitted(tokenizer)
    columns = tiny_rows(23, seed=5)
    dataset = Dataset.from_dict(columns)
    mapped = dataset.map(processor, batched=True, batch_size=5, remove_columns=dataset.column_names)
    direct = processor(columns)
    assert set(mapped.column_names) == set(direct)
    for key, values in direct.items():
        assert mapped[key] == values, key
    ids_only = dataset.map(processor, batched=True, fn_kwargs={"text": False}, remove_columns=dataset.column_names)
    assert set(ids_only.column_names) == {"feature_ids", "numeric_positions", "labels"}
    assert ids_only["feature_ids"] == direct["feature_ids"]


def test_titles_are_in_the_vocabulary(bert_tokenizer):
    processor = fitted(bert_tokenizer)
    assert sorted(processor.vocabularies[3]) == sorted(TITLES)
    assert sorted(processor.vocabularies[4]) == sorted(GENRES)


def test_a_list_in_a_single_valued_field_names_that_field(bert_tokenizer):
    processor = FlipProcessor(bert_tokenizer, tiny_schema()).fit(tiny_rows(32))
    rows = tiny_rows(2)
    rows["gender"] = ["male", ["male", "female"]]
    for text in (False, True):
        with pytest.raises(ValueError, match=r"Field 'gender' \(categorical\) holds one value per row but got \['male', 'female'\]"):
            processor(rows, text=text)
    bad_train = tiny_rows(8)
    bad_train["age"] = [[30]] * 8
    with pytest.raises(ValueError, match=r"Field 'age' \(numeric\)"):
        FlipProcessor(bert_tokenizer, tiny_schema()).fit(bad_train)

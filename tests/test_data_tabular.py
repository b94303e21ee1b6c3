import json

import datasets
import pandas as pd
import pytest

from flip_hf.data import load_dataset_recipe, load_tabular, recipe_split
from flip_hf.data.tabular import split_frame
from flip_hf.schema import FieldSpec, TabularSchema


def make_schema(**kwargs):
    fields = [FieldSpec("user"), FieldSpec("zip"), FieldSpec("price", kind="numeric"),
              FieldSpec("tags", kind="multi_categorical")]
    return TabularSchema(fields=fields, **{"time_column": "ts", "group_column": "user", **kwargs})


def make_frame(n=20):
    return pd.DataFrame({
        "user": [f"u{i % 4}" for i in range(n)],
        "zip": ["02134" if i % 2 else None for i in range(n)],
        "price": [float(i) if i != 3 else None for i in range(n)],
        "tags": ["a|b" if i % 3 else None for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "ts": [(n - i) // 2 for i in range(n)],  # decreasing, with ties
        "unused": range(n),
    })


def rows(dataset_dict):
    return {name: dataset_dict[name].to_list() for name in dataset_dict}


def test_loads_a_dataframe_into_the_contract():
    dataset, schema = load_tabular(make_frame(), make_schema(), split="random")
    assert list(dataset) == ["train", "validation", "test"]
    assert dataset["train"].column_names == ["user", "zip", "price", "tags", "label", "ts"]
    features = dataset["train"].features
    assert features["zip"] == datasets.Value("string")
    assert features["price"] == datasets.Value("int64")  # whole numbers stay ints
    assert features["tags"] == datasets.List(datasets.Value("string"))
    everything = [r for split in rows(dataset).values() for r in split]
    assert len(everything) == 20
    row = next(r for r in everything if r["price"] is None)
    assert row["zip"] == "02134" and row["tags"] is None
    assert next(r for r in everything if r["tags"])["tags"] == ["a", "b"]
    assert schema.time_column == "ts"


@pytest.mark.parametrize("kind", ["csv", "parquet", "dataset"])
def test_every_source_gives_the_same_rows(tmp_path, kind):
    frame = make_frame()
    if kind == "csv":
        source = tmp_path / "data.csv"
        frame.to_csv(source, index=False)
    elif kind == "parquet":
        source = tmp_path / "data.parquet"
        frame.to_parquet(source)
    else:
        source = datasets.Dataset.from_pandas(frame)
    expected, _ = load_tabular(frame, make_schema())
    loaded, _ = load_tabular(source, make_schema())
    assert rows(loaded) == rows(expected)
    assert rows(loaded)["test"][0]["zip"] in ("02134", None)  # a CSV keeps the leading zero


def test_a_split_dataset_dict_is_validated_not_resplit():
    frame = make_frame()
    source = datasets.DatasetDict({
        "train": datasets.Dataset.from_pandas(frame.iloc[:10]),
        "dev": datasets.Dataset.from_pandas(frame.iloc[10:15]),
        "test": datasets.Dataset.from_pandas(frame.iloc[15:]),
    })
    loaded, _ = load_tabular(source, make_schema(), splits={"validation": "dev"})
    assert [loaded[s].num_rows for s in loaded] == [10, 5, 5]
    assert loaded["validation"]["tags"][1] == ["a", "b"]
    with pytest.raises(ValueError, match=r"no split for validation \(looked for 'validation'\).*splits="):
        load_tabular(source, make_schema())


def test_label_column_is_renamed_to_the_schema_label():
    frame = make_frame().rename(columns={"label": "clicked"})
    loaded, _ = load_tabular(frame, make_schema(), label_column="clicked")
    assert "label" in loaded["train"].column_names and "clicked" not in loaded["train"].column_names


def test_each_recipe_splits_by_time_only_where_its_data_has_timestamps(tmp_path):
    assert {name: recipe_split(name) for name in ("movielens-100k", "movielens-1m", "goodreads", "bookcrossing", "adult")} == {
        "movielens-100k": "time", "movielens-1m": "time", "goodreads": "time", "bookcrossing": "random", "adult": "random",
    }
    assert recipe_split(str(tmp_path)) is None  # a saved dataset is split already


def test_time_split_is_ordered_with_tie_breaks():
    frame = make_frame()
    parts = split_frame(frame, "time", time_column="ts", sort_columns=["user"])
    assert [len(p) for p in parts.values()] == [16, 2, 2]
    train, validation, test = parts.values()
    assert train["ts"].max() <= validation["ts"].min() and validation["ts"].max() <= test["ts"].min()
    ordered = pd.concat(parts.values())
    assert list(zip(ordered["ts"], ordered["user"])) == sorted(zip(frame["ts"], frame["user"]))


def test_time_split_keeps_input_order_among_full_ties():
    frame = pd.DataFrame({"ts": [1] * 10, "k": range(10)})
    parts = split_frame(frame, "time", time_column="ts")
    assert list(pd.concat(parts.values())["k"]) == list(range(10))


def test_random_split_is_seeded_disjoint_and_complete():
    frame = make_frame(50)
    first = split_frame(frame, "random", seed=1)
    assert {k: list(v.index) for k, v in first.items()} == {k: list(v.index) for k, v in split_frame(frame, "random", seed=1).items()}
    assert list(first["test"].index) != list(split_frame(frame, "random", seed=2)["test"].index)
    indices = [i for part in first.values() for i in part.index]
    assert sorted(indices) == list(range(50)) and [len(p) for p in first.values()] == [40, 5, 5]
    assert all(list(p.index) == sorted(p.index) for p in first.values())


def test_user_time_split_holds_out_each_users_latest_rows():
    # user a: 10 rows -> 8/1/1; user b: 5 rows -> 3/1/1 (0.5 rounds up); user c: 4 rows -> all train.
    frame = pd.DataFrame({"user": ["a"] * 10 + ["b"] * 5 + ["c"] * 4,
                          "ts": list(range(10)) + list(range(5)) + list(range(4))})
    parts = split_frame(frame.sample(frac=1, random_state=0), "user_time", time_column="ts", group_column="user")
    counts = {name: part["user"].value_counts().to_dict() for name, part in parts.items()}
    assert counts == {"train": {"a": 8, "b": 3, "c": 4}, "validation": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    assert set(parts["test"]["ts"]) == {9, 4} and set(parts["validation"]["ts"]) == {8, 3}
    assert list(parts["train"]["ts"]) == sorted(parts["train"]["ts"])


def test_user_time_through_load_tabular():
    loaded, _ = load_tabular(make_frame(40), make_schema(), split="user_time")
    assert sum(loaded[s].num_rows for s in loaded) == 40
    assert sorted(loaded["test"]["user"]) == ["u0", "u1", "u2", "u3"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.assign(label=[4] + [1] * 19), r"label column 'label' must hold 0 or 1, but row index 0 .* 4 .*Binarize"),
        (lambda f: f.assign(label=[1] * 5 + [None] + [1] * 14), r"label column 'label' is missing at row index 5"),
        (lambda f: f.drop(columns=["zip"]), r"no column for field\(s\) \['zip'\]"),
        (lambda f: f.drop(columns=["label"]), r"no label column 'label'"),
        (lambda f: f.assign(price=["cheap"] + [1.0] * 19), r"Numeric field 'price' .* 'cheap' at row index 0"),
        (lambda f: f.assign(price=[1.5] * 7 + [float("-inf")] + [1.0] * 12), r"Numeric field 'price' has the infinite value -inf at row index 7"),
        (lambda f: f.assign(price=["2"] * 4 + ["inf"] + ["1"] * 15), r"Numeric field 'price' has the infinite value inf at row index 4"),
        (lambda f: f.assign(user=[["x"]] + ["u"] * 19), r"Categorical field 'user' holds a list .*multi_categorical"),
        (lambda f: f.assign(tags=[3] + ["a"] * 19), r"Multi-categorical field 'tags' has 3 at row index 0"),
        (lambda f: f.assign(ts=[None] + [1] * 19), r"time column 'ts' is missing at row index 0"),
    ],
)
def test_bad_rows_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        load_tabular(change(make_frame()), make_schema())


def test_schema_not_matching_the_data():
    schema = TabularSchema(fields=[FieldSpec("userid"), FieldSpec("zip")])
    with pytest.raises(ValueError, match=r"field\(s\) \['userid'\].*pass a schema whose field names match"):
        load_tabular(make_frame(), schema, split="random")


def test_empty_split_says_which_and_how_many_rows():
    with pytest.raises(ValueError, match=r"The test split is empty.* no row out of 3"):
        load_tabular(make_frame(3), make_schema())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "weekly"}, r"Unknown split 'weekly'"),
        ({"split_ratios": (0.8, 0.3, 0.1)}, r"split_ratios must be three positive fractions"),
        ({"time_column": None, "split": "time"}, r"needs a time column"),
    ],
)
def test_bad_split_arguments(kwargs, message):
    schema = make_schema(time_column=None) if "time_column" in kwargs else make_schema()
    kwargs.pop("time_column", None)
    with pytest.raises(ValueError, match=message):
        load_tabular(make_frame(), schema, **kwargs)


def test_unsupported_and_corrupted_files(tmp_path):
    text = tmp_path / "data.txt"
    text.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data.txt.*unsupported file type.*\.csv.*\.parquet"):
        load_tabular(text, make_schema())
    broken = tmp_path / "data.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match=r"data.parquet.*corrupted.*Supported formats"):
        load_tabular(broken, make_schema())
    empty = tmp_path / "clicks.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"clicks.csv.*the file is empty"):
        load_tabular(empty, make_schema())


def test_a_saved_dataset_with_an_empty_split_is_refused(tmp_path):
    from flip_hf.data import load_saved_dataset, save_dataset
    from flip_hf.data.saved import SCHEMA_FILE

    dataset, schema = load_tabular(make_frame(), make_schema())
    dataset["validation"] = dataset["validation"].select([])
    with pytest.raises(ValueError, match=r"saved.*empty splits: validation \(0 rows\)"):
        save_dataset(dataset, schema, tmp_path / "saved")
    dataset.save_to_disk(str(tmp_path / "saved"))  # saved around save_dataset, which refuses
    (tmp_path / "saved" / SCHEMA_FILE).write_text(json.dumps(schema.to_dict()))
    with pytest.raises(ValueError, match=r"saved.*empty splits: validation \(0 rows\)"):
        load_saved_dataset(tmp_path / "saved")


def test_multi_value_separator():
    frame = make_frame().assign(tags="x; y")
    loaded, _ = load_tabular(frame, make_schema(), multi_value_separator=";")
    assert loaded["train"][0]["tags"] == ["x", "y"]


def test_unknown_recipe_name():
    with pytest.raises(ValueError, match=r"Unknown dataset recipe 'movielens'.*movielens-100k"):
        load_dataset_recipe("movielens")

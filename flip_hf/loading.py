"""Where a checkpoint is read from: errors that name the real cause.

transformers guesses when a source is wrong: a local folder without a processor config fails on the
tokenizer, a missing path is judged as a malformed Hub repo id, and a truncated weights file surfaces
as a bare safetensors header error. These checks run first and say which file is missing or broken.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_source(name_or_path: str | os.PathLike, needs: tuple[str, ...], what: str, fix: str) -> None:
    """Raise FileNotFoundError if `name_or_path` is a local folder without any of `needs`, or neither a
    folder nor a Hub repo id. A well-formed repo id is left to the Hub client (it may be a remote repo)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in needs):
            raise FileNotFoundError(f"{str(path)!r} holds no {what}: it has no {' or '.join(needs)}. {fix}")
        return
    if path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is a file; pass the folder that holds the {what}.")
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        raise FileNotFoundError(
            f"No such folder: {str(name_or_path)!r}, and it is not a Hub repo id ('name' or 'org/name') either. "
            "Check the path."
        ) from None


def unreadable_weights(folder: str | os.PathLike) -> list[str]:
    """The safetensors files of a local folder that cannot be opened (truncated or corrupted)."""
    from safetensors import SafetensorError, safe_open

    broken = []
    for file in sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError):
            broken.append(file.name)
    return broken

"""Saving and publishing FLIP checkpoints with FLIP's model card.

transformers' `model.save_pretrained` writes no README and `model.push_to_hub` a generic one. These
write a complete Hub folder (weights, config, code, processor and FLIP's card with its eval results)
and upload it; `FlipTrainer.save_model` / `push_to_hub` and `scripts/push_to_hub.py` do the same.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from .model_card import FlipModelCardData, refresh_model_card, save_model_card


def card_data_of(model) -> FlipModelCardData:
    """The card data a model carries (set during training), else that of the checkpoint it was loaded from."""
    card_data = getattr(model, "model_card_data", None)
    if card_data is None and getattr(model, "name_or_path", None):
        card_data = FlipModelCardData.from_pretrained(model.name_or_path)
    return card_data or FlipModelCardData()


def save_pretrained(model, save_directory: str | os.PathLike, processor=None, card_data: FlipModelCardData | None = None) -> None:
    """`model.save_pretrained`, `processor.save_pretrained` and FLIP's model card: a folder ready for the Hub."""
    model.save_pretrained(save_directory)
    if processor is not None:
        processor.save_pretrained(save_directory)
    save_model_card(save_directory, model, processor, card_data or card_data_of(model))


def push_to_hub(
    model_or_folder,
    repo_id: str,
    processor=None,
    *,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    token: str | bool | None = None,
    commit_message: str | None = None,
):
    """Publish a FLIP model (with its processor) or a saved folder to the Hub in one commit; returns the `CommitInfo`.

    The card is re-rendered for `repo_id` first, so its usage snippet names the repo. `revision` is a branch
    (created if missing); `create_pr=True` opens a pull request instead of committing.
    """
    if isinstance(model_or_folder, (str, os.PathLike)):
        return _upload_folder(Path(model_or_folder), repo_id, private, revision, create_pr, token, commit_message)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model_or_folder, folder, processor)
        return _upload_folder(Path(folder), repo_id, private, revision, create_pr, token, commit_message)


def _upload_folder(folder: Path, repo_id, private, revision, create_pr, token, commit_message):
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    refresh_model_card(folder, model_id=repo_id)
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or "Upload FLIP model",
        ignore_patterns=["_*", "checkpoint-*"],  # what Trainer.push_to_hub leaves out too
    )

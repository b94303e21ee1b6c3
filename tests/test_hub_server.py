"""The local Hub server works for the real Hub code paths of huggingface_hub and transformers."""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast
from transformers.utils.hub import hf_api as transformers_hf_api

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and or of to in on for with user users movie movies film films book books rated rates "
    "rating likes liked watched read genre comedy drama action horror romance thriller fantasy year "
    "old new good bad great best worst star stars one two three four five is was are were this that "
    "it he she they his her their title author click clicked age male female student writer artist "
    "city country music long short story stories"
).split()
VOCAB = SPECIAL_TOKENS + WORDS + ["##s", "##ed", "##ing", "##er"]
TEXTS = ["the user rated this comedy movie five stars", "she liked the drama book , and watched films"]


@pytest.fixture
def tiny_bert(tmp_path):
    """A tiny random BertModel and a WordPiece tokenizer built from a vocab file."""
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    (vocab_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(vocab_dir)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    torch.manual_seed(0)
    return BertModel(config).eval(), tokenizer


def encode_and_run(model, tokenizer):
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return inputs["input_ids"], model(**inputs).last_hidden_state


def push(model, tokenizer, repo_id="org/tiny"):
    model.push_to_hub(repo_id)
    tokenizer.push_to_hub(repo_id)


def test_clients_point_at_the_local_server(hub_server):
    assert urlsplit(hub_server.endpoint).hostname == "127.0.0.1"
    assert os.environ["HF_ENDPOINT"] == constants.ENDPOINT == hub_server.endpoint
    assert HfApi().endpoint == transformers_hf_api().endpoint == hub_server.endpoint
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])


def test_push_to_hub_then_from_pretrained_in_a_fresh_cache(hub_server, fresh_hf_cache, tiny_bert):
    model, tokenizer = tiny_bert
    push(model, tokenizer)
    remote_files = {sibling.rfilename for sibling in HfApi().model_info("org/tiny").siblings}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= remote_files

    cache = fresh_hf_cache()
    hub_server.requests.clear()
    loaded_model = AutoModel.from_pretrained("org/tiny")
    loaded_tokenizer = AutoTokenizer.from_pretrained("org/tiny")

    downloads = {
        path.rsplit("/", 1)[-1]
        for method, path in hub_server.requests
        if method == "GET" and "/resolve/" in path
    }
    assert {"model.safetensors", "tokenizer.json"} <= downloads
    assert (cache / "models--org--tiny" / "snapshots").is_dir()
    expected_ids, expected_states = encode_and_run(model, tokenizer)
    ids, states = encode_and_run(loaded_model, loaded_tokenizer)
    assert torch.equal(ids, expected_ids)
    torch.testing.assert_close(states, expected_states, rtol=0, atol=0)


def test_snapshot_download_then_offline_loading(hub_server, fresh_hf_cache, hf_offline, tiny_bert):
    model, tokenizer = tiny_bert
    push(model, tokenizer)
    cache = fresh_hf_cache()

    folder = Path(snapshot_download("org/tiny"))
    assert folder.is_relative_to(cache)
    remote_files = {sibling.rfilename for sibling in HfApi().model_info("org/tiny").siblings}
    assert {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()} == remote_files

    hf_offline()
    hub_server.requests.clear()
    loaded_model = AutoModel.from_pretrained("org/tiny")
    loaded_tokenizer = AutoTokenizer.from_pretrained("org/tiny")
    assert hub_server.requests == []
    torch.testing.assert_close(encode_and_run(loaded_model, loaded_tokenizer), encode_and_run(model, tokenizer))


def test_hf_api_uploads_revisions_and_tree(hub_server, tmp_path):
    api = HfApi()
    assert api.create_repo("org/files").repo_id == "org/files"
    assert api.create_repo("org/files", exist_ok=True).repo_id == "org/files"
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first")
    (folder / "sub" / "b.json").write_text("{}")
    first = api.upload_folder(repo_id="org/files", folder_path=folder).oid
    second = api.upload_file(path_or_fileobj=b"second", path_in_repo="a.txt", repo_id="org/files").oid

    assert sorted(api.list_repo_files("org/files")) == ["a.txt", "sub/b.json"]
    top_level = {entry.path: type(entry).__name__ for entry in api.list_repo_tree("org/files")}
    assert top_level == {"a.txt": "RepoFile", "sub": "RepoFolder"}
    assert [entry.path for entry in api.list_repo_tree("org/files", path_in_repo="sub")] == ["sub/b.json"]
    assert Path(hf_hub_download("org/files", "a.txt", revision=first)).read_text() == "first"
    assert Path(hf_hub_download("org/files", "a.txt")).read_text() == "second"
    assert api.repo_info("org/files").sha == second

    api.delete_file("a.txt", repo_id="org/files")
    assert api.list_repo_files("org/files") == ["sub/b.json"]


def test_missing_repo_file_and_revision(hub_server):
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json")
    with pytest.raises(OSError, match="org/missing"):
        AutoModel.from_pretrained("org/missing")

    HfApi().create_repo("org/empty")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/empty", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/empty", "config.json", revision="no-such-branch")

"""Shared pytest fixtures. Keep each group in its own section."""

import pytest
from hub_server import LocalHub, configure_hf_env
from huggingface_hub.utils import close_session

# ------------------------------------------------------------------------------------------------
# Local Hub server (tests/hub_server.py): real `push_to_hub` / `from_pretrained` paths, no network
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A running `LocalHub` that `huggingface_hub` and `transformers` talk to for this test.

    Sets HF_ENDPOINT to the server, HF_HUB_DISABLE_XET=1, a dummy HF_TOKEN, a fresh HF_HOME /
    HF_HUB_CACHE under tmp_path, HF_HUB_OFFLINE=0, HF_HUB_DISABLE_TELEMETRY=1 and NO_PROXY for
    127.0.0.1 (env vars and the module constants copied from them). Yields the server:
    `.endpoint`, `.repos`, `.requests`.
    """
    with LocalHub(tmp_path / "hub_server") as hub:
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        configure_hf_env(monkeypatch, endpoint=hub.endpoint, hf_home=tmp_path / "hf_home", offline=False)
        yield hub
    close_session()  # its connections point at the stopped server


@pytest.fixture
def fresh_hf_cache(tmp_path, monkeypatch):
    """Call it to switch to a new, empty HF_HOME / HF_HUB_CACHE (proves a later load downloads).

    Returns the new hub cache directory.
    """
    count = 0

    def switch():
        nonlocal count
        count += 1
        hf_home = tmp_path / f"hf_home_fresh_{count}"
        configure_hf_env(monkeypatch, hf_home=hf_home)
        return hf_home / "hub"

    return switch


@pytest.fixture
def hf_offline(monkeypatch):
    """Call it to turn on HF_HUB_OFFLINE (env and constant) for the rest of the test."""
    return lambda: configure_hf_env(monkeypatch, offline=True)

"""Load errors name the real cause: the missing file, the broken file, or a path that does not exist."""

import pytest

from flip_hf import FlipForCTR, FlipProcessor
from flip_hf.loading import check_source

NO_SUCH_FOLDER = r"No such folder: '/nonexistent/flip', and it is not a Hub repo id"


def test_a_model_folder_without_a_processor_says_so(tmp_path, make_tiny_flip):
    make_tiny_flip("id").save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no FlipProcessor: it has no processor_config.json.*processor.save_pretrained"):
        FlipProcessor.from_pretrained(tmp_path)


def test_a_processor_folder_without_weights_says_so(tmp_path, tiny_flip_processor):
    tiny_flip_processor.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no FLIP model weights: it has no model.safetensors"):
        FlipForCTR.from_pretrained(tmp_path)


@pytest.mark.parametrize("load", [FlipForCTR.from_pretrained, FlipProcessor.from_pretrained])
def test_a_missing_path_is_not_judged_as_a_repo_id(load):
    with pytest.raises(FileNotFoundError, match=NO_SUCH_FOLDER):
        load("/nonexistent/flip")


def test_a_file_instead_of_its_folder(tmp_path, make_tiny_flip):
    make_tiny_flip("id").save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model.safetensors' is a file; pass the folder"):
        FlipForCTR.from_pretrained(tmp_path / "model.safetensors")


def test_a_well_formed_repo_id_is_left_to_the_hub_client():
    assert check_source("org/flip-movielens", ("config.json",), "model", "") is None


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_weights_are_named(tmp_path, make_tiny_flip, keep):
    make_tiny_flip("id").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(OSError, match=r"Cannot read the weights of .*: model.safetensors is truncated or corrupted"):
        FlipForCTR.from_pretrained(tmp_path)

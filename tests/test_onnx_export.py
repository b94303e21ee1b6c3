"""ONNX export of FLIP_ID: every backbone exports, onnxruntime matches PyTorch at any batch size,
text/joint modes and missing packages are refused by name."""

import sys

import numpy as np
import pytest
import torch
from tiny import tiny_rows

from flip_hf.backbones import available_backbones
from flip_hf.configuration_flip import MASK_ID, PAD_ID, UNKNOWN_ID
from flip_hf.onnx_export import OnnxCTRModel, export_onnx

BATCH_SIZES = (1, 7, 64)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def make_id_model(make_tiny_flip):
    return lambda backbone, **config: make_tiny_flip("id", backbone=backbone, embedding_size=8, **config)


def _pytorch_probabilities(model, feature_ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(feature_ids=feature_ids).probabilities.numpy()


def _random_feature_ids(config, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Ids drawn per slot from the slot's own field vocabulary, pad, unknown and mask included."""
    columns = [
        torch.randint(0, field["vocab_size"], (batch_size, 1), generator=generator)
        for field in config.fields
        for _ in range(field["num_slots"])
    ]
    return torch.cat(columns, dim=1)


@pytest.mark.parametrize("backbone", available_backbones())
def test_every_backbone_exports_with_a_dynamic_batch(backbone, make_id_model, tmp_path):
    model = make_id_model(backbone)
    path = export_onnx(model, tmp_path / f"{backbone}.onnx")
    onnx_model = OnnxCTRModel(path)
    generator = torch.Generator().manual_seed(0)
    for batch_size in BATCH_SIZES:
        feature_ids = _random_feature_ids(model.config, batch_size, generator)
        outputs = onnx_model.run(feature_ids)
        expected = _pytorch_probabilities(model, feature_ids)
        assert outputs["probabilities"].shape == outputs["logits"].shape == (batch_size,)
        assert np.abs(outputs["probabilities"] - expected).max() <= TOLERANCE
        np.testing.assert_allclose(1 / (1 + np.exp(-outputs["logits"])), outputs["probabilities"], atol=TOLERANCE)


def test_multi_valued_fields_and_unknown_ids(tiny_flip_processor, make_id_model, tmp_path):
    """Rows as the processor encodes them: padded multi-valued slots, unseen values as the unknown id."""
    model = make_id_model("dcnv2", id_first_order=True)
    rows = tiny_rows(16, seed=3)
    rows["user_id"][:4] = ["unseen-user"] * 4
    rows["title"][2:6] = ["an unseen title"] * 4
    rows["genres"][5] = ["musical", "comedy"]
    rows["genres"][6] = ["drama"]
    feature_ids = torch.tensor(tiny_flip_processor.encode_ids(rows))
    genre_slots = feature_ids[:, -2:]  # genres is the last field, with two slots
    assert (feature_ids == UNKNOWN_ID).any(dim=1).sum() >= 6  # unseen users, titles and genres
    assert (genre_slots == PAD_ID).any() and (genre_slots > MASK_ID).all(dim=1).any()  # one genre and two genres

    onnx_model = OnnxCTRModel(export_onnx(model, tmp_path / "flip_id.onnx"))
    expected = _pytorch_probabilities(model, feature_ids)
    assert np.abs(onnx_model(feature_ids) - expected).max() <= TOLERANCE
    assert np.abs(onnx_model(feature_ids.numpy()) - expected).max() <= TOLERANCE


def test_export_leaves_a_training_model_in_training_mode(make_id_model, tmp_path):
    model = make_id_model("dnn").train()
    onnx_model = OnnxCTRModel(export_onnx(model, tmp_path / "nested" / "model.onnx"))
    assert model.training
    feature_ids = _random_feature_ids(model.config, 5, torch.Generator().manual_seed(1))
    # exported without dropout: it matches the model in eval mode
    assert np.abs(onnx_model(feature_ids) - _pytorch_probabilities(model.eval(), feature_ids)).max() <= TOLERANCE


@pytest.mark.parametrize("mode", ["text", "joint"])
def test_text_and_joint_modes_are_refused(mode, make_tiny_flip, tmp_path):
    model = make_tiny_flip(mode, embedding_size=8)
    with pytest.raises(ValueError, match=f"ctr_mode={mode!r}") as error:
        export_onnx(model, tmp_path / "model.onnx")
    assert "PLM" in str(error.value) and "ctr_mode='id'" in str(error.value)
    assert not (tmp_path / "model.onnx").exists()


def test_wrong_input_width_is_refused(make_id_model, tmp_path):
    model = make_id_model("lr")
    onnx_model = OnnxCTRModel(export_onnx(model, tmp_path / "lr.onnx"))
    num_slots = sum(field["num_slots"] for field in model.config.fields)
    with pytest.raises(ValueError, match=rf"\(batch, {num_slots}\)"):
        onnx_model(np.ones((3, num_slots - 1), dtype=np.int64))


def test_export_without_onnxscript_names_the_extra(make_id_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "flip_hf\[onnx\]"'):
        export_onnx(make_id_model("lr"), tmp_path / "model.onnx")


def test_runner_without_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "flip_hf\[onnx\]"'):
        OnnxCTRModel(tmp_path / "model.onnx")

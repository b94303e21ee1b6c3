"""Piecewise-linear numeric fields: positions inside buckets, the interpolated embedding, and a threshold label that
bucket ids cannot rank inside the threshold's bucket but the interpolation can."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tiny import tiny_bert_config, tiny_rows
from transformers import pipeline

from flip_hf import DataCollatorForFlipPretraining, FlipConfig, FlipForCTR, FlipForPretraining, FlipProcessor
from flip_hf.configuration_flip import MASK_ID, UNKNOWN_ID
from flip_hf.onnx_export import OnnxCTRModel, export_onnx
from flip_hf.pipeline import register_pipeline
from flip_hf.schema import FieldSpec, TabularSchema

PLE = "piecewise_linear"


@pytest.fixture(scope="module")
def processor(bert_tokenizer):
    """x: buckets [0, 2) [2, 4) [4, 6) [6, 8] over a training range of 0..8; y: a second numeric field, whose
    minimum (10) holds more than half of the rows: a point mass with a bucket of its own, [10, 20)."""
    schema = TabularSchema([FieldSpec("x", kind="numeric", num_buckets=4), FieldSpec("c"),
                            FieldSpec("y", kind="numeric", num_buckets=2)])
    train = {"x": [0.0, 1, 2, 3, 4, 5, 6, 7, 8], "c": list("aabbccdde"), "y": [10.0, 10, 10, 10, 10, 20, 30, 40, 50]}
    return FlipProcessor(bert_tokenizer, schema).fit(train)


def rows(xs, ys=None):
    return {"x": xs, "c": ["a"] * len(xs), "y": ys or [10.0] * len(xs), "label": [0] * len(xs)}


def encode(processor, xs, ys=None):
    return processor(rows(xs, ys), text=False)


def tensors(processor, xs):
    inputs = processor(rows(xs), text=False, return_tensors="pt")
    inputs.pop("labels")
    return inputs


# ----------------------------------------------------------------------------------------- processor
def test_positions_are_exact_on_hand_computed_values(processor):
    assert processor.bucket_boundaries[0] == [2.0, 4.0, 6.0] and processor.numeric_ranges == [[0.0, 8.0], None, [10.0, 50.0]]
    xs = [0.0, 1.0, 2.0, 3.5, 7.0, 8.0, -5.0, 100.0, None, float("nan")]
    out = encode(processor, xs)
    assert [ids[0] for ids in out["feature_ids"]] == [3, 3, 4, 4, 6, 6, 3, 6, UNKNOWN_ID, UNKNOWN_ID]
    # on a boundary a number starts the next bucket; below the minimum / above the maximum it is clamped
    assert [p[0] for p in out["numeric_positions"]] == [0.0, 0.5, 0.0, 0.75, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert all(len(p) == 2 for p in out["numeric_positions"])  # one column per numeric field, in field order


def test_a_zero_width_bucket_has_position_zero(processor):
    # below y's training minimum (10) lies a bucket of zero width, [10, 10): anything there sits at t = 0
    assert processor.bucket_boundaries[2] == [10.0, 20.0]
    out = encode(processor, [0.0] * 4, ys=[5.0, 10.0, 35.0, 60.0])
    assert [ids[2] for ids in out["feature_ids"]] == [3, 4, 5, 5]
    assert [p[1] for p in out["numeric_positions"]] == [0.0, 0.0, 0.5, 1.0]


def test_a_point_mass_gets_a_bucket_of_its_own(bert_tokenizer):
    """Adult's capital-gain: 0 in most rows. Plain quantiles would all be 0 and leave one bucket for the whole
    field; the zeros get their own bucket, and the other values share the remaining ones by quantile."""
    gains = [0.0] * 90 + [float(v) for v in range(1, 11)]
    schema = TabularSchema([FieldSpec("gain", kind="numeric", num_buckets=4), FieldSpec("plain", kind="numeric", num_buckets=4)])
    fitted = FlipProcessor(bert_tokenizer, schema).fit({"gain": gains, "plain": [float(v) for v in range(100)]})
    gain_edges, plain_edges = fitted.bucket_boundaries
    assert gain_edges[:2] == [0.0, 1.0] and len(gain_edges) == 3  # [0, 1) holds the zeros; 2 buckets split 1..10
    assert plain_edges == np.quantile(np.arange(100.0), [0.25, 0.5, 0.75]).tolist()  # no point mass: plain quantiles
    ids = np.asarray(fitted({"gain": [0.0, 0.0, 3.0, 9.0], "plain": [1.0] * 4}, text=False)["feature_ids"])[:, 0]
    assert ids[0] == ids[1] and len(set(ids[1:].tolist())) == 3  # zero, a small and a large gain: three buckets


def test_positions_survive_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["numeric_ranges"] == [[0.0, 8.0], None, [10.0, 50.0]]  # a list per field, never a dict
    loaded = FlipProcessor.from_pretrained(tmp_path)
    xs = [0.0, 1.0, 3.5, 7.0, None, 9.0]
    assert encode(loaded, xs) == encode(processor, xs)
    expected, actual = tensors(processor, xs), tensors(loaded, xs)
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def test_a_processor_saved_before_ranges_gives_position_zero(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    del config["numeric_ranges"]
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    old = FlipProcessor.from_pretrained(tmp_path)
    out = encode(old, [1.0, 3.5, 7.0])
    assert out["feature_ids"] == encode(processor, [1.0, 3.5, 7.0])["feature_ids"]
    assert out["numeric_positions"] == [[0.0, 0.0]] * 3
    # the fingerprint covers the ranges (other ranges, other positions: a mismatched pair is caught)
    assert old.vocabulary_fingerprint() != processor.vocabulary_fingerprint()
    old.numeric_ranges = [[0.0, 9.0], None, [10.0, 50.0]]
    assert old.vocabulary_fingerprint() != processor.vocabulary_fingerprint()
    old.numeric_ranges = [list(r) if r else None for r in processor.numeric_ranges]
    assert old.vocabulary_fingerprint() == processor.vocabulary_fingerprint()


# -------------------------------------------------------------------------------------------- model
def id_model(processor, numeric_encoding=PLE, **config):
    """An LR FLIP_ID model; embeddings start large, so that interpolating between them shows."""
    torch.manual_seed(0)
    config = FlipConfig(fields=processor.field_infos(), ctr_mode="id", backbone="lr", embedding_size=4,
                        numeric_encoding=numeric_encoding, **{"embedding_init_std": 1.0, **config})
    return FlipForCTR(config).eval()


def test_unknown_numeric_encoding_is_refused():
    with pytest.raises(ValueError, match="numeric_encoding 'spline'.*bucket, piecewise_linear"):
        FlipConfig(fields=[{"name": "x", "vocab_size": 5, "kind": "numeric"}], numeric_encoding="spline")


def test_field_embedding_is_the_hand_computed_interpolation(processor):
    model = id_model(processor)
    embeddings = model.flip.id_encoder.embeddings
    table = embeddings.embedding.weight.detach()
    x_offset, y_offset = embeddings.field_offsets[0], embeddings.field_offsets[2]
    inputs = tensors(processor, [1.0, 3.5, 7.0, None, 2.0])
    ids, positions = inputs["feature_ids"], inputs["numeric_positions"]
    with torch.no_grad():
        out = embeddings(ids, positions)
        plain = embeddings(ids)
    expected_x = [
        0.5 * table[x_offset + 3] + 0.5 * table[x_offset + 4],  # 1.0: halfway through bucket 0
        0.25 * table[x_offset + 4] + 0.75 * table[x_offset + 5],  # 3.5: three quarters through bucket 1
        table[x_offset + 6],  # 7.0: the last bucket interpolates towards itself
        table[x_offset + UNKNOWN_ID],  # null
        table[x_offset + 4],  # 2.0: the start of bucket 1
    ]
    torch.testing.assert_close(out[:, 0], torch.stack(expected_x))
    torch.testing.assert_close(out[:, 1], plain[:, 1], rtol=0, atol=0)  # categorical fields are untouched
    torch.testing.assert_close(out[:, 2], table[y_offset + 4].expand(5, -1))  # y = 10: t = 0 in y's last bucket
    assert torch.equal(plain, embeddings(ids, torch.zeros_like(positions)))  # no positions: t = 0, the buckets
    masked = ids.clone()
    masked[:, 0] = MASK_ID
    assert torch.equal(embeddings(masked, positions)[:, 0], table[x_offset + MASK_ID].expand(5, -1))


def test_bucket_encoding_and_missing_positions_behave_as_before(processor):
    inputs = tensors(processor, [1.0, 3.5, 7.0])
    bucket, ple = id_model(processor, "bucket", id_first_order=True), id_model(processor, PLE, id_first_order=True)
    with torch.no_grad():
        reference = bucket(feature_ids=inputs["feature_ids"]).logits
        assert torch.equal(bucket(**inputs).logits, reference)  # bucket encoding ignores positions
        assert torch.equal(ple(feature_ids=inputs["feature_ids"]).logits, reference)  # same weights, t = 0
        assert not torch.allclose(ple(**inputs).logits, reference)
    assert not bucket.config.uses_numeric_positions and ple.config.uses_numeric_positions


def test_pretraining_carries_positions(tiny_flip_processor):
    processor, tokenizer = tiny_flip_processor, tiny_flip_processor.tokenizer
    config = FlipConfig(fields=processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn",
                        embedding_size=8, pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                        numeric_encoding=PLE)
    torch.manual_seed(0)
    model = FlipForPretraining(config)
    encoded = processor(tiny_rows(8))
    batch = DataCollatorForFlipPretraining(processor, id_mask_ratio=0.5)([dict(zip(encoded, row)) for row in zip(*encoded.values())])
    assert batch["numeric_positions"].shape == (8, 1) and batch["numeric_positions"].dtype == torch.float32
    output = model(**batch)
    assert torch.isfinite(output.loss) and output.mtm_loss is not None
    output.loss.backward()


# ----------------------------------------------------------------------------------------- consumers
def test_onnx_graph_takes_positions(processor, tmp_path):
    model = id_model(processor, PLE)
    onnx_model = OnnxCTRModel(export_onnx(model, tmp_path / "ple.onnx"))
    inputs = tensors(processor, [1.0, 3.5, 7.0, None, -1.0, 9.0, 5.5])
    with torch.no_grad():
        expected = model(**inputs).probabilities.numpy()
        without_positions = model(feature_ids=inputs["feature_ids"]).probabilities.numpy()
    assert [node.name for node in onnx_model.session.get_inputs()] == ["feature_ids", "numeric_positions"]
    np.testing.assert_allclose(onnx_model(**inputs), expected, atol=1e-5)
    np.testing.assert_allclose(onnx_model(inputs["feature_ids"]), without_positions, atol=1e-5)  # t = 0, as in torch
    with pytest.raises(ValueError, match=r"numeric_positions must have shape \(batch, 2\)"):
        onnx_model(inputs["feature_ids"], inputs["numeric_positions"][:, :1])
    bucket_graph = OnnxCTRModel(export_onnx(id_model(processor, "bucket"), tmp_path / "bucket.onnx"))
    assert [node.name for node in bucket_graph.session.get_inputs()] == ["feature_ids"]


def test_pipeline_passes_positions(processor, tmp_path):
    register_pipeline()
    model = id_model(processor, PLE)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    ctr = pipeline("ctr-prediction", model=str(tmp_path), device="cpu")
    columns = rows([1.0, 3.5, 7.0])
    with torch.no_grad():
        expected = model(**tensors(processor, columns["x"])).probabilities.tolist()
    row_dicts = [dict(zip(columns, values)) for values in zip(*columns.values())]
    assert [p["probability"] for p in ctr(row_dicts)] == pytest.approx(expected)  # a list: encoded in batches
    assert ctr(row_dicts[1])["probability"] == pytest.approx(expected[1])  # one row: the pipeline's preprocess


# --------------------------------------------------------------------------------- threshold label
def threshold_rows(num_rows: int, seed: int) -> dict[str, list]:
    """label = (x > 0.37), x uniform in [0, 1]; two categorical fields carry no signal."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, num_rows)
    return {"x": x.tolist(), "color": rng.choice(list("rgbyk"), num_rows).tolist(),
            "shop": [str(s) for s in rng.integers(0, 10, num_rows)], "label": (x > 0.37).astype(int).tolist()}



def test_a_threshold_is_ranked_inside_its_bucket(bert_tokenizer, one_thread):
    import lightgbm
    schema = TabularSchema([FieldSpec("x", kind="numeric", num_buckets=8), FieldSpec("color"), FieldSpec("shop")])
    train, test = threshold_rows(3000, seed=0), threshold_rows(1000, seed=1)
    processor = FlipProcessor(bert_tokenizer, schema).fit(train)
    train_inputs = processor(train, text=False, return_tensors="pt")
    test_inputs = processor(test, text=False, return_tensors="pt")
    labels = test_inputs.pop("labels").numpy()
    threshold_bucket = processor.encode_ids({"x": [0.37], "color": ["r"], "shop": ["0"]})[0][0]
    inside = (test_inputs["feature_ids"][:, 0] == threshold_bucket).numpy()
    assert 0 < labels[inside].mean() < 1  # the threshold's bucket holds both classes

    def fit(numeric_encoding):
        model = id_model(processor, numeric_encoding, embedding_init_std=1e-4).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(300):  # full batch
            optimizer.zero_grad()
            model(**train_inputs).loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = model.eval()(**test_inputs).logits.numpy()
        return roc_auc_score(labels, logits), roc_auc_score(labels[inside], logits[inside])

    bucket_auc, bucket_inside = fit("bucket")
    ple_auc, ple_inside = fit(PLE)
    booster = lightgbm.LGBMClassifier(n_estimators=200, verbose=-1, n_jobs=1).fit(np.asarray(train["x"])[:, None], train["label"])
    lightgbm_auc = roc_auc_score(labels, booster.predict_proba(np.asarray(test["x"])[:, None])[:, 1])

    assert ple_auc >= 0.99 and ple_auc >= lightgbm_auc - 0.005
    assert ple_inside >= 0.95  # monotone in x; only the noise fields can swap rows of nearly equal x
    # a bucket id is one value for the whole bucket: inside it only the noise fields order the rows. Over all rows
    # the gap is small (the bucket ends at about 0.373, just past the threshold), but the bucket cannot close it.
    assert bucket_inside <= 0.8 and bucket_auc < ple_auc

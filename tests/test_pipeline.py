"""The "ctr-prediction" pipeline: rows, lists and datasets in; click probabilities out; every mode."""

import pytest
import torch
from datasets import Dataset
from tiny import tiny_rows
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from flip_hf.pipeline import CTRPredictionPipeline, register_pipeline

MODES = ["id", "text", "joint"]


def as_rows(columns: dict[str, list]) -> list[dict]:
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, make_tiny_flip, tiny_flip_processor):
    """ctr_mode -> (directory with model + processor, the model)."""
    register_pipeline()
    saved = {}
    for mode in MODES:
        directory = tmp_path_factory.mktemp(f"flip_{mode}")
        model = make_tiny_flip(mode)
        model.save_pretrained(directory)
        tiny_flip_processor.save_pretrained(directory)
        saved[mode] = directory, model
    return saved


@pytest.fixture(scope="module", params=MODES)
def ctr(request, saved_models):
    directory, model = saved_models[request.param]
    return pipeline("ctr-prediction", model=str(directory), device="cpu"), model


def expected_probabilities(model, processor, rows):
    inputs = processor({k: [r[k] for r in rows] for k in rows[0]}, text=model.config.ctr_mode != "id", return_tensors="pt")
    inputs.pop("labels", None)
    with torch.no_grad():
        return model(**inputs).probabilities.tolist()


def test_registered_task_loads_model_and_processor(ctr):
    pipe, model = ctr
    assert isinstance(pipe, CTRPredictionPipeline)
    assert type(pipe.model).__name__ == "FlipForCTR" and pipe.model.config.ctr_mode == model.config.ctr_mode
    assert type(pipe.processor).__name__ == "FlipProcessor"
    register_pipeline()  # idempotent
    assert PIPELINE_REGISTRY.supported_tasks["ctr-prediction"]["impl"] is CTRPredictionPipeline


def test_single_row_and_list(ctr, tiny_flip_processor):
    pipe, model = ctr
    rows = as_rows(tiny_rows(6, seed=3))  # with label and timestamp columns, which are ignored
    single = pipe(rows[0])
    assert set(single) == {"probability"} and isinstance(single["probability"], float)
    many = pipe(rows)
    assert [out["probability"] for out in many] == pytest.approx(expected_probabilities(model, tiny_flip_processor, rows), abs=1e-6)
    assert many[0]["probability"] == pytest.approx(single["probability"], abs=1e-6)


def test_batch_size_and_dataset_input(ctr):
    pipe, _ = ctr
    columns = tiny_rows(7, seed=4)
    one_by_one = [out["probability"] for out in pipe(as_rows(columns))]
    batched = [out["probability"] for out in pipe(as_rows(columns), batch_size=3)]
    streamed = pipe(Dataset.from_dict(columns), batch_size=4)
    assert not isinstance(streamed, list)  # datasets stream lazily, as in every transformers pipeline
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert [out["probability"] for out in streamed] == pytest.approx(one_by_one, abs=1e-5)


def test_unseen_values_map_to_unknown(ctr):
    pipe, _ = ctr
    row = as_rows(tiny_rows(1))[0]
    out = pipe({**row, "user_id": "never-seen", "title": "a new film", "genres": ["western"], "gender": None})
    assert 0.0 < out["probability"] < 1.0


def test_missing_field_is_named(ctr):
    pipe, _ = ctr
    row = as_rows(tiny_rows(1))[0]
    del row["genres"]
    with pytest.raises(ValueError, match=r"field\(s\) \['genres'\]"):
        pipe(row)


def test_id_mode_never_tokenizes(saved_models, monkeypatch):
    pipe = pipeline("ctr-prediction", model=str(saved_models["id"][0]), device="cpu")

    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was called in id mode")

    monkeypatch.setattr(type(pipe.processor.tokenizer), "__call__", refuse)
    monkeypatch.setattr(pipe.processor, "encode_text", refuse)
    rows = as_rows(tiny_rows(5))
    assert len(pipe(rows, batch_size=2)) == 5
    assert "probability" in pipe(rows[0])


def test_precomputed_text_vectors_skip_the_plm(tmp_path, make_tiny_flip, tiny_flip_processor, monkeypatch):
    model = make_tiny_flip("joint", freeze_text_encoder=True)
    model.save_pretrained(tmp_path)
    tiny_flip_processor.save_pretrained(tmp_path)
    pipe = pipeline("ctr-prediction", model=str(tmp_path), device="cpu")
    rows = as_rows(tiny_rows(4))
    expected = expected_probabilities(model, tiny_flip_processor, rows)
    encoded = tiny_flip_processor({k: [r[k] for r in rows] for k in rows[0]}, return_tensors="pt")
    with torch.no_grad():
        vectors = model.embed_text(encoded["input_ids"], encoded["attention_mask"])
    # served from the vectors: neither the tokenizer nor the PLM runs
    monkeypatch.setattr(pipe.processor, "encode_text", lambda *a, **k: pytest.fail("tokenized a row with a vector"))
    monkeypatch.setattr(type(pipe.model), "embed_text", lambda *a, **k: pytest.fail("ran the PLM"))
    with_vectors = [{**row, "text_embeds": vector.tolist()} for row, vector in zip(rows, vectors)]
    got = [out["probability"] for out in pipe(with_vectors, batch_size=2)]
    assert got == pytest.approx(expected, abs=1e-5)


def test_a_list_is_encoded_a_batch_at_a_time(saved_models, tiny_flip_processor, monkeypatch):
    directory, model = saved_models["id"]
    pipe = pipeline("ctr-prediction", model=str(directory), device="cpu")
    calls = []
    encode = type(pipe.processor).__call__
    monkeypatch.setattr(type(pipe.processor), "__call__", lambda self, batch, **kw: calls.append(len(batch["user_id"])) or encode(self, batch, **kw))
    rows = as_rows(tiny_rows(7, seed=5))
    got = [out["probability"] for out in pipe(rows, batch_size=3)]
    assert calls == [3, 3, 1]  # one encoding per batch, not one per row
    monkeypatch.undo()
    assert got == pytest.approx(expected_probabilities(model, tiny_flip_processor, rows), abs=1e-6)
    with pytest.raises(TypeError, match="rows as dicts"):
        pipe([rows[0], "not a row"])
    assert pipe([]) == []


def test_a_processor_that_assigns_other_ids_is_refused(tmp_path, tiny_text_model_dir, tiny_flip_processor):
    from tiny import tiny_bert_tokenizer, tiny_schema

    from flip_hf import FlipForCTR, FlipProcessor

    model = FlipForCTR.from_text_pretrained(tiny_text_model_dir, tiny_flip_processor, ctr_mode="id", backbone="dnn")
    assert model.config.vocabulary_fingerprint == tiny_flip_processor.vocabulary_fingerprint()
    model.save_pretrained(tmp_path)
    # same fields and vocabulary sizes, other rows: the ids mean other values
    other = FlipProcessor(tiny_bert_tokenizer(), tiny_schema()).fit(tiny_rows(64, seed=9))
    assert [f["vocab_size"] for f in other.field_infos()] == [f["vocab_size"] for f in tiny_flip_processor.field_infos()]
    with pytest.raises(ValueError, match=r"assigns other ids.*AutoProcessor.from_pretrained"):
        pipeline("ctr-prediction", model=str(tmp_path), processor=other, device="cpu")
    tiny_flip_processor.save_pretrained(tmp_path)
    assert pipeline("ctr-prediction", model=str(tmp_path), device="cpu")(as_rows(tiny_rows(1))[0])["probability"] > 0

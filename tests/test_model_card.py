"""Model cards: Hub metadata with eval results, a complete body, a snippet that runs, no network."""

import contextlib
import io
import logging
import re
import socket

import pytest
from huggingface_hub import ModelCard

import flip_hf
from flip_hf import FlipConfig, FlipForPretraining
from flip_hf.model_card import FlipModelCardData, generate_model_card, save_model_card

SECTIONS = [
    "## Model Details", "### What FLIP is", "### This checkpoint", "### Fields", "### Prompt", "## Usage",
    "## Evaluation", "## Training Details", "### Training Data", "### Hyperparameters",
    "### Training Time and Hardware", "### Framework Versions", "## Intended Use and Limitations", "## Citation",
]


def card_data_with_results(**overrides) -> FlipModelCardData:
    card_data = FlipModelCardData(
        model_id="org/flip-movielens", dataset_name="MovieLens-1M", split_description="time-ordered 8:1:1", **overrides
    )
    card_data.add_results("joint", "validation", {"eval_auc": 0.8123, "eval_logloss": 0.5234, "eval_gauc": 0.7345})
    card_data.add_results("joint", "test", {"test_auc": 0.8011, "test_logloss": 0.5312, "test_gauc": 0.7222})
    card_data.add_results("id", "test", {"auc": 0.7901, "logloss": 0.5401})
    card_data.training_hyperparameters = {"learning_rate": 5e-5, "num_train_epochs": 2.0}
    card_data.training_seconds = 125.0
    card_data.hardware = "CPU: Test CPU (4 cores)"
    return card_data


def python_snippet(card: ModelCard) -> str:
    return re.search(r"```python\n(.*?)```", card.text, flags=re.DOTALL).group(1)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may touch the network: offline mode, and any connection attempt fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a model-card test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_model_index_holds_exactly_the_given_numbers(make_tiny_flip, tiny_flip_processor):
    card = generate_model_card(make_tiny_flip("joint"), tiny_flip_processor, card_data_with_results())
    data = ModelCard(str(card)).data  # parse the README as the Hub does

    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {
        ("validation", "roc_auc"): 0.8123, ("validation", "log_loss"): 0.5234, ("validation", "gauc"): 0.7345,
        ("test", "roc_auc"): 0.8011, ("test", "log_loss"): 0.5312, ("test", "gauc"): 0.7222,
    }  # only this checkpoint's mode: FLIP_ID's numbers stay in the body
    assert {(r.task_type, r.dataset_name, r.dataset_type) for r in data.eval_results} == {
        ("tabular-classification", "MovieLens-1M", "movielens-1m")
    }
    assert data.model_name == "org/flip-movielens"
    assert (data.pipeline_tag, data.library_name, data.license) == ("tabular-classification", "transformers", "apache-2.0")
    assert {"flip", "ctr-prediction", "recommendation"} <= set(data.tags)
    assert data.base_model == "org/tiny-bert"


def test_body_has_every_section(make_tiny_flip, tiny_flip_processor):
    card = generate_model_card(make_tiny_flip("joint"), tiny_flip_processor, card_data_with_results())
    text = card.text
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "This checkpoint: FLIP (`ctr_mode=\"joint\"`)" in text
    for field in tiny_flip_processor.field_infos():
        assert f"| `{field['name']}` | {field['kind']} | {field['vocab_size']} |" in text
    assert "user id is {user_id}. gender is {gender}." in text  # the template
    assert re.search(r"```text\nuser id is \d+\. gender is (male|female)\.", text)  # one rendered example
    assert "| **FLIP** (this model) | validation | 0.8123 | 0.5234 | 0.7345 |" in text
    assert "| FLIP_ID | test | 0.7901 | 0.5401 | - |" in text
    assert "`learning_rate`: `5e-05`" in text and "`embedding_size`" not in text  # only non-defaults
    assert "Training time: 2.1 minutes" in text and "Test CPU" in text
    assert "- transformers: " in text and "- torch: " in text
    assert "arXiv" in text and "2310.19453" in text and "RecSys" in text


def test_local_plm_path_is_not_declared_as_base_model(make_tiny_flip, tmp_path):
    model = make_tiny_flip("id")
    model.config.text_model_name_or_path = str(tmp_path)
    card = generate_model_card(model, card_data=FlipModelCardData())
    assert ModelCard(str(card)).data.base_model is None
    assert "No evaluation results were recorded" in card.text
    assert "This variant needs no language model at serving time." in card.text


@pytest.mark.parametrize("ctr_mode", ["id", "joint"])
def test_usage_snippet_runs(make_tiny_flip, tiny_flip_processor, tmp_path, ctr_mode):
    from flip_hf.pipeline import register_pipeline

    register_pipeline()
    model = make_tiny_flip(ctr_mode)
    model.save_pretrained(tmp_path)
    tiny_flip_processor.save_pretrained(tmp_path)
    card = generate_model_card(model, tiny_flip_processor, FlipModelCardData(model_id=str(tmp_path)))

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(python_snippet(card), {})
    assert "{'probability': " in output.getvalue() and "tensor([" in output.getvalue()


def test_pretraining_checkpoint_card(tiny_flip_processor):
    from tiny import tiny_bert_config

    tokenizer = tiny_flip_processor.tokenizer
    config = FlipConfig(
        fields=tiny_flip_processor.field_infos(), text_config=tiny_bert_config(len(tokenizer)), backbone="dnn",
        pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
    )
    card = generate_model_card(FlipForPretraining(config), tiny_flip_processor, FlipModelCardData(model_id="org/flip-pt"))
    assert "# FLIP pretraining" in card.text
    assert 'FlipForCTR.from_pretrained("org/flip-pt", ctr_mode="joint")' in python_snippet(card)


def test_card_data_round_trips_through_json(make_tiny_flip, tiny_flip_processor, tmp_path):
    card_data = card_data_with_results()
    save_model_card(tmp_path, make_tiny_flip("joint"), tiny_flip_processor, card_data)
    loaded = FlipModelCardData.load(tmp_path)
    assert loaded == card_data
    assert FlipModelCardData.from_pretrained(tmp_path) == card_data
    assert FlipModelCardData.load(tmp_path / "missing") is None
    assert ModelCard.load(tmp_path / "README.md").text == generate_model_card(make_tiny_flip("joint"), card_data=loaded).text


def test_failing_generation_does_not_break_saving(make_tiny_flip, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(ModelCard, "from_template", broken)
    with caplog.at_level(logging.WARNING, logger="flip_hf.model_card"):
        save_model_card(tmp_path, make_tiny_flip("id"))
    assert "Could not write the model card" in caplog.text
    assert not (tmp_path / "README.md").exists()


def test_save_pretrained_writes_the_card_and_survives_a_failing_one(make_tiny_flip, tiny_flip_processor, tmp_path, monkeypatch):
    model = make_tiny_flip("id")
    model.model_card_data = card_data_with_results()
    flip_hf.save_pretrained(model, tmp_path / "ok", tiny_flip_processor)
    assert ModelCard.load(tmp_path / "ok" / "README.md").data.model_name == "org/flip-movielens"
    assert (tmp_path / "ok" / "processor_config.json").is_file()

    model.save_pretrained(tmp_path / "plain")  # transformers' save: weights, config and code, no card
    assert not (tmp_path / "plain" / "README.md").exists() and (tmp_path / "plain" / "modeling_flip.py").is_file()

    monkeypatch.setattr(ModelCard, "from_template", lambda *a, **k: 1 / 0)
    flip_hf.save_pretrained(model, tmp_path / "broken")
    assert (tmp_path / "broken" / "model.safetensors").is_file()


def test_callback_fills_the_card_during_training(trained_flip_dir, tiny_flip_processor):
    import torch
    from tiny import tiny_rows

    from flip_hf.metrics import compute_ctr_metrics

    directory, model = trained_flip_dir
    card_data = model.model_card_data
    splits = {(entry["ctr_mode"], entry["split"]) for entry in card_data.results}
    assert splits == {("joint", "validation"), ("joint", "test"), ("id", "test")}
    # the numbers are flip_hf.metrics on the model's predictions for the evaluated rows (no gAUC: no groups given)
    for split, seed in (("validation", 1), ("test", 2)):
        rows = tiny_rows(32, seed=seed)
        with torch.no_grad():
            logits = model(**tiny_flip_processor(rows, return_tensors="pt")).logits.reshape(-1).numpy()
        expected = compute_ctr_metrics(logits, rows["label"], from_logits=True)
        recorded = next(e for e in card_data.results if e["split"] == split and e["ctr_mode"] == "joint")["metrics"]
        assert recorded == pytest.approx(expected, abs=1e-6), split
    assert card_data.training_hyperparameters["learning_rate"] == 1e-3
    assert "output_dir" not in card_data.training_hyperparameters
    assert card_data.model_hyperparameters == {"embedding_size": 8}
    assert isinstance(card_data.training_seconds, float) and card_data.hardware  # recorded; timings are never asserted
    assert "generated_from_trainer" in card_data.tags
    assert card_data.example_row["user_id"] in card_data.prompt_example  # a real training row

    readme = ModelCard.load(directory / "README.md")
    assert {(r.dataset_split, r.metric_type) for r in readme.data.eval_results} == {
        ("validation", "roc_auc"), ("validation", "log_loss"), ("test", "roc_auc"), ("test", "log_loss"),
    }


def test_a_joint_models_side_metrics_are_not_its_own(make_tiny_flip):
    """FlipTrainer reports eval_id_auc and eval_text_auc for a joint model; the card keeps the fused model's AUC."""
    from flip_hf.model_card import FlipModelCardCallback

    model = make_tiny_flip("joint")
    card_data = FlipModelCardData()
    card_data.add_results("joint", "test", {"auc": 0.71, "id_auc": 0.72, "text_auc": 0.65, "logloss": 0.6})
    assert card_data.results == [{"ctr_mode": "joint", "split": "test", "metrics": {"auc": 0.71, "logloss": 0.6}}]
    model.model_card_data = FlipModelCardData()
    FlipModelCardCallback().on_evaluate(None, None, None, model=model, metrics={
        "eval_id_auc": 0.69, "eval_auc": 0.70, "eval_text_auc": 0.64, "eval_loss": 1.9})
    assert model.model_card_data.results == [{"ctr_mode": "joint", "split": "validation", "metrics": {"auc": 0.70}}]


def test_card_states_the_gain_over_the_id_baseline_and_the_frozen_serving_cost(make_tiny_flip, tiny_flip_processor):
    card_data = card_data_with_results()
    plain = generate_model_card(make_tiny_flip("joint"), tiny_flip_processor, card_data).text
    assert "What FLIP gains here" not in plain  # no baseline in the run: no comparison is made up
    assert "runs a language model per row" in plain

    card_data.add_results("baseline_id", "test", {"auc": 0.7950, "logloss": 0.5420})
    text = generate_model_card(make_tiny_flip("joint", freeze_text_encoder=True), tiny_flip_processor, card_data).text
    assert "this model scores 0.8011 AUC against 0.7950 for the ID-only baseline" in text and "(+0.0061)" in text
    assert "| ID-only (no pretraining) | test | 0.7950 | 0.5420 | - |" in text
    assert "language model is frozen" in text and "`text_embeds`" in text
    top = generate_model_card(make_tiny_flip("joint", freeze_text_encoder=True, text_trainable_layers=1), tiny_flip_processor,
                              card_data).text
    assert "language model is frozen but for its top 1 layer(s), which finetuning trained" in top
    assert "but for its top" not in text
    assert "What it costs" not in text  # no training times recorded: no cost is made up


def test_card_states_what_flip_costs_to_train_against_the_id_baseline(make_tiny_flip, tiny_flip_processor):
    card_data = card_data_with_results()
    card_data.add_results("baseline_id", "test", {"auc": 0.7950})
    for model, seconds in (("pretrain", 660.0), ("joint", 30.0), ("baseline_id", 90.0), ("baseline_id", 95.0)):
        card_data.add_training_time(model, seconds)
    text = generate_model_card(make_tiny_flip("joint"), tiny_flip_processor, card_data).text
    assert ("What it costs: 11.0 minutes of FLIP pretraining and 30.0 seconds of finetuning for this model, "
            "against 1.6 minutes of training for the ID-only baseline") in text  # the later baseline time replaced the first
    frozen = generate_model_card(make_tiny_flip("joint", freeze_text_encoder=True), tiny_flip_processor, card_data).text
    assert "30.0 seconds of finetuning for this model (computing its frozen language model's text vectors included" in frozen

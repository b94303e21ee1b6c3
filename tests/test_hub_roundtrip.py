"""Publish a trained FLIP to a (local) Hub and load it back: fresh cache, offline cache, remote code."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from tiny import tiny_rows
from transformers import AutoModel, AutoProcessor, pipeline

import flip_hf
from flip_hf.pipeline import register_pipeline

REPO_ID = "org/flip-movielens"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "push_to_hub.py"


def run_script(*args: str) -> None:
    """scripts/push_to_hub.py in this process (a subprocess would only add seconds of imports)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import push_to_hub
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert push_to_hub.main(list(args)) == 0


def reference_batch(processor):
    batch = processor(tiny_rows(8, seed=5), return_tensors="pt")
    batch.pop("labels")
    return batch


def probabilities(model, batch):
    with torch.no_grad():
        return model(**batch).probabilities


@pytest.fixture
def pushed(hub_server, trained_flip_dir):
    """The trained checkpoint published with scripts/push_to_hub.py; returns the in-memory model."""
    directory, model = trained_flip_dir
    run_script(str(directory), REPO_ID)
    return model


def test_push_then_load_in_a_fresh_cache(pushed, hub_server, fresh_hf_cache, tiny_flip_processor):
    files = set(HfApi().list_repo_files(REPO_ID))
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
            "flip_card_data.json", "modeling_flip.py", "backbones.py", "processing_flip.py"} <= files

    cache = fresh_hf_cache()
    model = AutoModel.from_pretrained(REPO_ID).eval()
    processor = AutoProcessor.from_pretrained(REPO_ID)
    assert (cache / "models--org--flip-movielens").is_dir()
    state = lambda p: {key: value for key, value in p.to_dict().items() if key != "auto_map"}  # noqa: E731
    assert state(processor) == state(tiny_flip_processor)
    batch = reference_batch(processor)
    torch.testing.assert_close(probabilities(model, batch), probabilities(pushed, batch), rtol=0, atol=0)

    register_pipeline()
    ctr = pipeline("ctr-prediction", model=REPO_ID, device="cpu")
    row = {key: values[0] for key, values in tiny_rows(8, seed=5).items()}
    assert ctr(row)["probability"] == pytest.approx(probabilities(pushed, batch)[0].item(), abs=1e-6)


def test_offline_from_a_prepared_cache(pushed, hub_server, fresh_hf_cache, hf_offline):
    fresh_hf_cache()
    snapshot_download(REPO_ID)
    hf_offline()
    hub_server.requests.clear()
    model = AutoModel.from_pretrained(REPO_ID).eval()
    processor = AutoProcessor.from_pretrained(REPO_ID)
    assert hub_server.requests == []
    batch = reference_batch(processor)
    torch.testing.assert_close(probabilities(model, batch), probabilities(pushed, batch), rtol=0, atol=0)


def test_pushed_card_holds_the_eval_results(pushed, hub_server):
    card = ModelCard.load(hf_hub_download(REPO_ID, "README.md"))
    expected = {
        (entry["split"], {"auc": "roc_auc", "logloss": "log_loss", "gauc": "gauc"}[name]): value
        for entry in pushed.model_card_data.results
        if entry["ctr_mode"] == "joint"
        for name, value in entry["metrics"].items()
    }
    assert {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results} == expected
    assert card.data.model_name == REPO_ID
    assert f'pipeline("ctr-prediction", model="{REPO_ID}")' in card.text  # the snippet names the repo
    assert "| FLIP_ID | test | 0.6100 | 0.6800 | - |" in card.text


def test_remote_code_without_flip_hf(pushed, hub_server, fresh_hf_cache, tmp_path, tiny_flip_processor):
    fresh_hf_cache()
    batch = reference_batch(tiny_flip_processor)
    torch.save({"batch": batch, "expected": probabilities(pushed, batch)}, tmp_path / "reference.pt")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["flip_hf"] = None  # as if flip_hf were not installed
        import torch
        from transformers import AutoModel, AutoProcessor
        try:
            AutoModel.from_pretrained("{REPO_ID}")
        except ValueError as error:
            assert "trust_remote_code=True" in str(error), error
        else:
            raise AssertionError("loading custom code without trust_remote_code did not fail")
        model = AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained("{REPO_ID}", trust_remote_code=True)
        reference = torch.load(r"{tmp_path / 'reference.pt'}")
        batch = processor({json.dumps(tiny_rows(8, seed=5))}, return_tensors="pt")
        batch.pop("labels")
        assert all(torch.equal(batch[key], reference["batch"][key]) for key in batch)
        with torch.no_grad():
            torch.testing.assert_close(model(**batch).probabilities, reference["expected"], rtol=0, atol=0)
        print("remote code OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": ""}, timeout=120,
    )
    assert result.returncode == 0 and "remote code OK" in result.stdout, result.stderr[-3000:]


def test_push_to_hub_and_the_script_publish_the_same(hub_server, trained_flip_dir, tmp_path, fresh_hf_cache):
    directory, _ = trained_flip_dir
    model = AutoModel.from_pretrained(directory)  # its card data comes from the folder it was loaded from
    processor = AutoProcessor.from_pretrained(directory)
    api = HfApi()

    flip_hf.push_to_hub(model, REPO_ID, processor)
    by_function = {f.rfilename: f.blob_id for f in api.model_info(REPO_ID, files_metadata=True).siblings}
    readme_by_function = Path(hf_hub_download(REPO_ID, "README.md")).read_text()

    saved = tmp_path / "saved"
    flip_hf.save_pretrained(model, saved, processor)
    run_script(str(saved), REPO_ID)
    by_script = {f.rfilename: f.blob_id for f in api.model_info(REPO_ID, files_metadata=True).siblings}
    fresh_hf_cache()
    readme_by_script = Path(hf_hub_download(REPO_ID, "README.md")).read_text()

    assert readme_by_script == readme_by_function
    assert set(by_script) == set(by_function)
    assert by_script["README.md"] == by_function["README.md"]
    assert by_script["model.safetensors"] == by_function["model.safetensors"]
    assert f'model="{REPO_ID}"' in readme_by_script
    assert "| FLIP_ID | test | 0.6100 | 0.6800 | - |" in readme_by_script  # the card data survived the reload


def test_push_to_a_branch_and_as_a_pull_request(hub_server, trained_flip_dir, fresh_hf_cache):
    directory, _ = trained_flip_dir
    api = HfApi()
    flip_hf.push_to_hub(directory, REPO_ID, revision="v1")  # the branch is created on the way
    assert "model.safetensors" in api.list_repo_files(REPO_ID, revision="v1")
    commit = flip_hf.push_to_hub(directory, REPO_ID, create_pr=True, commit_message="Update FLIP")
    assert commit.pr_revision == "refs/pr/1"
    assert "model.safetensors" in api.list_repo_files(REPO_ID, revision=commit.pr_revision)
    assert "model.safetensors" not in api.list_repo_files(REPO_ID)  # main is untouched until the PR is merged


def test_trainer_push_to_hub_publishes_flips_card(hub_server, tiny_flip_processor, make_tiny_flip, tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    from flip_hf import DataCollatorForFlipCTR
    from flip_hf.trainer import FlipTrainer

    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=16, max_steps=2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                             hub_model_id="org/flip-trainer")
    trainer = FlipTrainer(model=make_tiny_flip("id"), args=args, processing_class=tiny_flip_processor,
                          train_dataset=Dataset.from_dict(tiny_rows(32)), eval_dataset=Dataset.from_dict(tiny_rows(32, seed=1)),
                          data_collator=DataCollatorForFlipCTR(tiny_flip_processor, text=False))
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub()
    files = set(HfApi().list_repo_files("org/flip-trainer"))
    assert {"config.json", "model.safetensors", "processor_config.json", "modeling_flip.py", "flip_card_data.json"} <= files
    card = ModelCard.load(hf_hub_download("org/flip-trainer", "README.md"))
    assert card.data.model_name == "org/flip-trainer"
    assert {(r.dataset_split, r.metric_type) for r in card.data.eval_results} >= {("validation", "roc_auc")}


def test_script_help_lists_the_options():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "REPO_ID" in result.stdout.upper()
    assert "--create_pr" in result.stdout and "--revision" in result.stdout

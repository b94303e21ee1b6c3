"""Shared pytest fixtures. Keep each group in its own section."""

import pytest
from hub_server import LocalHub, configure_hf_env
from huggingface_hub.utils import close_session
from tiny import TINY_TOKENIZERS, tiny_bert_tokenizer

# ------------------------------------------------------------------------------------------------
# Tiny tokenizers (tests/tiny.py): WordPiece and byte-level BPE, built in memory
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(TINY_TOKENIZERS))
def tokenizer(request):
    """Each test that takes it runs once per tokenizer family."""
    return TINY_TOKENIZERS[request.param]()


@pytest.fixture(scope="module")
def bert_tokenizer():
    return tiny_bert_tokenizer()


@pytest.fixture
def one_thread():
    """Tiny tensors train fastest on one thread: more intra-op threads only add overhead, and spin-wait on a busy box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# ------------------------------------------------------------------------------------------------
# Tiny FLIP checkpoints (model cards, the ctr-prediction pipeline, Hub round trips)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_flip_processor():
    """A FlipProcessor fit on tiny rows, with the tiny WordPiece tokenizer."""
    from tiny import tiny_bert_tokenizer, tiny_rows, tiny_schema

    from flip_hf import FlipProcessor

    return FlipProcessor(tiny_bert_tokenizer(), tiny_schema()).fit(tiny_rows(64))


@pytest.fixture(scope="session")
def make_tiny_flip(tiny_flip_processor):
    """`make_tiny_flip(ctr_mode, **config)`: a tiny random FlipForCTR (eval mode) for the fitted processor (dnn backbone
    unless `backbone=` says otherwise)."""
    import torch
    from tiny import tiny_bert_config

    from flip_hf import FlipConfig, FlipForCTR

    tokenizer = tiny_flip_processor.tokenizer

    def make(ctr_mode="joint", **overrides):
        options = dict(text_config=tiny_bert_config(len(tokenizer)), text_model_name_or_path="org/tiny-bert", backbone="dnn",
                       pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id)
        config = FlipConfig(fields=tiny_flip_processor.field_infos(), ctr_mode=ctr_mode, **{**options, **overrides})
        torch.manual_seed(0)
        return FlipForCTR(config).eval()

    return make


@pytest.fixture(scope="session")
def trained_flip_dir(tmp_path_factory, tiny_flip_processor, make_tiny_flip):
    """A joint FLIP trained for a few steps by `Trainer` with `FlipModelCardCallback`, evaluated on
    validation and test, saved with its processor and card the way scripts/train.py saves it.

    Returns (directory, model).
    """
    from datasets import Dataset
    from tiny import tiny_rows
    from transformers import Trainer, TrainingArguments

    from flip_hf import DataCollatorForFlipCTR, save_pretrained
    from flip_hf.metrics import compute_ctr_metrics
    from flip_hf.model_card import FlipModelCardCallback, FlipModelCardData

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return compute_ctr_metrics(logits, prediction.label_ids, from_logits=True)

    output_dir = tmp_path_factory.mktemp("trained_flip")
    card_data = FlipModelCardData(dataset_name="Tiny MovieLens", split_description="time-ordered 8:1:1")
    model = make_tiny_flip("joint", embedding_size=8)
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=16, per_device_eval_batch_size=32, learning_rate=1e-3,
        num_train_epochs=1, report_to="none", save_strategy="no", remove_unused_columns=False, use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    trainer = Trainer(
        model=model, args=args, processing_class=tiny_flip_processor,
        data_collator=DataCollatorForFlipCTR(tiny_flip_processor),
        train_dataset=Dataset.from_dict(tiny_rows(64, seed=0)), eval_dataset=Dataset.from_dict(tiny_rows(32, seed=1)),
        compute_metrics=compute_metrics, callbacks=[FlipModelCardCallback(card_data)],
    )
    trainer.train()
    trainer.evaluate()
    trainer.evaluate(Dataset.from_dict(tiny_rows(32, seed=2)), metric_key_prefix="test")
    model.model_card_data.add_results("id", "test", {"auc": 0.61, "logloss": 0.68})  # another mode of the same run
    save_pretrained(model, output_dir, tiny_flip_processor)  # weights, processor and card, as FlipTrainer.save_model
    return output_dir, model


# ------------------------------------------------------------------------------------------------
# Training (tests/test_trainer.py, tests/test_train_script.py): a tiny PLM folder, a saved dataset
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory):
    """A folder holding a tiny random BertModel and its WordPiece tokenizer: `--text_model <dir>`."""
    import torch
    from tiny import tiny_bert_config, tiny_bert_tokenizer
    from transformers import BertModel

    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = tiny_bert_tokenizer()
    torch.manual_seed(0)
    BertModel(tiny_bert_config(len(tokenizer))).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def _save_tiny_dataset(path, sizes=(96, 32, 32), schema=None):
    from datasets import Dataset, DatasetDict
    from tiny import tiny_rows, tiny_schema

    from flip_hf.data import save_dataset

    splits = DatasetDict({
        split: Dataset.from_dict(tiny_rows(size, seed=seed))
        for seed, (split, size) in enumerate(zip(("train", "validation", "test"), sizes))
    })
    save_dataset(splits, schema or tiny_schema(), path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory):
    """A `save_dataset` folder (train 96 / validation 32 / test 32 tiny rows): `--dataset <dir>`."""
    return _save_tiny_dataset(tmp_path_factory.mktemp("tiny_data") / "tiny")


@pytest.fixture(scope="session")
def save_tiny_dataset():
    """`save_tiny_dataset(path, sizes=(train, validation, test), schema=None)`: another saved dataset."""
    return _save_tiny_dataset

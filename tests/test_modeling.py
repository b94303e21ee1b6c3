"""FLIP models: every backbone and mode, gradient paths, skipped objectives, tying, save/load, Auto classes,
config errors, MTM and ICL details, remote code. Tiny BERT and tiny RoBERTa."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tiny import tiny_bert_config, tiny_bert_tokenizer, tiny_roberta_config, tiny_roberta_tokenizer, tiny_rows, tiny_schema
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification
from transformers.utils import logging as transformers_logging

from flip_hf import (
    DataCollatorForFlipCTR,
    DataCollatorForFlipPretraining,
    FieldSpec,
    FlipConfig,
    FlipForCTR,
    FlipForPretraining,
    FlipProcessor,
    TabularSchema,
)
from flip_hf.backbones import available_backbones
from flip_hf.collator import IGNORE_INDEX
from flip_hf.modeling_flip import FlipMTMHead

MODES = ["id", "text", "joint"]
FAMILIES = ["bert", "roberta"]
SMALL_BACKBONE = {"hidden_sizes": [16]}


@pytest.fixture(autouse=True, scope="module")
def quiet_transformers():
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    yield
    transformers_logging.enable_progress_bar()
    transformers_logging.set_verbosity(verbosity)


class Setup:
    def __init__(self, family):
        self.family = family
        self.tokenizer = tiny_bert_tokenizer() if family == "bert" else tiny_roberta_tokenizer()
        self.processor = FlipProcessor(self.tokenizer, tiny_schema()).fit(tiny_rows(64))

    def text_config(self, **overrides):
        if self.family == "bert":
            return tiny_bert_config(len(self.tokenizer), **overrides)
        return tiny_roberta_config(len(self.tokenizer), self.tokenizer.pad_token_id, **overrides)

    def config(self, **overrides):
        options = dict(
            fields=self.processor.field_infos(),
            text_config=self.text_config(),
            embedding_size=8,
            projection_size=16,
            pad_token_id=self.tokenizer.pad_token_id,
            mask_token_id=self.tokenizer.mask_token_id,
        )
        options.update(overrides)
        return FlipConfig(**options)

    def features(self, n=8, seed=0):
        encoded = self.processor(tiny_rows(n, seed=seed))
        return [dict(zip(encoded, values)) for values in zip(*encoded.values())]

    def pretraining_batch(self, n=8, seed=0):
        collator = DataCollatorForFlipPretraining(self.processor, seed=seed)
        return collator(self.features(n, seed))

    def ctr_batch(self, n=8, seed=0):
        return DataCollatorForFlipCTR(self.processor)(self.features(n, seed))


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request):
    return Setup(request.param)


@pytest.fixture(scope="module")
def bert():
    return Setup("bert")


def pretraining_model(setup, seed=0, **overrides):
    torch.manual_seed(seed)
    return FlipForPretraining(setup.config(**overrides))


def ctr_model(setup, mode="joint", seed=0, **overrides):
    torch.manual_seed(seed)
    return FlipForCTR(setup.config(ctr_mode=mode, **overrides))


def grad_norm(model, prefix):
    grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
    return sum(float(g.abs().sum()) for g in grads)


# ------------------------------------------------------------------------- every backbone, every mode
@pytest.mark.parametrize("backbone", available_backbones())
def test_forward_backward_every_backbone_and_mode(setup, backbone):
    options = {} if backbone in ("fm", "lr") else SMALL_BACKBONE
    pre = pretraining_model(setup, backbone=backbone, backbone_options=options)
    out = pre(**setup.pretraining_batch())
    assert torch.isfinite(out.loss) and all(torch.isfinite(p) for p in (out.mlm_loss, out.mtm_loss, out.icl_loss))
    out.loss.backward()
    assert grad_norm(pre, "flip.id_encoder.embeddings") > 0 and grad_norm(pre, "flip.text_encoder") > 0
    assert all(torch.isfinite(p.grad).all() for p in pre.parameters() if p.grad is not None)
    batch = setup.ctr_batch()
    for mode in MODES:
        model = ctr_model(setup, mode, backbone=backbone, backbone_options=options)
        inputs = batch if mode != "id" else {k: batch[k] for k in ("feature_ids", "labels")}
        out = model(**inputs)
        assert out.logits.shape == (8,) and torch.isfinite(out.loss)
        torch.testing.assert_close(out.probabilities, torch.sigmoid(out.logits))
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        if mode != "text":
            assert grad_norm(model, "flip.id_encoder") > 0 and grad_norm(model, "id_head") > 0
        if mode != "id":
            assert grad_norm(model, "flip.text_encoder") > 0 and grad_norm(model, "text_head") > 0
        if mode == "joint":
            assert (out.id_logits is not None and out.text_logits is not None)
            assert model.fusion_alpha.grad is not None
            expected = F.binary_cross_entropy_with_logits(out.logits, batch["labels"]) + F.binary_cross_entropy_with_logits(
                out.id_logits, batch["labels"]) + F.binary_cross_entropy_with_logits(out.text_logits, batch["labels"])
            torch.testing.assert_close(out.loss, expected)
        else:
            assert out.id_logits is None and out.text_logits is None


def test_ctr_modes_need_their_inputs(bert):
    batch = bert.ctr_batch()
    with pytest.raises(ValueError, match="input_ids"):
        ctr_model(bert, "text")(feature_ids=batch["feature_ids"])
    with pytest.raises(ValueError, match="feature_ids"):
        ctr_model(bert, "id")(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="masked_input_ids"):
        pretraining_model(bert)(**{k: v for k, v in bert.pretraining_batch().items() if k != "masked_input_ids"})


@pytest.mark.parametrize("mode", ["id", "joint"])
def test_embedding_l2_adds_the_table_norm_in_training_only(bert, mode):
    batch = bert.ctr_batch()
    plain, regularised = ctr_model(bert, mode), ctr_model(bert, mode, embedding_l2=0.5)
    table = regularised.flip.id_encoder.embeddings.embedding.weight
    with torch.no_grad():  # the initial std 1e-4 would make the penalty vanish next to the loss
        table.normal_()
        plain.flip.id_encoder.embeddings.embedding.weight.copy_(table)
    plain.train(), regularised.train()
    torch.manual_seed(1)
    expected = plain(**batch).loss + 0.25 * table.pow(2).sum()
    torch.manual_seed(1)
    assert torch.allclose(regularised(**batch).loss, expected)
    plain.eval(), regularised.eval()
    assert torch.equal(regularised(**batch).loss, plain(**batch).loss)  # eval losses stay comparable
    with pytest.raises(ValueError, match="embedding_l2 must be >= 0"):
        bert.config(embedding_l2=-0.1)


def test_first_order_term_adds_one_scalar_per_feature_value(bert):
    batch = bert.ctr_batch()
    model = ctr_model(bert, "id", id_first_order=True).eval()
    table = model.id_first_order.embedding.weight
    with torch.no_grad():
        table.zero_()
        base = model(**batch).logits
        table[model.id_first_order.field_offsets[0] + batch["feature_ids"][0, 0]] = 1.5  # row 0's value of field 0
    shift = model(**batch).logits - base
    same_value = batch["feature_ids"][:, 0] == batch["feature_ids"][0, 0]
    assert torch.allclose(shift, 1.5 * same_value.float())
    assert ctr_model(bert, "id").id_first_order is None and ctr_model(bert, "text", id_first_order=True).id_first_order is None


# ------------------------------------------------------------------------------------ gradient paths
ID_EMBEDDINGS = "flip.id_encoder.embeddings"
ID_BACKBONE = "flip.id_encoder.backbone"
PLM_LAYERS = "flip.text_encoder.encoder.layer"


def test_gradients_reach_both_encoders(setup):
    model = pretraining_model(setup)
    model(**setup.pretraining_batch()).loss.backward()
    for prefix in (ID_EMBEDDINGS, ID_BACKBONE, PLM_LAYERS, "flip.text_encoder.embeddings.word_embeddings",
                   "mlm_head", "mtm_head", "icl_head"):
        assert grad_norm(model, prefix) > 0, prefix


@pytest.mark.parametrize("objective", ["mlm", "mtm", "icl"])
def test_each_objective_alone(setup, objective):
    weights = {f"{name}_weight": float(name == objective) for name in ("mlm", "mtm", "icl")}
    model = pretraining_model(setup, **weights)
    for name in ("mlm", "mtm", "icl"):
        assert (getattr(model, f"{name}_head") is None) == (name != objective)
    out = model(**setup.pretraining_batch())
    for name in ("mlm", "mtm", "icl"):
        part = getattr(out, f"{name}_loss")
        assert (part is None) == (name != objective)
    torch.testing.assert_close(out.loss, getattr(out, f"{objective}_loss"))
    out.loss.backward()
    # every objective couples the two sides: both encoders learn from it
    for prefix in (ID_EMBEDDINGS, ID_BACKBONE, PLM_LAYERS, f"{objective}_head"):
        assert grad_norm(model, prefix) > 0, prefix
    if objective == "mlm":
        assert grad_norm(model, "flip.text_encoder.embeddings.word_embeddings") > 0
    if objective == "mtm":
        assert grad_norm(model, "mtm_head.output_embeddings") > 0


def test_loss_is_the_weighted_sum(bert):
    model = pretraining_model(bert, mlm_weight=0.5, mtm_weight=2.0, icl_weight=0.25).eval()
    out = model(**bert.pretraining_batch())
    torch.testing.assert_close(out.loss, 0.5 * out.mlm_loss + 2.0 * out.mtm_loss + 0.25 * out.icl_loss)


# ----------------------------------------------------------------------------- skipped computations
@pytest.mark.parametrize("mlm,mtm,icl", [(1, 1, 1), (0, 1, 1), (1, 0, 0), (0, 0, 1), (0, 1, 0), (1, 1, 0), (1, 0, 1)])
def test_zero_weight_objectives_are_not_computed(setup, mlm, mtm, icl):
    model = pretraining_model(setup, mlm_weight=mlm, mtm_weight=mtm, icl_weight=icl)
    text_calls, id_calls = [], []
    model.flip.text_encoder.register_forward_hook(lambda module, args, kwargs, out: text_calls.append(kwargs.get("input_ids")), with_kwargs=True)
    model.flip.id_encoder.register_forward_hook(lambda module, args, out: id_calls.append(args[0]))
    batch = setup.pretraining_batch()
    out = model(**batch)
    assert len(text_calls) == int(bool(mlm)) + int(bool(mtm or icl)) <= 2
    assert len(id_calls) == int(bool(mlm or icl)) + int(bool(mtm))
    if mlm:
        assert any(torch.equal(ids, batch["masked_input_ids"]) for ids in text_calls)
    else:
        assert all(torch.equal(ids, batch["input_ids"]) for ids in text_calls)
    if not mtm:
        assert all(torch.equal(ids, batch["feature_ids"]) for ids in id_calls)
    for name, weight in (("mlm", mlm), ("mtm", mtm), ("icl", icl)):
        assert (getattr(model, f"{name}_head") is None) == (not weight)
        assert (getattr(out, f"{name}_loss") is None) == (not weight)
    assert torch.isfinite(out.loss)


def test_mlm_head_projects_only_masked_positions(setup):
    model = pretraining_model(setup)
    rows = []
    model.mlm_head.decoder.register_forward_hook(lambda module, args, out: rows.append((args[0].shape, out.shape)))
    batch = setup.pretraining_batch(n=6)
    model(**batch)
    masked = int((batch["mlm_labels"] != IGNORE_INDEX).sum())
    assert 0 < masked < batch["input_ids"].numel()
    assert rows == [((masked, setup.text_config().hidden_size), (masked, len(setup.tokenizer)))]


# ------------------------------------------------------------------------------------------- tying
def test_mlm_decoder_is_the_word_embedding_and_stays_tied(setup, tmp_path):
    model = pretraining_model(setup)
    assert model.config.tie_word_embeddings is True
    embeddings = model.flip.text_encoder.get_input_embeddings().weight
    assert model.mlm_head.decoder.weight is embeddings
    assert model.get_output_embeddings() is model.mlm_head.decoder
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    loaded = FlipForPretraining.from_pretrained(tmp_path)
    assert loaded.mlm_head.decoder.weight is loaded.flip.text_encoder.get_input_embeddings().weight
    torch.testing.assert_close(loaded.mlm_head.decoder.weight, embeddings, rtol=0, atol=0)
    # training the embedding moves the decoder too
    with torch.no_grad():
        loaded.flip.text_encoder.get_input_embeddings().weight[5].add_(1.0)
    assert torch.equal(loaded.mlm_head.decoder.weight[5], loaded.flip.text_encoder.get_input_embeddings().weight[5])


# ------------------------------------------------------------------------------------- save / load
def assert_only_safetensors(directory):
    assert (directory / "model.safetensors").is_file()
    assert not list(directory.glob("*.bin")) and not list(directory.glob("*.pt")) and not list(directory.glob("*.pkl"))


def test_ctr_save_load_and_auto_classes(setup, tmp_path):
    batch = setup.ctr_batch()
    for mode in MODES:
        model = ctr_model(setup, mode).eval()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            expected = model(**inputs).logits
        directory = tmp_path / mode
        model.save_pretrained(directory)
        assert_only_safetensors(directory)
        for loader in (FlipForCTR, AutoModel, AutoModelForSequenceClassification):
            loaded = loader.from_pretrained(directory).eval()
            assert type(loaded) is FlipForCTR and loaded.config.ctr_mode == mode
            with torch.no_grad():
                torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)
        assert isinstance(AutoConfig.from_pretrained(directory), FlipConfig)


def test_pretraining_save_load_and_auto_class(setup, tmp_path):
    model = pretraining_model(setup, mtm_full_softmax_max_vocab=100).eval()
    batch = setup.pretraining_batch()
    with torch.no_grad():
        expected = model(**batch)
    model.save_pretrained(tmp_path)
    assert_only_safetensors(tmp_path)
    for loader in (FlipForPretraining, AutoModelForPreTraining):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is FlipForPretraining
        with torch.no_grad():
            out = loaded(**batch)
        for key in ("loss", "mlm_loss", "mtm_loss", "icl_loss"):
            torch.testing.assert_close(out[key], expected[key], rtol=0, atol=0)


def test_id_mode_has_no_text_weights(setup, tmp_path):
    model = ctr_model(setup, "id")
    assert model.flip.text_encoder is None and model.text_head is None
    assert not [n for n, _ in model.named_parameters() if "text" in n]
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "text" in k]
    # the pure ID model needs no PLM config at all
    no_plm = FlipForCTR(FlipConfig(fields=setup.processor.field_infos(), ctr_mode="id", embedding_size=8))
    assert no_plm(feature_ids=setup.ctr_batch()["feature_ids"]).logits.shape == (8,)


def test_ctr_from_a_pretraining_checkpoint_reuses_the_encoders(setup, tmp_path):
    pretrained = pretraining_model(setup, seed=3)
    with torch.no_grad():  # make the weights distinguishable from any fresh init
        for p in pretrained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    pretrained.save_pretrained(tmp_path)
    source = pretrained.state_dict()
    standardize = {f"text_norm.{name}" for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    heads = {"id": {"id_head.weight", "id_head.bias"}, "text": standardize | {"text_head.weight", "text_head.bias"}}
    heads["joint"] = heads["id"] | heads["text"] | {"fusion_alpha", "fusion_bias"}
    for mode in MODES:
        model = FlipForCTR.from_pretrained(tmp_path, ctr_mode=mode)
        assert model.config.ctr_mode == mode
        state = model.state_dict()
        new = set(state) - set(source)
        assert new == heads[mode], mode
        for key in set(state) & set(source):
            torch.testing.assert_close(state[key], source[key], rtol=0, atol=0, msg=key)
        encoders = {k.split(".")[1] for k in state if k.startswith("flip.")}
        assert encoders == {"id": {"id_encoder"}, "text": {"text_encoder"}, "joint": {"id_encoder", "text_encoder"}}[mode]
        if mode != "id":  # the new text head's batch statistics start as the identity, not as uninitialised memory
            assert torch.equal(state["text_norm.running_mean"], torch.zeros(state["text_norm.running_mean"].shape))
            assert torch.equal(state["text_norm.running_var"], torch.ones(state["text_norm.running_var"].shape))


def test_from_pretrained_with_output_loading_info(bert, tmp_path):
    pretraining_model(bert).save_pretrained(tmp_path)
    model, info = FlipForCTR.from_pretrained(tmp_path, ctr_mode="id", output_loading_info=True)
    assert isinstance(model, FlipForCTR)
    assert set(info["missing_keys"]) == {"id_head.weight", "id_head.bias"}


def test_field_order_survives_json(bert, tmp_path):
    names = ["zeta", "alpha", "mid", "Beta", "a_10", "a_9"]
    schema = TabularSchema([FieldSpec(n) for n in names])
    columns = {n: [f"v{i % (j + 2)}" for i in range(12)] for j, n in enumerate(names)}
    processor = FlipProcessor(bert.tokenizer, schema).fit(columns)
    config = FlipConfig(fields=processor.field_infos(), text_config=bert.text_config(), embedding_size=8)
    model = FlipForCTR(config)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert [f["name"] for f in saved["fields"]] == names
    loaded = FlipForCTR.from_pretrained(tmp_path / "model")
    loaded_processor = FlipProcessor.from_pretrained(tmp_path / "model")
    assert loaded.config.field_names == loaded_processor.schema.field_names == names
    assert [f["vocab_size"] for f in loaded.config.fields] == [f["vocab_size"] for f in processor.field_infos()]


# ------------------------------------------------------------------------------------- config errors
def test_config_errors_list_valid_choices(bert):
    with pytest.raises(ValueError) as error:
        FlipForCTR(bert.config(backbone="resnet"))
    assert "resnet" in str(error.value) and all(name in str(error.value) for name in available_backbones())
    with pytest.raises(ValueError, match=r"'ctr'.*id, text, joint"):
        bert.config(ctr_mode="ctr")
    with pytest.raises(ValueError, match=r"'span'.*field, token"):
        bert.config(masking="span")
    with pytest.raises(ValueError, match="mlm_weight"):
        bert.config(mlm_weight=-1)
    with pytest.raises(ValueError, match="temperature"):
        bert.config(temperature=0)
    with pytest.raises(ValueError, match="text_num_layers"):
        bert.config(text_num_layers=5)
    with pytest.raises(ValueError, match="vocab_size"):
        FlipConfig(fields=[{"name": "a"}])


@pytest.mark.parametrize("override, message", [
    ({"ctr_mode": "bogus"}, r"ctr_mode 'bogus'.*id, text, joint"),
    ({"masking": "bogus"}, r"masking 'bogus'.*field, token"),
    ({"temperature": -1}, "temperature must be > 0"),
    ({"text_pooling": "max"}, r"text_pooling 'max'.*cls, mean"),
])
def test_every_load_path_validates_the_config(bert, tmp_path, override, message):
    """from_pretrained sets keyword overrides after building the config: they are checked all the same,
    so no invalid (and then unloadable) checkpoint can be written."""
    model = FlipForCTR(bert.config(ctr_mode="joint"))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        FlipConfig.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=message):
        FlipForCTR.from_pretrained(tmp_path, **override)
    assert FlipForCTR.from_pretrained(tmp_path, ctr_mode="id").config.ctr_mode == "id"  # valid overrides still apply


def save_tiny_plm(setup, directory, num_layers=3):
    from transformers import BertModel, RobertaModel

    torch.manual_seed(7)
    plm = (BertModel if setup.family == "bert" else RobertaModel)(setup.text_config(num_hidden_layers=num_layers))
    plm.save_pretrained(directory)
    return plm


def test_from_text_pretrained_and_text_num_layers(setup, tmp_path):
    plm = save_tiny_plm(setup, tmp_path / "plm")
    plm_state = plm.state_dict()
    full = FlipForPretraining.from_text_pretrained(str(tmp_path / "plm"), setup.processor, embedding_size=8)
    assert full.config.text_config.num_hidden_layers == 3
    assert full.config.text_model_name_or_path == str(tmp_path / "plm")
    assert full.config.pad_token_id == setup.tokenizer.pad_token_id and full.config.mask_token_id == setup.tokenizer.mask_token_id
    cut = FlipForPretraining.from_text_pretrained(str(tmp_path / "plm"), setup.processor, embedding_size=8, text_num_layers=2)
    assert cut.config.text_config.num_hidden_layers == 2 and len(cut.flip.text_encoder.encoder.layer) == 2
    for model, layers in ((full, 3), (cut, 2)):
        state = model.flip.text_encoder.state_dict()
        for key, value in state.items():
            if key.startswith("encoder.layer."):
                assert int(key.split(".")[2]) < layers
            torch.testing.assert_close(value, plm_state[key], rtol=0, atol=0, msg=key)
        assert not [k for k in plm_state if k.startswith("encoder.layer.") and int(k.split(".")[2]) < layers and k not in state]
        assert model.mlm_head.decoder.weight is model.flip.text_encoder.get_input_embeddings().weight
    out = cut(**setup.pretraining_batch())
    assert torch.isfinite(out.loss)
    # the cut survives save / load
    cut.save_pretrained(tmp_path / "cut")
    assert len(FlipForPretraining.from_pretrained(tmp_path / "cut").flip.text_encoder.encoder.layer) == 2
    text_only = FlipForCTR.from_text_pretrained(str(tmp_path / "plm"), setup.processor, ctr_mode="text", embedding_size=8)
    torch.testing.assert_close(text_only.flip.text_encoder.get_input_embeddings().weight,
                               plm_state["embeddings.word_embeddings.weight"], rtol=0, atol=0)


def test_freeze_word_embeddings(setup):
    model = pretraining_model(setup, freeze_word_embeddings=True)
    assert model.flip.text_encoder.get_input_embeddings().weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if "word_embeddings" not in n)
    model(**setup.pretraining_batch()).loss.backward()
    assert model.flip.text_encoder.get_input_embeddings().weight.grad is None
    assert grad_norm(model, PLM_LAYERS) > 0
    assert ctr_model(setup, "text", freeze_word_embeddings=True).flip.text_encoder.get_input_embeddings().weight.requires_grad is False
    assert pretraining_model(setup).flip.text_encoder.get_input_embeddings().weight.requires_grad is True


# -------------------------------------------------------------------------------------------- MTM
def test_mtm_full_and_sampled_softmax(setup, monkeypatch):
    calls = []
    original = FlipMTMHead._sampled_softmax

    def spy(self, *args):
        calls.append(args[2].shape[0])
        return original(self, *args)

    monkeypatch.setattr(FlipMTMHead, "_sampled_softmax", spy)
    collator = DataCollatorForFlipPretraining(setup.processor, id_mask_ratio=1.0, seed=0)
    batch = collator(setup.features(12))
    vocab_sizes = [f["vocab_size"] for f in setup.processor.field_infos()]
    for max_vocab, expected_sampled in ((10_000, []), (5, sorted(v for v in vocab_sizes if v > 5))):
        calls.clear()
        model = pretraining_model(setup, mlm_weight=0, icl_weight=0, mtm_full_softmax_max_vocab=max_vocab, mtm_num_negatives=4)
        out = model(**batch)
        assert torch.isfinite(out.mtm_loss) and out.mtm_loss > 0
        out.loss.backward()
        assert sorted(calls) == expected_sampled
        assert grad_norm(model, "mtm_head.output_embeddings") > 0 and grad_norm(model, "mtm_head.query") > 0
        assert grad_norm(model, ID_EMBEDDINGS) > 0


def test_mtm_full_softmax_matches_a_hand_computation(bert):
    model = pretraining_model(bert, mlm_weight=0, icl_weight=0).eval()
    head = model.mtm_head
    batch = DataCollatorForFlipPretraining(bert.processor, seed=5)(bert.features(6))
    with torch.no_grad():
        loss = model(**batch).mtm_loss
        masked = model.align_norm(model.flip.encode_ids(batch["masked_feature_ids"]))
        states = model.flip.encode_text(batch["input_ids"], batch["attention_mask"])
        expected, count = 0.0, 0
        fields = bert.processor.field_infos()
        slot_start = [sum(f["num_slots"] for f in fields[:i]) for i in range(len(fields))]
        offsets = [sum(f["vocab_size"] for f in fields[:i]) for i in range(len(fields))]
        table = head.output_embeddings.embedding.weight
        for b in range(6):
            n = int(batch["attention_mask"][b].sum())
            h = states[b, :n]
            query = head.query(masked[b])
            weights = torch.softmax(h @ query / math.sqrt(h.shape[-1]), dim=0)
            slots = head.slots(torch.cat([masked[b], weights @ h])).view(len(fields), -1)
            for f, spec in enumerate(fields):
                labels = batch["mtm_labels"][b, slot_start[f] : slot_start[f] + spec["num_slots"]]
                targets = labels[labels != IGNORE_INDEX]
                if len(targets) == 0:
                    continue
                logits = slots[f] @ table[offsets[f] : offsets[f] + spec["vocab_size"]].T
                expected += float(F.cross_entropy(logits.expand(len(targets), -1), targets))  # mean over the field's values
                count += 1
    assert loss.item() == pytest.approx(expected / count, rel=1e-5)


def test_mtm_attention_ignores_padding(setup):
    model = pretraining_model(setup, mlm_weight=0, icl_weight=0).eval()
    batch = setup.pretraining_batch(n=6)
    # the head alone: padded positions' states do not matter
    with torch.no_grad():
        masked = model.align_norm(model.flip.encode_ids(batch["masked_feature_ids"]))
        states = model.flip.encode_text(batch["input_ids"], batch["attention_mask"])
        noisy = torch.where(batch["attention_mask"].unsqueeze(-1).bool(), states, 1e3 * torch.randn_like(states))
        clean_loss = model.mtm_head(masked, states, batch["attention_mask"], batch["mtm_labels"])
        noisy_loss = model.mtm_head(masked, noisy, batch["attention_mask"], batch["mtm_labels"])
    assert (batch["attention_mask"] == 0).any()
    torch.testing.assert_close(noisy_loss, clean_loss, rtol=0, atol=0)
    # the whole model: extra padding columns with arbitrary token ids change nothing
    extra = 7
    padded = dict(batch)
    filler = torch.randint(5, len(setup.tokenizer), (6, extra))
    for key, fill in (("input_ids", filler), ("masked_input_ids", filler), ("attention_mask", torch.zeros(6, extra, dtype=torch.long)),
                      ("mlm_labels", torch.full((6, extra), IGNORE_INDEX)), ("token_field_ids", torch.full((6, extra), -1))):
        padded[key] = torch.cat([batch[key], fill], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(**padded).mtm_loss, model(**batch).mtm_loss, rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------------------- ICL
def test_icl_is_symmetric_infonce(bert):
    model = pretraining_model(bert, mlm_weight=0, mtm_weight=0, temperature=0.5).eval()
    head = model.icl_head
    torch.manual_seed(0)
    id_embedding = torch.randn(4, model.flip.id_encoder.output_size)
    text_embedding = torch.randn(4, bert.text_config().hidden_size)
    z_id = head.id_projection(id_embedding)
    z_text = head.text_projection(text_embedding)
    z_id, z_text = z_id / z_id.norm(dim=-1, keepdim=True), z_text / z_text.norm(dim=-1, keepdim=True)
    sim = (z_id @ z_text.T / 0.5).tolist()
    total = 0.0
    for i in range(4):
        row = sim[i]
        column = [sim[j][i] for j in range(4)]
        total += -row[i] + math.log(sum(math.exp(s) for s in row))
        total += -column[i] + math.log(sum(math.exp(s) for s in column))
    expected = total / 8
    assert head(id_embedding, text_embedding).item() == pytest.approx(expected, rel=1e-5)
    # the model's icl_loss is that head on the clean encodings
    batch = bert.pretraining_batch()
    with torch.no_grad():
        out = model(**batch)
        h_id = model.align_norm(model.flip.encode_ids(batch["feature_ids"]))
        h_text = model.flip.encode_text(batch["input_ids"], batch["attention_mask"])[:, 0]
        torch.testing.assert_close(out.icl_loss, head(h_id, h_text))


def test_learnable_temperature(bert, tmp_path):
    fixed = pretraining_model(bert)
    assert "icl_head.log_scale" not in dict(fixed.named_parameters())
    assert fixed.icl_head.log_scale.item() == pytest.approx(math.log(1 / 0.7))
    model = pretraining_model(bert, learnable_temperature=True, temperature=0.2)
    assert isinstance(model.icl_head.log_scale, torch.nn.Parameter) and model.icl_head.log_scale.requires_grad
    assert model.icl_head.log_scale.item() == pytest.approx(math.log(5.0))
    model(**bert.pretraining_batch()).loss.backward()
    assert model.icl_head.log_scale.grad is not None and model.icl_head.log_scale.grad != 0
    with torch.no_grad():
        model.icl_head.log_scale.fill_(2.0)
    model.save_pretrained(tmp_path)
    assert FlipForPretraining.from_pretrained(tmp_path).icl_head.log_scale.item() == pytest.approx(2.0)


# ------------------------------------------------------------------------------------ remote code
REMOTE_BACKBONES = ["dcnv2", "autoint", "xdeepfm"]


def test_remote_code_without_flip_hf(bert, tmp_path):
    batch = bert.ctr_batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    reference = {"inputs": inputs}
    for backbone in REMOTE_BACKBONES:
        model = ctr_model(bert, "joint", backbone=backbone).eval()
        directory = tmp_path / backbone
        model.save_pretrained(directory)
        assert {"backbones.py", "modeling_flip.py", "configuration_flip.py"} <= {p.name for p in directory.iterdir()}
        auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
        assert {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification"} <= set(auto_map)
        assert auto_map["AutoModel"].endswith("FlipForCTR") and auto_map["AutoModelForPreTraining"].endswith("FlipForPretraining")
        with torch.no_grad():
            reference[backbone] = model(**inputs).logits
    pretraining_model(bert).save_pretrained(tmp_path / "pretraining")
    torch.save(reference, tmp_path / "reference.pt")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["flip_hf"] = None  # as if flip_hf were not installed
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        root = {str(tmp_path)!r}
        try:
            AutoModel.from_pretrained(root + "/dcnv2")
        except ValueError as error:
            assert "trust_remote_code=True" in str(error), error
        else:
            raise AssertionError("loading custom code without trust_remote_code did not fail")
        reference = torch.load(root + "/reference.pt")
        for backbone in {REMOTE_BACKBONES!r}:
            model = AutoModel.from_pretrained(root + "/" + backbone, trust_remote_code=True).eval()
            assert type(model).__name__ == "FlipForCTR" and not type(model).__module__.startswith("flip_hf"), type(model).__module__
            with torch.no_grad():
                torch.testing.assert_close(model(**reference["inputs"]).logits, reference[backbone], rtol=0, atol=0)
        pre = AutoModelForPreTraining.from_pretrained(root + "/pretraining", trust_remote_code=True)
        assert type(pre).__name__ == "FlipForPretraining"
        print("remote code OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, env=env, timeout=180)
    assert result.returncode == 0 and "remote code OK" in result.stdout, result.stderr[-3000:]


CUSTOM_BACKBONE = """
import torch
from flip_hf.backbones import Backbone, register_backbone


@register_backbone("{name}")
class ScaledSum(Backbone):
    def __init__(self, num_fields, embedding_size, scale=2.0):
        super().__init__(num_fields, embedding_size)
        self.output_size = embedding_size
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, field_embeddings):
        return self.scale * field_embeddings.sum(dim=1)
"""


def _import_module_from(folder, name, source, monkeypatch):
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    __import__(name)


def test_a_custom_backbone_travels_with_the_remote_code(bert, tmp_path, monkeypatch):
    _import_module_from(tmp_path, "my_backbones", CUSTOM_BACKBONE.format(name="scaled_sum"), monkeypatch)
    model = ctr_model(bert, "id", backbone="scaled_sum", backbone_options={"scale": 3.0}).eval()
    model.save_pretrained(tmp_path / "model")
    assert "class ScaledSum" in (tmp_path / "model" / "backbones.py").read_text()
    batch = bert.ctr_batch()
    with torch.no_grad():
        expected = model(feature_ids=batch["feature_ids"]).logits
    torch.save({"feature_ids": batch["feature_ids"], "expected": expected}, tmp_path / "reference.pt")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["flip_hf"] = None  # neither flip_hf nor my_backbones is importable here
        import torch
        from transformers import AutoModel
        reference = torch.load({str(tmp_path / "reference.pt")!r})
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(feature_ids=reference["feature_ids"]).logits, reference["expected"], rtol=0, atol=0)
        print("custom backbone OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path / "model",
                            stdin=subprocess.DEVNULL, env=env, timeout=180)
    assert result.returncode == 0 and "custom backbone OK" in result.stdout, result.stderr[-3000:]


def test_a_custom_backbone_that_cannot_be_bundled_is_reported_at_save(bert, tmp_path, monkeypatch, caplog):
    (tmp_path / "helpers_of_mine.py").write_text("SCALE = 2.0\n")
    source = "from helpers_of_mine import SCALE  # local code the bundle cannot carry\n" + CUSTOM_BACKBONE.format(name="needs_helpers")
    _import_module_from(tmp_path, "my_other_backbones", source, monkeypatch)
    model = ctr_model(bert, "id", backbone="needs_helpers")
    with caplog.at_level("WARNING", logger="flip_hf.remote_code"):
        model.save_pretrained(tmp_path / "model")
    assert "custom backbone 'needs_helpers'" in caplog.text and "could not be bundled" in caplog.text
    assert "class ScaledSum" not in (tmp_path / "model" / "backbones.py").read_text()
    assert (tmp_path / "model" / "model.safetensors").is_file()  # the weights are saved all the same


# ---------------------------------------------------------------------------------- partial loads
@pytest.mark.parametrize("backbone", available_backbones())
def test_a_side_missing_from_the_checkpoint_is_initialised_like_a_new_model(bert, tmp_path, backbone):
    """An id model loaded from a text-mode checkpoint gets a whole new ID side: no empty (NaN, 1e34) weights."""
    options = {"hidden_sizes": [16]} if backbone not in ("lr", "fm") else {}
    torch.manual_seed(0)
    FlipForCTR(bert.config(ctr_mode="text", backbone=backbone, backbone_options=options)).save_pretrained(tmp_path)
    loaded = FlipForCTR.from_pretrained(tmp_path, ctr_mode="id")
    torch.manual_seed(1)
    fresh = FlipForCTR(bert.config(ctr_mode="id", backbone=backbone, backbone_options=options))
    for (name, value), (_, reference) in zip(loaded.state_dict().items(), fresh.state_dict().items()):
        assert torch.isfinite(value).all(), name
        # the same initialisation as a new model: equal spread (another draw), never an empty tensor's garbage
        assert value.abs().max() <= 10 * reference.abs().max() + 1e-6, name
        if value.numel() > 16 and reference.std() > 0:
            assert 0.5 < float(value.std() / reference.std()) < 2.0, name
    with torch.no_grad():
        assert torch.isfinite(loaded(**bert.ctr_batch()).logits).all()


def test_a_joint_model_from_an_id_only_checkpoint_warns_that_its_plm_is_random(bert, tmp_path, caplog):
    FlipForCTR(bert.config(ctr_mode="id")).save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="flip_hf.modeling_flip"):
        model, info = FlipForCTR.from_pretrained(tmp_path, ctr_mode="joint", output_loading_info=True)
    assert "holds no weights for the language model that ctr_mode='joint' uses" in caplog.text
    assert any(key.startswith("flip.text_encoder.") for key in info["missing_keys"])  # output_loading_info still works
    caplog.clear()
    with caplog.at_level("WARNING", logger="flip_hf.modeling_flip"):
        FlipForCTR.from_pretrained(tmp_path, ctr_mode="id")
    assert "holds no weights" not in caplog.text


# ------------------------------------------------------------------ FLIP from its finetuned halves
def test_a_joint_model_from_finetuned_halves_scores_each_side_as_the_halves_do(bert, tmp_path):
    id_model = ctr_model(bert, "id", seed=1, backbone_options={"hidden_sizes": [16]}, id_first_order=True)
    text_model = ctr_model(bert, "text", seed=2, text_head_hidden_size=8)
    text_model.save_pretrained(tmp_path / "text")  # a folder works as well as a model
    joint = FlipForCTR.from_finetuned(id_model, tmp_path / "text")
    assert joint.config.ctr_mode == "joint"
    assert joint.config.id_first_order and joint.config.text_head_hidden_size == 8  # each half keeps its options
    batch = bert.ctr_batch()
    for model in (id_model, text_model, joint):
        model.eval()
    with torch.no_grad():
        output = joint(**batch)
        torch.testing.assert_close(output.id_logits, id_model(**batch).logits)
        torch.testing.assert_close(output.text_logits, text_model(**batch).logits)


def test_from_finetuned_refuses_halves_that_do_not_fit(bert):
    id_model, text_model = ctr_model(bert, "id"), ctr_model(bert, "text")
    with pytest.raises(ValueError, match="text_model is a ctr_mode='id' model"):
        FlipForCTR.from_finetuned(id_model, id_model)
    other_fields = bert.config(ctr_mode="text").fields[:-1]
    with pytest.raises(ValueError, match="other fields or vocabularies"):
        FlipForCTR.from_finetuned(id_model, FlipForCTR(bert.config(ctr_mode="text", fields=other_fields)))
    assert FlipForCTR.from_finetuned(id_model, text_model).config.ctr_mode == "joint"


def test_fit_fusion_weights_the_side_that_predicts():
    """On held-out logits where only the ID side knows the label, alpha goes to the ID side, and the fitted
    fusion's log loss is no worse than either side alone."""
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(4000, generator=generator) < 0.5).double()
    id_logits = 3 * (2 * labels - 1) + torch.randn(4000, generator=generator, dtype=torch.float64)
    text_logits = torch.randn(4000, generator=generator, dtype=torch.float64)
    model = FlipForCTR(Setup("bert").config(ctr_mode="joint", fusion_init=0.5))
    fitted = model.fit_fusion(id_logits, text_logits, labels)
    assert fitted["fusion_alpha"] == pytest.approx(model.fusion_alpha.item())
    assert model.fusion_alpha.item() > 0.9
    fused = model.fusion_alpha * id_logits + (1 - model.fusion_alpha) * text_logits + model.fusion_bias
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    assert loss(fused.detach(), labels) <= min(loss(id_logits, labels), loss(text_logits, labels)) + 1e-9


def test_fit_fusion_refuses_other_modes_and_one_class(bert):
    with pytest.raises(ValueError, match="needs a ctr_mode='joint' model"):
        ctr_model(bert, "id").fit_fusion([0.0], [0.0], [1])
    with pytest.raises(ValueError, match="labels of both classes"):
        ctr_model(bert, "joint").fit_fusion([0.0, 1.0], [0.0, 1.0], [1, 1])

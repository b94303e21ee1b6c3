"""The ID-backbone zoo: interface contract, per-model math, trainability, remote-code layout."""

import ast
import itertools
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import flip_hf.backbones as backbones
from flip_hf.backbones import Backbone, available_backbones, build_backbone, register_backbone
from flip_hf.backbones.base import fm_interaction
from flip_hf.backbones.dcn import DCNCrossLayer
from flip_hf.backbones.dcnv2 import DCNv2MatrixCrossLayer, DCNv2MixtureCrossLayer
from flip_hf.backbones.xdeepfm import CompressedInteractionNetwork

BUILTIN_BACKBONES = ["autoint", "dcn", "dcnv2", "deepfm", "dnn", "fm", "lr", "widedeep", "xdeepfm"]
BACKBONE_DIR = Path(backbones.__file__).parent
NUM_FIELDS, EMBEDDING_SIZE = 3, 8


def test_every_builtin_is_registered():
    assert set(BUILTIN_BACKBONES) <= set(available_backbones())


# --------------------------------------------------------------------------- interface contract


@pytest.mark.parametrize("name", BUILTIN_BACKBONES)
def test_output_shape_matches_output_size(name):
    backbone = build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE)
    out = backbone(torch.randn(5, NUM_FIELDS, EMBEDDING_SIZE))
    assert out.shape == (5, backbone.output_size)


@pytest.mark.parametrize("name", BUILTIN_BACKBONES)
def test_backward_gives_finite_gradients_to_every_parameter(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE)
    embeddings = torch.randn(6, NUM_FIELDS, EMBEDDING_SIZE, requires_grad=True)
    backbone(embeddings).square().mean().backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
    for param_name, param in backbone.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", BUILTIN_BACKBONES)
def test_eval_mode_is_deterministic(name):
    backbone = build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE).eval()
    embeddings = torch.randn(4, NUM_FIELDS, EMBEDDING_SIZE)
    torch.testing.assert_close(backbone(embeddings), backbone(embeddings), rtol=0, atol=0)


@pytest.mark.parametrize("name", BUILTIN_BACKBONES)
@pytest.mark.parametrize("train", [True, False])
def test_single_field_and_single_sample(name, train):
    backbone = build_backbone(name, 1, EMBEDDING_SIZE).train(train)
    out = backbone(torch.randn(1, 1, EMBEDDING_SIZE))
    assert out.shape == (1, backbone.output_size)
    assert torch.isfinite(out).all()


def test_unknown_backbone_lists_valid_choices():
    with pytest.raises(ValueError, match="Unknown backbone 'nope'") as error:
        build_backbone("nope", NUM_FIELDS, EMBEDDING_SIZE)
    assert all(name in str(error.value) for name in BUILTIN_BACKBONES)


def test_custom_backbone_is_buildable_by_name():
    @register_backbone("test_mean_pool")
    class MeanPool(Backbone):
        def __init__(self, num_fields, embedding_size, scale=1.0):
            super().__init__(num_fields, embedding_size)
            self.scale = scale
            self.output_size = embedding_size

        def forward(self, field_embeddings):
            return self.scale * field_embeddings.mean(dim=1)

    try:
        backbone = build_backbone("test_mean_pool", NUM_FIELDS, EMBEDDING_SIZE, {"scale": 2.0})
        assert isinstance(backbone, MeanPool) and backbone.scale == 2.0
        assert "test_mean_pool" in available_backbones()
    finally:
        backbones.BACKBONE_REGISTRY.pop("test_mean_pool")


def test_registering_a_non_backbone_raises():
    with pytest.raises(TypeError, match="expects a Backbone subclass"):
        register_backbone("not_a_backbone")(nn.Linear)
    assert "not_a_backbone" not in available_backbones()


# --------------------------------------------------------------------------- per-model math


def test_fm_interaction_equals_explicit_pairwise_sum():
    embeddings = torch.randn(4, 5, EMBEDDING_SIZE, dtype=torch.float64)
    explicit = sum(embeddings[:, i] * embeddings[:, j] for i, j in itertools.combinations(range(5), 2))
    torch.testing.assert_close(fm_interaction(embeddings), explicit)


def test_fm_and_lr_are_parameter_free_first_and_second_order_vectors():
    embeddings = torch.randn(4, NUM_FIELDS, EMBEDDING_SIZE)
    fm, lr = build_backbone("fm", NUM_FIELDS, EMBEDDING_SIZE), build_backbone("lr", NUM_FIELDS, EMBEDDING_SIZE)
    assert not list(fm.parameters()) and not list(lr.parameters())
    torch.testing.assert_close(lr(embeddings), embeddings.sum(dim=1))
    torch.testing.assert_close(fm(embeddings), torch.cat([embeddings.sum(dim=1), fm_interaction(embeddings)], -1))


def test_dcn_cross_layer_matches_paper_formula():
    layer = DCNCrossLayer(6)
    nn.init.normal_(layer.bias)
    x0, x = torch.randn(3, 6), torch.randn(3, 6)
    expected = (x0.unsqueeze(2) @ x.unsqueeze(1) @ layer.weight.unsqueeze(1)).squeeze(2) + layer.bias + x
    torch.testing.assert_close(layer(x0, x), expected)


@pytest.mark.parametrize("layer", [DCNv2MatrixCrossLayer(6), DCNv2MixtureCrossLayer(6, low_rank=2, num_experts=3)])
def test_dcnv2_cross_layer_with_zero_weights_is_the_residual(layer):
    with torch.no_grad():
        for param in layer.parameters():
            param.zero_()
    x0, x = torch.randn(3, 6), torch.randn(3, 6)
    torch.testing.assert_close(layer(x0, x), x)


def test_dcnv2_mixture_matches_per_expert_loop():
    torch.manual_seed(0)
    layer = DCNv2MixtureCrossLayer(6, low_rank=2, num_experts=3)
    nn.init.normal_(layer.bias)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    gates = torch.softmax(x @ layer.gate.weight.T, dim=-1)
    expected = x.clone()
    for e in range(3):
        low = torch.tanh(torch.tanh(x @ layer.V[e]) @ layer.C[e].T)
        expected += gates[:, e : e + 1] * x0 * (low @ layer.U[e].T + layer.bias)
    torch.testing.assert_close(layer(x0, x), expected)


def test_dcnv2_defaults_are_the_flip_reference():
    backbone = build_backbone("dcnv2", 8, 32)
    assert backbone.structure == "parallel" and len(backbone.cross_layers) == 2
    layer = backbone.cross_layers[0]
    assert isinstance(layer, DCNv2MixtureCrossLayer) and tuple(layer.U.shape) == (4, 8 * 32, 32)
    assert [m.out_features for m in backbone.mlp if isinstance(m, nn.Linear)] == [300, 300, 128]
    assert backbone.output_size == 8 * 32 + 128  # [cross output ; MLP output]
    full = build_backbone("dcnv2", 8, 32, {"low_rank": None})
    assert all(isinstance(layer, DCNv2MatrixCrossLayer) for layer in full.cross_layers)


@pytest.mark.parametrize("name", ["dcn", "dcnv2"])
def test_cross_network_structures_output_sizes(name):
    cross_size = NUM_FIELDS * EMBEDDING_SIZE
    assert build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE, {"structure": "parallel"}).output_size == cross_size + 128
    assert build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE, {"structure": "stacked"}).output_size == 128
    cross_only = build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE, {"structure": "stacked", "hidden_sizes": ()})
    assert cross_only.output_size == cross_size
    with pytest.raises(ValueError, match="structure"):
        build_backbone(name, NUM_FIELDS, EMBEDDING_SIZE, {"structure": "serial"})


@pytest.mark.parametrize(
    "cin_layer_sizes, split_half, cin_size", [((128, 128), True, 64 + 128), ((10, 6), False, 16), ((7,), True, 7)]
)
def test_xdeepfm_output_size(cin_layer_sizes, split_half, cin_size):
    options = {"cin_layer_sizes": cin_layer_sizes, "split_half": split_half, "hidden_sizes": (20,)}
    backbone = build_backbone("xdeepfm", NUM_FIELDS, EMBEDDING_SIZE, options)
    assert backbone.output_size == EMBEDDING_SIZE + cin_size + 20
    assert backbone(torch.randn(2, NUM_FIELDS, EMBEDDING_SIZE)).shape == (2, backbone.output_size)


def test_cin_layer_matches_paper_formula():
    """One CIN layer: X1[o, d] = sum_{h, f} W[o, h, f] * X0[h, d] * X0[f, d], sum-pooled over d."""
    cin = CompressedInteractionNetwork(NUM_FIELDS, (5,), split_half=False)
    embeddings = torch.randn(2, NUM_FIELDS, EMBEDDING_SIZE)
    weight = cin.compressions[0].weight.view(5, NUM_FIELDS, NUM_FIELDS)
    maps = torch.einsum("ohf,bhd,bfd->bod", weight, embeddings, embeddings) + cin.compressions[0].bias[:, None]
    torch.testing.assert_close(cin(embeddings), maps.sum(dim=-1))


def test_xdeepfm_split_half_needs_even_sizes():
    with pytest.raises(ValueError, match="split_half"):
        build_backbone("xdeepfm", NUM_FIELDS, EMBEDDING_SIZE, {"cin_layer_sizes": (7, 4)})


def test_autoint_output_size_and_head_divisibility():
    assert build_backbone("autoint", NUM_FIELDS, EMBEDDING_SIZE).output_size == NUM_FIELDS * 64
    plus = build_backbone("autoint", NUM_FIELDS, EMBEDDING_SIZE, {"hidden_sizes": (32,)})
    assert plus.output_size == NUM_FIELDS * 64 + 32
    with pytest.raises(ValueError, match="divisible"):
        build_backbone("autoint", NUM_FIELDS, EMBEDDING_SIZE, {"attention_size": 63})


# --------------------------------------------------------------------------- trainability

SMALL_TOWER = {"hidden_sizes": (64, 64), "dropout": 0.0}
# (backbone, options, label needs a field interaction). The explicit-interaction parts (cross
# networks, CIN, attention, FM) are also trained without an MLP to show they learn the interaction
# themselves; LR has no interaction term, so it gets an additive label.
TRAINING_CASES = [
    ("dnn", SMALL_TOWER, True),
    ("deepfm", SMALL_TOWER, True),
    ("widedeep", SMALL_TOWER, True),
    ("dcn", SMALL_TOWER, True),
    ("dcn", {"structure": "stacked", "hidden_sizes": (), "num_cross_layers": 3}, True),
    ("dcnv2", {**SMALL_TOWER, "low_rank": 8}, True),
    ("dcnv2", {"structure": "stacked", "hidden_sizes": (), "low_rank": None}, True),
    ("dcnv2", {"structure": "stacked", "hidden_sizes": (), "low_rank": 8}, True),
    ("autoint", {"attention_size": 16, "num_layers": 2}, True),
    ("xdeepfm", {**SMALL_TOWER, "cin_layer_sizes": (16, 16)}, True),
    ("xdeepfm", {"hidden_sizes": (), "cin_layer_sizes": (16, 16)}, True),
    ("fm", {}, True),
    ("lr", {}, False),
]


def test_training_cases_cover_every_builtin():
    assert {name for name, _, _ in TRAINING_CASES} == set(BUILTIN_BACKBONES)


def _synthetic_ctr(interaction: bool, num_samples=1024, num_fields=4, vocab_size=8, seed=0):
    """Global ids of `num_fields` fields and labels set by fields 0 and 1 only (the rest is noise).

    The interaction label is `(a + b) mod V < V / 2` on shuffled values: every value of either field
    is a click exactly half the time, so no additive (first-order) model can beat chance.
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab_size, (num_samples, num_fields), generator=generator)
    shuffles = torch.stack([torch.randperm(vocab_size, generator=generator) for _ in range(2)])
    a, b = shuffles[0, ids[:, 0]], shuffles[1, ids[:, 1]]
    labels = (a + b) % vocab_size < vocab_size // 2 if interaction else a + b >= vocab_size
    return ids + vocab_size * torch.arange(num_fields), labels.float(), num_fields * vocab_size


def _train_auc(name: str, options: dict, interaction: bool, steps: int = 100) -> float:
    """Training AUC of `nn.Embedding` + backbone + Linear head trained full-batch with Adam."""
    torch.manual_seed(0)
    ids, labels, vocab_size = _synthetic_ctr(interaction)
    backbone = build_backbone(name, ids.shape[1], 16, options)
    model = nn.Sequential(nn.Embedding(vocab_size, 16), backbone, nn.Linear(backbone.output_size, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(ids).squeeze(-1), labels).backward()
        optimizer.step()
    with torch.no_grad():
        scores = model.eval()(ids).squeeze(-1)
    return roc_auc_score(labels.numpy(), scores.numpy())



@pytest.mark.timeout(30)
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name, options, interaction", TRAINING_CASES)
def test_backbone_trains_as_a_plain_ctr_model(name, options, interaction):
    assert _train_auc(name, options, interaction) > 0.8


@pytest.mark.usefixtures("one_thread")
def test_interaction_label_defeats_a_first_order_model():
    """Guards the trainability test: the interaction label really needs a feature interaction."""
    assert _train_auc("lr", {}, interaction=True) < 0.7


# --------------------------------------------------------------------------- remote-code layout

ALLOWED_IMPORTS = {"torch", "torch.nn", "math", "typing", "__future__"}


def _backbone_files():
    return sorted(path for path in BACKBONE_DIR.glob("*.py") if path.name not in {"__init__.py", "base.py"})


@pytest.mark.parametrize("path", _backbone_files(), ids=lambda path: path.name)
def test_backbone_file_imports_only_torch_math_typing_and_one_base_line(path):
    """base.py and the backbone files are concatenated into one module for `trust_remote_code`."""
    base_imports = 0
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            assert all(alias.name in ALLOWED_IMPORTS for alias in node.names), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module == "base", ast.unparse(node)
                base_imports += 1
            else:
                assert node.module in ALLOWED_IMPORTS, ast.unparse(node)
    assert base_imports == 1


def test_module_level_names_are_unique_across_base_and_backbone_files():
    owners: dict[str, str] = {}
    for path in [BACKBONE_DIR / "base.py", *_backbone_files()]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [target.id for target in targets if isinstance(target, ast.Name)]
            else:
                continue
            for name in names:
                assert name not in owners, f"{name} defined in both {owners[name]} and {path.name}"
                owners[name] = path.name

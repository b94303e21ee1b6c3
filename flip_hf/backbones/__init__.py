"""ID-based CTR backbones, one per file, found by name through a registry."""

from . import autoint, dcn, dcnv2, deepfm, dnn, fm, lr, widedeep, xdeepfm  # noqa: F401  (importing registers them)
from .base import BACKBONE_REGISTRY, MLP, Backbone, available_backbones, build_backbone, register_backbone

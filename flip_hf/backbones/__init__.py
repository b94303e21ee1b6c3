"""ID-based CTR backbones, one per file, found by name through a registry."""

from .base import BACKBONE_REGISTRY, MLP, Backbone, available_backbones, build_backbone, register_backbone

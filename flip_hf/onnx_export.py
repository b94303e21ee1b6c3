"""ONNX export of FLIP_ID (`FlipForCTR` with `ctr_mode="id"`) for serving, and an onnxruntime runner.

Only id mode exports: its whole forward pass is embedding lookups and dense layers over one int64
tensor, so the graph needs neither the PLM nor a tokenizer. The exporter is torch's
`torch.export`-based one (`dynamo=True`), the default and recommended one since PyTorch 2.9; the
TorchScript exporter is deprecated and slated for removal.

onnx, onnxscript and onnxruntime are an optional extra: `pip install "flip_hf[onnx]"`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configuration_flip import UNKNOWN_ID
from .modeling_flip import FlipForCTR

INPUT_NAME = "feature_ids"
OUTPUT_NAMES = ("logits", "probabilities")


def _require(*modules: str) -> None:
    """Import the optional ONNX packages up front, so a missing one is reported with the install line."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f"ONNX export and inference need the optional package {module!r}, which is not installed: "
                'pip install "flip_hf[onnx]" (onnx, onnxscript and onnxruntime).'
            ) from error


class _ClickGraph(nn.Module):
    """What gets exported: `feature_ids` in, plain tensors out (the exporter cannot return a ModelOutput)."""

    def __init__(self, model: FlipForCTR):
        super().__init__()
        self.model = model

    def forward(self, feature_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(feature_ids=feature_ids)
        return output.logits, output.probabilities


def export_onnx(model: FlipForCTR, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Export an id-mode `FlipForCTR` to the ONNX file `path` and return that path.

    The graph takes `feature_ids`, int64 of shape (batch, num_slots) as `FlipProcessor.encode_ids`
    gives it (num_slots is the sum of `num_slots` over `model.config.fields`), and returns `logits`
    and `probabilities`, float of shape (batch,). The batch dimension is dynamic. The model is traced
    in eval mode (no dropout) and left in the mode it came in. `opset` None takes torch's recommended
    opset (20 with torch 2.13); below 18 torch converts the graph down, which may fail. Weights go into
    the one file unless they pass 1.5 GB, when torch writes them to a `<path>.data` file beside it,
    which must then travel with the model.
    """
    if not isinstance(model, FlipForCTR):
        raise TypeError(f"export_onnx exports a FlipForCTR, got {type(model).__name__}.")
    mode = model.config.ctr_mode
    if mode != "id":
        raise ValueError(
            f"export_onnx exports ctr_mode='id' (FLIP_ID) only, but this model has ctr_mode={mode!r}: "
            "text and joint modes run the PLM on tokenised text, which this export does not cover. "
            "Export only id mode, e.g. the ID side of a joint checkpoint: "
            "FlipForCTR.from_pretrained(path, ctr_mode='id')."
        )
    _require("onnx", "onnxscript")

    num_slots = sum(field["num_slots"] for field in model.config.fields)
    # any valid ids do: the graph does not depend on their values; two rows keep the batch size symbolic
    example = torch.full((2, num_slots), UNKNOWN_ID, dtype=torch.long, device=model.device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            _ClickGraph(model).eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
            dynamo=True,
            verbose=False,
        )
    finally:
        model.train(was_training)
    program.save(path)
    return path


class OnnxCTRModel:
    """An exported FLIP_ID model in an onnxruntime session: `OnnxCTRModel(path)(feature_ids)` gives the
    click probabilities as numpy, so serving code and benchmarks can compare it with PyTorch.

    `providers` and `sess_options` go to `onnxruntime.InferenceSession` (default: the CPU provider).
    """

    def __init__(self, path: str | os.PathLike, providers=("CPUExecutionProvider",), sess_options=None):
        _require("onnxruntime")
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), sess_options=sess_options, providers=list(providers))
        self.num_slots = self.session.get_inputs()[0].shape[1]

    def run(self, feature_ids) -> dict[str, np.ndarray]:
        """`logits` and `probabilities` (batch,) for `feature_ids` (batch, num_slots): a numpy array,
        a torch tensor or nested lists of ids."""
        if isinstance(feature_ids, torch.Tensor):
            feature_ids = feature_ids.detach().cpu().numpy()
        feature_ids = np.ascontiguousarray(feature_ids, dtype=np.int64)
        if feature_ids.ndim != 2 or feature_ids.shape[1] != self.num_slots:
            raise ValueError(
                f"feature_ids must have shape (batch, {self.num_slots}) as FlipProcessor.encode_ids gives it, "
                f"got {feature_ids.shape}."
            )
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: feature_ids})
        return dict(zip(OUTPUT_NAMES, outputs))

    def __call__(self, feature_ids) -> np.ndarray:
        return self.run(feature_ids)["probabilities"]


__all__ = ["export_onnx", "OnnxCTRModel"]

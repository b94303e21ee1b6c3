"""ONNX export of FLIP_ID (`FlipForCTR` with `ctr_mode="id"`) for serving, and an onnxruntime runner.

Only id mode exports: its whole forward pass is embedding lookups and dense layers over one int64
tensor (plus the float `numeric_positions` of piecewise-linear numeric fields), so the graph needs
neither the PLM nor a tokenizer. The exporter is torch's `torch.export`-based one (`dynamo=True`),
the default and recommended one since PyTorch 2.9; the TorchScript exporter is deprecated and
slated for removal.

onnx, onnxscript and onnxruntime are an optional extra: `pip install "flip_hf[onnx]"`.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configuration_flip import UNKNOWN_ID
from .modeling_flip import FlipForCTR

INPUT_NAMES = ("feature_ids", "numeric_positions")
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
    """What gets exported: `feature_ids` (and `numeric_positions`) in, plain tensors out (the exporter cannot
    return a ModelOutput)."""

    def __init__(self, model: FlipForCTR):
        super().__init__()
        self.model = model

    def forward(self, feature_ids: torch.LongTensor, numeric_positions: torch.Tensor | None = None):
        output = self.model(feature_ids=feature_ids, numeric_positions=numeric_positions)
        return output.logits, output.probabilities


def export_onnx(model: FlipForCTR, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Export an id-mode `FlipForCTR` to the ONNX file `path` and return that path.

    The graph takes `feature_ids`, int64 of shape (batch, num_slots) as `FlipProcessor.encode_ids`
    gives it (num_slots is the sum of `num_slots` over `model.config.fields`), and, when the model reads
    them (`config.uses_numeric_positions`), `numeric_positions`, float of shape (batch, numeric fields) as
    `FlipProcessor.encode_positions` gives them. It returns `logits` and `probabilities`, float of shape
    (batch,). The batch dimension is dynamic. The model is traced in eval mode (no dropout) and left in
    the mode it came in. `opset` None takes torch's recommended opset (20 with torch 2.13); below 18
    torch converts the graph down, which may fail. Weights go into the one file unless they pass 1.5 GB,
    when torch writes them to a `<path>.data` file beside it, which must then travel with the model.
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

    config = model.config
    num_slots = sum(field["num_slots"] for field in config.fields)
    # any valid ids do: the graph does not depend on their values; two rows keep the batch size symbolic
    example = [torch.full((2, num_slots), UNKNOWN_ID, dtype=torch.long, device=model.device)]
    if config.uses_numeric_positions:
        num_numeric = sum(field["kind"] == "numeric" for field in config.fields)
        example.append(torch.full((2, num_numeric), 0.5, device=model.device))
    input_names = INPUT_NAMES[: len(example)]
    batch = torch.export.Dim("batch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # both inputs share the batch axis: torch names it once, then warns that it cannot name it twice
            warnings.filterwarnings("ignore", message="# The axis name: batch will not be used")
            program = torch.onnx.export(
                _ClickGraph(model).eval(),
                tuple(example),
                input_names=list(input_names),
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamic_shapes={name: {0: batch} for name in input_names},
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.save(path)
    return path


class OnnxCTRModel:
    """An exported FLIP_ID model in an onnxruntime session: `OnnxCTRModel(path)(feature_ids, numeric_positions)`
    gives the click probabilities as numpy, so serving code and benchmarks can compare it with PyTorch.

    As in PyTorch, leaving out `numeric_positions` means t = 0 (every number at the start of its bucket), and
    a graph without that input (bucket encoding, no numeric field) ignores them.

    `providers` and `sess_options` go to `onnxruntime.InferenceSession` (default: the CPU provider).
    """

    def __init__(self, path: str | os.PathLike, providers=("CPUExecutionProvider",), sess_options=None):
        _require("onnxruntime")
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), sess_options=sess_options, providers=list(providers))
        inputs = self.session.get_inputs()
        self.num_slots = inputs[0].shape[1]
        self.num_positions = inputs[1].shape[1] if len(inputs) > 1 else None

    def run(self, feature_ids, numeric_positions=None) -> dict[str, np.ndarray]:
        """`logits` and `probabilities` (batch,) for `feature_ids` (batch, num_slots) and `numeric_positions`
        (batch, numeric fields): numpy arrays, torch tensors or nested lists."""
        feed = {"feature_ids": _as_array("feature_ids", feature_ids, np.int64, self.num_slots)}
        if self.num_positions is not None:
            if numeric_positions is None:
                numeric_positions = np.zeros((len(feed["feature_ids"]), self.num_positions))
            feed["numeric_positions"] = _as_array("numeric_positions", numeric_positions, np.float32, self.num_positions)
        outputs = self.session.run(list(OUTPUT_NAMES), feed)
        return dict(zip(OUTPUT_NAMES, outputs))

    def __call__(self, feature_ids, numeric_positions=None) -> np.ndarray:
        return self.run(feature_ids, numeric_positions)["probabilities"]


def _as_array(name: str, values, dtype, width: int) -> np.ndarray:
    """The input `name` as a contiguous (batch, width) array of `dtype`: from numpy, torch or nested lists."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}) as FlipProcessor gives it, got {array.shape}.")
    return array


__all__ = ["export_onnx", "OnnxCTRModel"]

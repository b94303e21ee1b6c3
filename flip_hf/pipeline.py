"""The "ctr-prediction" pipeline: raw tabular rows in, click probabilities out.

    >>> import flip_hf
    >>> from transformers import pipeline
    >>> ctr = pipeline("ctr-prediction", model="org/flip-movielens")
    >>> ctr({"user_id": "196", "gender": "male", "age": 49, "title": "Kolya (1996)", "genres": ["comedy"]})
    {'probability': 0.71}

Like transformers' pipelines, a row gives one dict, a list of rows gives a list, and a dataset
(`datasets.Dataset`) or generator gives a lazy iterator of dicts; `batch_size` batches the model
calls. The model and its `FlipProcessor` load from one repo id or directory.
"""

from __future__ import annotations

import sys
from typing import Any

from transformers import AutoModel, Pipeline

TASK = "ctr-prediction"


class CTRPredictionPipeline(Pipeline):
    """Predicts click probabilities with a FLIP CTR model (any `ctr_mode`).

    Inputs: a dict of raw field values (extra keys such as the label are ignored; values unseen
    in training map to the unknown id), a list of such dicts, a `datasets.Dataset` or a generator.
    Output per row: `{"probability": float}`. In "id" mode no text is rendered or tokenized.

    A model with a frozen PLM (`freeze_text_encoder=True`) also takes the row's precomputed text
    vector under the key "text_embeds" (from `FlipForCTR.embed_text`, or cached per item by the
    caller): the row is then not tokenized and the PLM does not run.
    """

    # the FlipProcessor carries the tokenizer; nothing else is needed or loaded
    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "fields"):
            raise ValueError(
                "The ctr-prediction pipeline needs the model's FlipProcessor: save it next to the model "
                "(processor.save_pretrained(...)) or pass processor=FlipProcessor.from_pretrained(...)."
            )
        self.processor.check_matches(self.model.config)
        self._field_names = [spec.name for spec in self.processor.fields]
        self._text = self.model.config.ctr_mode != "id"

    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        """Click probabilities of one row (a dict), a list of rows, a `datasets.Dataset` or a generator.

        A list of rows is encoded a batch at a time, column by column, rather than row by row.
        """
        if isinstance(inputs, list) and not inputs:
            return []  # no rows, no predictions
        if _is_hf_dataset(inputs):
            inputs = iter(inputs)  # a generator: streamed lazily like any dataset given to a pipeline
        elif isinstance(inputs, list) and inputs and not any(isinstance(r, dict) and "text_embeds" in r for r in inputs):
            return self._predict_rows(inputs, batch_size or 256)
        return super().__call__(inputs, batch_size=batch_size, **kwargs)

    def _predict_rows(self, rows: list, batch_size: int) -> list[dict[str, float]]:
        import torch

        for row in rows:
            self._check_row(row)
        probabilities: list[float] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            columns = {name: [row[name] for row in chunk] for name in self._field_names}
            encoded = self.processor(columns, text=self._text, return_tensors="pt")
            encoded.pop("token_field_ids", None)
            with torch.inference_mode():
                output = self.model(**{key: value.to(self.device) for key, value in encoded.items()})
            probabilities += output.probabilities.float().cpu().tolist()
        return [{"probability": p} for p in probabilities]

    def _check_row(self, row) -> None:
        if not isinstance(row, dict):
            raise TypeError(f"ctr-prediction expects rows as dicts of field values, got {type(row).__name__}.")
        missing = [name for name in self._field_names if name not in row]
        if missing:
            raise ValueError(
                f"The input row has no value for field(s) {missing}; this model needs {self._field_names}. "
                "Pass None for a value that is unknown."
            )

    def _sanitize_parameters(self):
        return {}, {}, {}

    def preprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        self._check_row(row)
        vector = row.get("text_embeds")
        text = self._text and vector is None
        encoded = self.processor({name: row[name] for name in self._field_names}, text=text, return_tensors="pt")
        # the model ignores token_field_ids, and the pipeline's padding would fill them with the wrong value
        encoded.pop("token_field_ids", None)
        if vector is not None:
            import torch

            encoded["text_embeds"] = torch.as_tensor(vector, dtype=torch.float).reshape(1, -1)
        return encoded

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        return {"probabilities": self.model(**model_inputs).probabilities}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, float]:
        return {"probability": model_outputs["probabilities"].item()}


def _is_hf_dataset(inputs) -> bool:
    """Without importing `datasets` (no dataset can exist unless it was imported)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(inputs, datasets.Dataset)


def register_pipeline() -> None:
    """Make `pipeline("ctr-prediction", ...)` resolve to FLIP; idempotent (flip_hf calls it on import)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is CTRPredictionPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=CTRPredictionPipeline, pt_model=AutoModel, type="multimodal")


__all__ = ["CTRPredictionPipeline", "register_pipeline"]

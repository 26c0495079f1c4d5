"""Save a quantized variant (`save`); the format itself and `restore` live in `slimlm.models.qlayers`."""

from __future__ import annotations

from pathlib import Path

from slimlm.models import save as save_model
from slimlm.models.qlayers import describe


def save(model, out_dir: str | Path, config=None, report: dict | None = None, metrics: dict | None = None,
         data: str | None = None) -> Path:
    """Save a quantized `Model` as a variant directory that `slimlm.models.load` reloads bit for bit
    (``data``: the calibration / training data spec, recorded in its stage when given)."""
    stage = {"kind": "quantize", "config": config.model_dump(mode="json") if config is not None else None}
    if data is not None:
        stage["data"] = data
    if report:
        stage["report"] = {k: v for k, v in report.items() if k in ("quantized", "fp32_layers", "int8_layers", "fallback", "qat")}
    return save_model(model, out_dir, stage=stage, metrics=metrics, extra={"quantization": describe(model.hf)})

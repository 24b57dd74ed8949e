"""The high-precision variant: the model at opset 13 or later with a symbolic batch (and H, W where
the graph allows), each checked by running it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession
from dpa_perception.build.quantize import make_dynamic, upgrade_opset
from dpa_perception.core.errors import BackendError
from dpa_perception.core.model_spec import ModelSpec, anchors_for
from dpa_perception.core.preprocess import letterbox_batch

Log = Callable[[str], None]
HIGH_FILE = "high.onnx"


def verify_dynamic(path: Path, spec: ModelSpec, frame: np.ndarray) -> tuple[bool, bool]:
    """Check by running it whether ``path`` really accepts other batch sizes and canvas sizes."""
    try:
        s = OnnxRuntimeSession(path, Placement("cpu"))
    except BackendError:  # the symbolic dims contradict the graph: it loads only as exported
        return False, False
    x, _ = letterbox_batch([frame], spec, spec.input_hw)
    try:
        one = s.run(x)
        two = s.run(np.concatenate([x, x]))
        dyn_batch = two.shape[0] == 2 and np.allclose(two[0], one[0], atol=1e-3) and np.allclose(two[1], one[0], atol=1e-3)
    except Exception:
        dyn_batch = False
    rect = (spec.input_hw[0] // 2 // spec.max_stride * spec.max_stride or spec.max_stride, spec.input_hw[1])
    try:
        xr, _ = letterbox_batch([frame], spec, rect)
        out = s.run(xr)
        rows = out.shape[1] if spec.family == "yolox" else out.shape[2]
        dyn_hw = rows == anchors_for(rect, spec.strides)
    except Exception:
        dyn_hw = False
    s.close()
    return bool(dyn_batch), bool(dyn_hw)


@dataclass(frozen=True)
class HighVariant:
    """The high-precision file and what running it showed about its dims."""

    path: Path
    dynamic_batch: bool
    dynamic_hw: bool


def prepare_high(model: onnx.ModelProto, spec: ModelSpec, frame: np.ndarray, folder: Path, log: Log) -> HighVariant:
    """Write ``folder/high.onnx``: symbolic batch and spatial dims if the graph runs that way,
    else symbolic batch only, else the model as it is (frames then run one by one)."""
    base = upgrade_opset(model)
    high_path = folder / HIGH_FILE
    dyn_batch = dyn_hw = False
    for spatial in (True, False):
        onnx.save(make_dynamic(base, spatial), str(high_path))
        dyn_batch, dyn_hw = verify_dynamic(high_path, spec, frame)
        if dyn_batch and (dyn_hw or not spatial):
            break
    if not dyn_batch:
        warnings.warn("the model's batch dimension cannot be made symbolic; frames run one by one", stacklevel=1)
        onnx.save(base, str(high_path))
        dyn_hw = False
    log(f"dpa-build: dynamic batch: {dyn_batch}, dynamic spatial dims (rect input): {dyn_hw}")
    return HighVariant(high_path, dyn_batch, dyn_hw)

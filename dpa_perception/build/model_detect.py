"""Build-time model detection: the :class:`ModelSpec` of an ONNX detector, read from the model itself.

The family and its settings come from a small description file next to the model
(``<model>.yaml`` or ``<model>.json``), from Ultralytics metadata embedded in the ONNX, or from
the output layout; class and anchor counts always come from the model's output shape.

This is the builder's job (it needs ``onnx`` and ``yaml``); at run time the spec is read back from
the engine folder's manifest, so nothing under ``core/`` imports ONNX.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import yaml

from dpa_perception.core.errors import ModelError, UnknownFamilyError
from dpa_perception.core.model_spec import COCO_NAMES, FAMILIES, ModelSpec, anchors_for

# Per-family pre-processing defaults (each overridable from the description file).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # YOLOX official export: BGR 0..255, top-left letterbox on 114, grid decode over strides.
    "yolox": {"channel_order": "bgr", "scale": 1.0, "pad_value": 114.0, "letterbox": "top_left",
              "strides": [8, 16, 32], "size_rounding": "floor"},
    # Ultralytics export: RGB 0..1, centred letterbox on 114, boxes already decoded.
    "yolov8": {"channel_order": "rgb", "scale": 1.0 / 255.0, "pad_value": 114.0,
               "letterbox": "center", "strides": [8, 16, 32], "size_rounding": "round"},
}
# Settings a description file may give, each a ModelSpec field of the same name.
_DESCRIBED = ("channel_order", "scale", "pad_value", "letterbox", "size_rounding")

Dims = list[int | str]


def _dims(value_info: onnx.ValueInfoProto) -> Dims:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def description_file(model_path: Path) -> Path | None:
    """The description file beside ``model_path`` (``.yaml``, ``.yml`` or ``.json``), if any."""
    for suffix in (".yaml", ".yml", ".json"):
        p = model_path.with_suffix(suffix)
        if p.is_file():
            return p
    return None


def load_description(path: Path) -> dict[str, Any]:
    """Read a description file; :class:`ModelError` naming the file when it is unreadable or not a mapping."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model description: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model description must be a mapping")
    return data


def ultralytics_names(meta: dict[str, str]) -> list[str] | None:
    """Class names from Ultralytics metadata (``names``: a dict or list literal), or None."""
    raw = meta.get("names")
    if not raw:
        return None
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return None


def load_onnx(model_path: Path) -> onnx.ModelProto:
    """Load an ONNX model, turning every failure into a :class:`ModelError` naming the file."""
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    try:
        return onnx.load(str(model_path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for corrupt files
        raise ModelError(f"{model_path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class _Io:
    """The one image input and the first output of a detector graph."""

    input_name: str
    output_name: str
    in_dims: Dims
    out_dims: Dims


def _graph_io(model_path: Path, graph: onnx.GraphProto) -> _Io:
    """The image input ([N, 3, H, W]) and the output (rank 3), or :class:`ModelError`."""
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ModelError(f"{model_path}: expected one image input, found {len(inputs)}")
    in_dims = _dims(inputs[0])
    if len(in_dims) != 4:
        raise ModelError(f"{model_path}: input {inputs[0].name!r} has rank {len(in_dims)}, expected 4 (NCHW)")
    if in_dims[1] != 3:
        raise ModelError(f"{model_path}: input {inputs[0].name!r} has {in_dims[1]} channels, expected 3")
    if not graph.output:
        raise ModelError(f"{model_path}: model has no output")
    out_dims = _dims(graph.output[0])
    if len(out_dims) != 3:
        raise ModelError(f"{model_path}: output {graph.output[0].name!r} has rank {len(out_dims)}, expected 3")
    return _Io(inputs[0].name, graph.output[0].name, in_dims, out_dims)


def _family(model_path: Path, out_dims: Dims, meta: dict[str, str], desc: dict[str, Any],
            desc_path: Path | None) -> str:  # fmt: skip
    """Description file first, then Ultralytics metadata, then the output layout."""
    family = desc.get("family")
    if family is None and meta.get("task") == "detect" and "names" in meta:
        family = "yolov8"
    a, b = out_dims[1], out_dims[2]
    if family is None and isinstance(a, int) and isinstance(b, int):
        family = "yolox" if b < a else "yolov8"
    if family is not None and family not in FAMILIES and desc_path is not None:
        raise UnknownFamilyError(
            f"{desc_path}: unknown model family {family!r} (known: {', '.join(FAMILIES)})"
        )
    if family not in FAMILIES:
        raise UnknownFamilyError(
            f"{model_path}: cannot tell the model family (output {out_dims}); add a description "
            f"file {model_path.with_suffix('.yaml').name} with 'family: yolox' or 'family: yolov8'"
        )
    return str(family)


def _input_hw(model_path: Path, in_dims: Dims, meta: dict[str, str], desc: dict[str, Any]) -> tuple[int, int]:
    """The input size from the graph, or (symbolic) from the description or Ultralytics ``imgsz``."""
    h, w = in_dims[2], in_dims[3]
    if isinstance(h, int) and isinstance(w, int):
        return h, w
    hw = desc.get("input_hw") or ast.literal_eval(meta.get("imgsz", "None") or "None")
    if not hw:
        raise ModelError(f"{model_path}: input size is symbolic; give input_hw in the description file")
    return int(hw[0]), int(hw[1])


def _layout(model_path: Path, family: str, out_dims: Dims) -> tuple[int | str, int]:
    """(anchor rows, number of classes) from the output: YOLOX [B, A, 5 + C], YOLOv8 [B, 4 + C, A]."""
    a, b = out_dims[1], out_dims[2]
    rows, cols, extra = (a, b, 5) if family == "yolox" else (b, a, 4)
    num_classes = int(cols) - extra if isinstance(cols, int) else -1
    if num_classes <= 0:
        raise ModelError(f"{model_path}: output {out_dims} does not fit the {family} layout")
    return rows, num_classes


def _class_names(model_path: Path, num_classes: int, meta: dict[str, str], desc: dict[str, Any]) -> tuple[str, ...]:
    """Names from the description, then Ultralytics metadata, then COCO (80 classes) or the class ids."""
    names = desc.get("class_names") or ultralytics_names(meta)
    if not names:
        names = list(COCO_NAMES) if num_classes == len(COCO_NAMES) else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ModelError(f"{model_path}: {len(names)} class names for a model with {num_classes} classes")
    return tuple(str(n) for n in names)


def _spec(family: str, io: _Io, hw: tuple[int, int], num_classes: int, num_anchors: int,
          strides: tuple[int, ...], names: tuple[str, ...], desc: dict[str, Any]) -> ModelSpec:  # fmt: skip
    """The spec: the family defaults, each overridden by the description file."""
    settings = {k: desc.get(k, FAMILY_DEFAULTS[family][k]) for k in _DESCRIBED}
    return ModelSpec(
        family=family,
        input_name=io.input_name,
        output_name=io.output_name,
        input_hw=hw,
        num_classes=num_classes,
        num_anchors=num_anchors,
        channel_order=str(settings["channel_order"]),
        scale=float(settings["scale"]),
        pad_value=float(settings["pad_value"]),
        letterbox=str(settings["letterbox"]),
        strides=strides,
        size_rounding=str(settings["size_rounding"]),
        class_names=names,
    )


def detect_spec(model_path: Path, model: onnx.ModelProto | None = None) -> ModelSpec:
    """Work out the :class:`ModelSpec` of an ONNX detector.

    Order of evidence: a description file beside the model, Ultralytics metadata, then the
    output layout (``[B, A, 5 + C]`` is YOLOX, ``[B, 4 + C, A]`` is YOLOv8/YOLO11).
    """
    model = model if model is not None else load_onnx(model_path)
    io = _graph_io(model_path, model.graph)
    meta = {p.key: p.value for p in model.metadata_props}
    desc_path = description_file(model_path)
    desc = load_description(desc_path) if desc_path else {}

    family = _family(model_path, io.out_dims, meta, desc, desc_path)
    try:
        hw = _input_hw(model_path, io.in_dims, meta, desc)
        rows, num_classes = _layout(model_path, family, io.out_dims)
        strides = tuple(int(s) for s in desc.get("strides", FAMILY_DEFAULTS[family]["strides"]))
        num_anchors = int(rows) if isinstance(rows, int) else anchors_for(hw, strides)
        names = _class_names(model_path, num_classes, meta, desc)
        spec = _spec(family, io, hw, num_classes, num_anchors, strides, names, desc)
    except (TypeError, ValueError, SyntaxError, IndexError) as exc:
        where = desc_path or model_path
        raise ModelError(f"{where}: malformed model description: {exc}") from exc
    spec.validate()
    return spec

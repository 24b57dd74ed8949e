"""Model description: family, pre-processing and output layout, read from the model itself.

The family and its settings come from a small description file next to the model
(``<model>.yaml`` or ``<model>.json``), from Ultralytics metadata embedded in the ONNX, or from
the output layout; class and anchor counts always come from the model's output shape.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
import yaml

from dpa_perception.core.errors import ModelError, UnknownFamilyError

FAMILIES = ("yolox", "yolov8")

COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# Per-family pre-processing defaults (each overridable from the description file).
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # YOLOX official export: BGR 0..255, top-left letterbox on 114, grid decode over strides.
    "yolox": {"channel_order": "bgr", "scale": 1.0, "pad_value": 114.0, "letterbox": "top_left",
              "strides": [8, 16, 32], "size_rounding": "floor"},
    # Ultralytics export: RGB 0..1, centred letterbox on 114, boxes already decoded.
    "yolov8": {"channel_order": "rgb", "scale": 1.0 / 255.0, "pad_value": 114.0,
               "letterbox": "center", "strides": [8, 16, 32], "size_rounding": "round"},
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to feed a detector and decode its output."""

    family: str
    input_name: str
    output_name: str
    input_hw: tuple[int, int]
    num_classes: int
    num_anchors: int
    channel_order: str = "bgr"
    scale: float = 1.0
    pad_value: float = 114.0
    letterbox: str = "top_left"
    strides: tuple[int, ...] = (8, 16, 32)
    size_rounding: str = "floor"  # resized size: floor (YOLOX demo) or round (Ultralytics)
    class_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self.class_names):
            return self.class_names[class_id]
        return str(class_id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["strides"] = list(self.strides)
        d["class_names"] = list(self.class_names)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        try:
            spec = ModelSpec(
                family=str(d["family"]),
                input_name=str(d["input_name"]),
                output_name=str(d["output_name"]),
                input_hw=(int(d["input_hw"][0]), int(d["input_hw"][1])),
                num_classes=int(d["num_classes"]),
                num_anchors=int(d["num_anchors"]),
                channel_order=str(d.get("channel_order", "bgr")),
                scale=float(d.get("scale", 1.0)),
                pad_value=float(d.get("pad_value", 114.0)),
                letterbox=str(d.get("letterbox", "top_left")),
                strides=tuple(int(s) for s in d.get("strides", (8, 16, 32))),
                size_rounding=str(d.get("size_rounding", "floor")),
                class_names=tuple(str(n) for n in d.get("class_names", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"model description is incomplete or malformed: {exc}") from exc
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise :class:`ModelError` when the settings are inconsistent."""
        if self.family not in FAMILIES:
            raise UnknownFamilyError(f"unknown model family {self.family!r} (known: {', '.join(FAMILIES)})")
        if self.channel_order not in ("bgr", "rgb"):
            raise ModelError(f"channel_order must be bgr or rgb, not {self.channel_order!r}")
        if self.letterbox not in ("top_left", "center"):
            raise ModelError(f"letterbox must be top_left or center, not {self.letterbox!r}")
        h, w = self.input_hw
        if h <= 0 or w <= 0 or h % self.max_stride or w % self.max_stride:
            raise ModelError(f"input size {h}x{w} is not a positive multiple of stride {self.max_stride}")
        if self.size_rounding not in ("floor", "round"):
            raise ModelError(f"size_rounding must be floor or round, not {self.size_rounding!r}")
        if self.num_classes <= 0:
            raise ModelError("model has no classes")
        expected = anchors_for(self.input_hw, self.strides)
        if self.family == "yolox" and expected != self.num_anchors:
            raise ModelError(
                f"YOLOX output has {self.num_anchors} rows but strides {list(self.strides)} on "
                f"{h}x{w} give {expected}: wrong strides in the model description?"
            )


def anchors_for(hw: tuple[int, int], strides: tuple[int, ...]) -> int:
    """Number of grid cells over all strides for an input of size ``hw``."""
    return sum((hw[0] // s) * (hw[1] // s) for s in strides)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def _description_file(model_path: Path) -> Path | None:
    for suffix in (".yaml", ".yml", ".json"):
        p = model_path.with_suffix(suffix)
        if p.is_file():
            return p
    return None


def _load_description(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model description: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model description must be a mapping")
    return data


def _ultralytics_names(meta: dict[str, str]) -> list[str] | None:
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


def detect_spec(model_path: Path, model: onnx.ModelProto | None = None) -> ModelSpec:
    """Work out the :class:`ModelSpec` of an ONNX detector.

    Order of evidence: a description file beside the model, Ultralytics metadata, then the
    output layout (``[B, A, 5 + C]`` is YOLOX, ``[B, 4 + C, A]`` is YOLOv8/YOLO11).
    """
    model = model if model is not None else load_onnx(model_path)
    graph = model.graph
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

    meta = {p.key: p.value for p in model.metadata_props}
    desc_path = _description_file(model_path)
    desc = _load_description(desc_path) if desc_path else {}

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

    defaults = dict(_FAMILY_DEFAULTS[family])
    h, w = in_dims[2], in_dims[3]
    if not (isinstance(h, int) and isinstance(w, int)):
        hw = desc.get("input_hw") or ast.literal_eval(meta.get("imgsz", "None") or "None")
        if not hw:
            raise ModelError(f"{model_path}: input size is symbolic; give input_hw in the description file")
        h, w = int(hw[0]), int(hw[1])
    if family == "yolox":
        rows, cols = a, b
        num_classes = int(cols) - 5 if isinstance(cols, int) else -1
    else:
        rows, cols = b, a
        num_classes = int(cols) - 4 if isinstance(cols, int) else -1
    if num_classes <= 0:
        raise ModelError(f"{model_path}: output {out_dims} does not fit the {family} layout")
    strides = tuple(int(s) for s in desc.get("strides", defaults["strides"]))
    num_anchors = int(rows) if isinstance(rows, int) else anchors_for((h, w), strides)

    names = desc.get("class_names") or _ultralytics_names(meta)
    if not names:
        names = list(COCO_NAMES) if num_classes == len(COCO_NAMES) else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ModelError(f"{model_path}: {len(names)} class names for a model with {num_classes} classes")

    spec = ModelSpec(
        family=family,
        input_name=inputs[0].name,
        output_name=graph.output[0].name,
        input_hw=(h, w),
        num_classes=num_classes,
        num_anchors=num_anchors,
        channel_order=str(desc.get("channel_order", defaults["channel_order"])),
        scale=float(desc.get("scale", defaults["scale"])),
        pad_value=float(desc.get("pad_value", defaults["pad_value"])),
        letterbox=str(desc.get("letterbox", defaults["letterbox"])),
        strides=strides,
        size_rounding=str(desc.get("size_rounding", defaults["size_rounding"])),
        class_names=tuple(str(n) for n in names),
    )
    spec.validate()
    return spec


def with_input_hw(spec: ModelSpec, hw: tuple[int, int]) -> ModelSpec:
    """The same spec for another input size (used by the rect input shape policy)."""
    return replace(spec, input_hw=hw, num_anchors=anchors_for(hw, spec.strides))

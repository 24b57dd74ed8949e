"""Model description: family, pre-processing and output layout of a detector.

The :class:`ModelSpec` is worked out at build time from the model itself
(:func:`dpa_perception.build.model_detect.detect_spec`) and stored in the engine folder's
manifest; at run time it is read back from there, so this module needs no ONNX.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

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
        self._validate_numbers()
        h, w = self.input_hw
        if h <= 0 or w <= 0 or h % self.max_stride or w % self.max_stride:
            raise ModelError(f"input size {h}x{w} is not a positive multiple of stride {self.max_stride}")
        if self.size_rounding not in ("floor", "round"):
            raise ModelError(f"size_rounding must be floor or round, not {self.size_rounding!r}")
        if self.num_classes <= 0:
            raise ModelError("model has no classes")
        if self.num_anchors <= 0:
            raise ModelError("model has no anchor rows")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ModelError(f"{len(self.class_names)} class names for a model with {self.num_classes} classes")
        expected = anchors_for(self.input_hw, self.strides)
        if self.family == "yolox" and expected != self.num_anchors:
            raise ModelError(
                f"YOLOX output has {self.num_anchors} rows but strides {list(self.strides)} on "
                f"{h}x{w} give {expected}: wrong strides in the model description?"
            )


    def _validate_numbers(self) -> None:
        if not self.strides or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in self.strides):
            raise ModelError(f"strides must be positive integers, not {list(self.strides)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ModelError(f"scale must be a positive finite number, not {self.scale!r}")
        if not (math.isfinite(self.pad_value) and 0.0 <= self.pad_value <= 255.0):
            raise ModelError(f"pad_value must be within [0, 255], not {self.pad_value!r}")

    def digest(self) -> str:
        """sha256 of the canonical description (``to_dict`` as sorted compact JSON): what the manifest
        records as ``model.spec_sha256`` so an edited description is refused at load."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def output_shape(self, batch: int = 1, hw: tuple[int, int] | None = None) -> tuple[int, int, int]:
        """The first output's shape for ``batch`` frames on a canvas ``hw`` (default the input size):
        YOLOX ``[B, A, 5 + C]``, YOLOv8/YOLO11 ``[B, 4 + C, A]``."""
        anchors = self.num_anchors if hw is None or hw == self.input_hw else anchors_for(hw, self.strides)
        if self.family == "yolox":
            return (batch, anchors, 5 + self.num_classes)
        return (batch, 4 + self.num_classes, anchors)


def anchors_for(hw: tuple[int, int], strides: tuple[int, ...]) -> int:
    """Number of grid cells over all strides for an input of size ``hw``."""
    return sum((hw[0] // s) * (hw[1] // s) for s in strides)


def with_input_hw(spec: ModelSpec, hw: tuple[int, int]) -> ModelSpec:
    """The same spec for another input size (used by the rect input shape policy)."""
    return replace(spec, input_hw=hw, num_anchors=anchors_for(hw, spec.strides))


# Reduced input scales dpa-build measures for models with dynamic H/W (speed and agreement with the
# full-size square canvas): the rungs of the shape ladder the governor may step down under latency pressure.
LADDER_SCALES: tuple[float, ...] = (0.8, 0.64)


def scaled_input_hw(spec: ModelSpec, scale: float) -> tuple[int, int]:
    """The model's input size times ``scale``, each side rounded down to a stride multiple (at least one stride)."""
    if not (math.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ModelError(f"input scale must be within (0, 1], not {scale!r}")
    s = spec.max_stride
    h, w = spec.input_hw
    return max(s, int(h * scale) // s * s), max(s, int(w * scale) // s * s)


def at_scale(spec: ModelSpec, scale: float) -> ModelSpec:
    """The spec whose letterbox targets the reduced input size of ``scale`` (itself at 1.0)."""
    return spec if scale == 1.0 else with_input_hw(spec, scaled_input_hw(spec, scale))

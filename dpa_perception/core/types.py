"""Small value types shared by the engine, the pipeline, the tools and the ROS layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["int8", "high"]
MODES: tuple[Mode, ...] = ("int8", "high")
PrecisionMode = Literal["auto", "int8", "high"]
PRECISION_MODES: tuple[PrecisionMode, ...] = ("auto", "int8", "high")
Backend = Literal["onnxruntime", "tensorrt"]
BACKENDS: tuple[Backend, ...] = ("onnxruntime", "tensorrt")
InputShapePolicy = Literal["square", "rect"]
INPUT_SHAPE_POLICIES: tuple[InputShapePolicy, ...] = ("square", "rect")
# the input_shape parameter: a policy, or auto (rect where the build measured it agrees with square)
INPUT_SHAPE_CHOICES: tuple[str, ...] = (*INPUT_SHAPE_POLICIES, "auto")
# What happened to one input frame: run through the detector, dropped unprocessed (stale, late,
# replaced by a newer frame of its camera), or rejected as malformed before it reached the pipeline.
FrameStatus = Literal["processed", "dropped", "rejected"]
FRAME_STATUSES: tuple[FrameStatus, ...] = ("processed", "dropped", "rejected")
NS_PER_S = 1_000_000_000


def class_name(class_names: Sequence[str] | None, class_id: int) -> str:
    """The name of ``class_id``, or the id as text when the model names no such class (the one fallback)."""
    return class_names[class_id] if class_names and 0 <= class_id < len(class_names) else str(class_id)


@dataclass(frozen=True)
class Detections:
    """Detections of one frame, boxes in original image pixels (x1, y1, x2, y2)."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """The boxes scaled by ``sx`` (x) and ``sy`` (y): from a reduced decode back to the original pixels."""
        return Detections(self.boxes * np.array([sx, sy, sx, sy], np.float32), self.scores, self.class_ids)

    def filter(self, keep: np.ndarray) -> Detections:
        """Return the subset selected by a boolean mask or index array."""
        return Detections(self.boxes[keep], self.scores[keep], self.class_ids[keep])

    def to_dicts(self, class_names: list[str] | None = None) -> list[dict]:
        """JSON-ready list of detections."""
        out = []
        for box, score, cid in zip(self.boxes, self.scores, self.class_ids):
            c = int(cid)
            name = class_name(class_names, c)
            out.append(
                {
                    "class_id": c,
                    "class_name": name,
                    "score": round(float(score), 4),
                    "box_xyxy": [round(float(v), 1) for v in box],
                }
            )
        return out


@dataclass
class StageTiming:
    """Per-batch stage durations in milliseconds."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    def as_dict(self) -> dict[str, float]:
        return {
            "preprocess": round(self.preprocess_ms, 3),
            "inference": round(self.inference_ms, 3),
            "postprocess": round(self.postprocess_ms, 3),
            "total": round(self.total_ms, 3),
        }


@dataclass
class BatchResult:
    """What one engine call returns: detections per input frame and the stage timing."""

    detections: list[Detections]
    mode: Mode
    timing: StageTiming = field(default_factory=StageTiming)
    input_hw: tuple[int, int] = (0, 0)

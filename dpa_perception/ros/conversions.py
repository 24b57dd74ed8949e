"""Detections <-> ROS messages.

The arithmetic (boxes -> centre/size, class map, annotation drawing, stamps) is plain Python/numpy
and tested without ROS. The message builders take the message classes as arguments (defaulting to
``vision_msgs`` / ``sensor_msgs`` imported lazily), so tests can pass look-alike classes.

Message layout (vision_msgs 4.x, Humble and Jazzy): ``Detection2D.bbox.center.position.x/y`` is the
box centre and ``bbox.size_x/size_y`` its full size, in pixels; ``results[i].hypothesis.class_id`` is
a string, here the model's integer class id in decimal (``"2"``), whose name ``LabelInfo.class_map``
gives (``VisionClass(class_id=2, class_name="car")``), as vision_msgs' LabelInfo describes.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpa_perception.core.drawing import draw_detections
from dpa_perception.core.types import NS_PER_S, Detections, class_name


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """builtin_interfaces/Time (sec, nanosec) as integer nanoseconds."""
    return int(sec) * NS_PER_S + int(nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds as builtin_interfaces/Time (sec, nanosec)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


@dataclass(frozen=True)
class BoxRecord:
    """One detection in the shape of vision_msgs/Detection2D (pixels, image convention)."""

    center_x: float
    center_y: float
    size_x: float
    size_y: float
    class_id: str  # decimal integer id, as ObjectHypothesis.class_id
    class_name: str
    score: float


def box_records(dets: Detections, class_names: Sequence[str] = ()) -> list[BoxRecord]:
    """Detections (xyxy pixel boxes) as centre/size records, in the detections' order."""
    out = []
    for box, score, cid in zip(dets.boxes, dets.scores, dets.class_ids):
        x1, y1, x2, y2 = (float(v) for v in box)
        c = int(cid)
        name = class_name(class_names, c)
        out.append(
            BoxRecord(
                center_x=(x1 + x2) / 2.0,
                center_y=(y1 + y2) / 2.0,
                size_x=max(x2 - x1, 0.0),
                size_y=max(y2 - y1, 0.0),
                class_id=str(c),
                class_name=name,
                score=float(score),
            )
        )
    return out


def class_map(class_names: Sequence[str]) -> list[tuple[int, str]]:
    """(class_id, class_name) pairs for vision_msgs/LabelInfo.class_map (ids fit uint16, < 65535)."""
    if len(class_names) > 65535:
        raise ValueError(f"{len(class_names)} classes do not fit LabelInfo's uint16 ids")
    return [(i, str(n)) for i, n in enumerate(class_names)]


def annotate(
    frame: np.ndarray,
    dets: Detections,
    class_names: Sequence[str] = (),
    *,
    track_ids: Sequence[int] | np.ndarray | None = None,
    header: str | None = None,
) -> np.ndarray:
    """A copy of ``frame`` (BGR uint8) with boxes, class names and scores drawn (and track ids, a header
    line: :func:`dpa_perception.core.drawing.draw_detections`)."""
    return draw_detections(frame, dets, class_names, track_ids=track_ids, header=header)


def image_fields(frame: np.ndarray) -> dict[str, Any]:
    """sensor_msgs/Image fields for a BGR uint8 frame (``data`` as ``array('B')``, the fast path)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a BGR uint8 frame, got {frame.dtype} {frame.shape}")
    h, w = frame.shape[:2]
    return {
        "height": int(h),
        "width": int(w),
        "encoding": "bgr8",
        "is_bigendian": 0,
        "step": int(w * 3),
        "data": array.array("B", np.ascontiguousarray(frame).tobytes()),
    }


# ------------------------------------------------------------------ message builders


@dataclass
class VisionTypes:
    """The vision_msgs classes the builders use (injectable for tests)."""

    Detection2DArray: Any
    Detection2D: Any
    ObjectHypothesisWithPose: Any
    LabelInfo: Any
    VisionClass: Any


def vision_types() -> VisionTypes:
    from vision_msgs.msg import (
        Detection2D,
        Detection2DArray,
        LabelInfo,
        ObjectHypothesisWithPose,
        VisionClass,
    )

    return VisionTypes(Detection2DArray, Detection2D, ObjectHypothesisWithPose, LabelInfo, VisionClass)


def detection_array_msg(header: Any, records: Sequence[BoxRecord], types: VisionTypes,
                        track_ids: Sequence[int] | None = None) -> Any:
    """vision_msgs/Detection2DArray with ``header`` copied to the array and every detection.

    Empty ``records`` give an empty array: "nothing found", as opposed to no message ("stalled").
    ``track_ids``: per record, the world track id put in ``Detection2D.id`` (0: left empty).
    """
    msg = types.Detection2DArray()
    msg.header = header
    for i, rec in enumerate(records):
        det = types.Detection2D()
        det.header = header
        if track_ids is not None and track_ids[i] > 0:
            det.id = str(int(track_ids[i]))
        det.bbox.center.position.x = rec.center_x
        det.bbox.center.position.y = rec.center_y
        det.bbox.center.theta = 0.0
        det.bbox.size_x = rec.size_x
        det.bbox.size_y = rec.size_y
        hyp = types.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = rec.class_id
        hyp.hypothesis.score = rec.score
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


def label_info_msg(header: Any, class_names: Sequence[str], threshold: float, types: VisionTypes) -> Any:
    """vision_msgs/LabelInfo: the model's class map and the score threshold in use."""
    msg = types.LabelInfo()
    msg.header = header
    msg.class_map = [types.VisionClass(class_id=i, class_name=n) for i, n in class_map(class_names)]
    msg.threshold = float(threshold)
    return msg


def image_msg(header: Any, frame: np.ndarray, image_cls: Any) -> Any:
    """sensor_msgs/Image (bgr8) of ``frame`` with ``header``."""
    msg = image_cls()
    msg.header = header
    for k, v in image_fields(frame).items():
        setattr(msg, k, v)
    return msg

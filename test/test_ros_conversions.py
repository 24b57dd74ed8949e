"""ROS-free parts of the ROS layer: detections -> messages, annotation, stamps, diagnostic levels.

The message builders are exercised with look-alike classes that have the vision_msgs 4.x field
layout (Detection2D.bbox.center.position.x ...); the real classes are used in test_ros_node.py.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dpa_perception.core.types import Detections
from dpa_perception.ros.conversions import (
    VisionTypes,
    annotate,
    box_records,
    class_map,
    detection_array_msg,
    image_fields,
    image_msg,
    label_info_msg,
    ns_to_stamp,
    stamp_to_ns,
)

# ---------------------------------------------------------------- look-alike messages


@dataclass
class _Point2D:
    x: float = 0.0
    y: float = 0.0


@dataclass
class _Pose2D:
    position: _Point2D = field(default_factory=_Point2D)
    theta: float = 0.0


@dataclass
class _BBox:
    center: _Pose2D = field(default_factory=_Pose2D)
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass
class _Hyp:
    class_id: str = ""
    score: float = 0.0


@dataclass
class _HypWithPose:
    hypothesis: _Hyp = field(default_factory=_Hyp)
    pose: Any = None


@dataclass
class _Det:
    header: Any = None
    results: list = field(default_factory=list)
    bbox: _BBox = field(default_factory=_BBox)
    id: str = ""


@dataclass
class _DetArray:
    header: Any = None
    detections: list = field(default_factory=list)


@dataclass
class _VisionClass:
    class_id: int = 0
    class_name: str = ""


@dataclass
class _LabelInfo:
    header: Any = None
    class_map: list = field(default_factory=list)
    threshold: float = 0.0


@dataclass
class _Image:
    header: Any = None
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: Any = None


FAKE = VisionTypes(_DetArray, _Det, _HypWithPose, _LabelInfo, _VisionClass)
NAMES = ["person", "bicycle", "car"]


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64))


# ---------------------------------------------------------------- conversions


def test_stamps_round_trip() -> None:
    assert stamp_to_ns(1600000000, 123) == 1600000000_000000123
    assert ns_to_stamp(1600000000_000000123) == (1600000000, 123)
    assert ns_to_stamp(stamp_to_ns(0, 999_999_999)) == (0, 999_999_999)


def test_box_records_are_centre_and_full_size_in_pixels() -> None:
    recs = box_records(dets((10, 20, 50, 100, 0.9, 2), (0, 0, 4, 2, 0.5, 99)), NAMES)
    assert recs[0].center_x == 30.0 and recs[0].center_y == 60.0
    assert recs[0].size_x == 40.0 and recs[0].size_y == 80.0
    assert recs[0].class_id == "2" and recs[0].class_name == "car"
    assert recs[0].score == pytest.approx(0.9)
    assert recs[1].class_name == "99"  # unknown id: the number
    assert all(isinstance(v, float) for v in (recs[0].center_x, recs[0].size_y, recs[0].score))
    assert box_records(Detections.empty(), NAMES) == []


def test_detection_array_copies_the_header_everywhere() -> None:
    header = object()
    msg = detection_array_msg(header, box_records(dets((10, 20, 50, 100, 0.9, 2)), NAMES), FAKE)
    assert msg.header is header and len(msg.detections) == 1
    d = msg.detections[0]
    assert d.header is header
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (30.0, 60.0)
    assert (d.bbox.size_x, d.bbox.size_y) == (40.0, 80.0)
    assert d.results[0].hypothesis.class_id == "2"
    assert d.results[0].hypothesis.score == pytest.approx(0.9)
    empty = detection_array_msg(header, [], FAKE)
    assert empty.header is header and empty.detections == []


def test_label_info_maps_ids_to_names() -> None:
    msg = label_info_msg("h", NAMES, 0.3, FAKE)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "person"), (1, "bicycle"), (2, "car")]
    assert msg.threshold == pytest.approx(0.3) and msg.header == "h"
    assert class_map([]) == []


def test_image_fields_and_message() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (5, 7, 3), np.uint8)
    f = image_fields(frame)
    assert (f["height"], f["width"], f["step"], f["encoding"], f["is_bigendian"]) == (5, 7, 21, "bgr8", 0)
    assert isinstance(f["data"], array.array) and f["data"].typecode == "B"
    assert bytes(f["data"]) == frame.tobytes()
    msg = image_msg("h", frame, _Image)
    assert msg.header == "h" and msg.width == 7
    with pytest.raises(ValueError):
        image_fields(np.zeros((4, 4), np.uint8))


def test_annotate_draws_on_a_copy(testdata: Path) -> None:
    frame = cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    assert frame is not None
    d = dets((100, 100, 300, 250, 0.87, 2), (-20, -20, 40, 5000, 0.4, 0))  # second box off-image
    out = annotate(frame, d, NAMES)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, frame)
    changed = np.any(out != frame, axis=2)
    assert changed[100, 100:300].any() and changed[250, 100:300].any()  # box edges drawn
    assert not changed[400:, 600:].any()  # far from any box: untouched
    assert np.array_equal(annotate(frame, Detections.empty()), frame)
    gray = annotate(frame[:, :, 0], d, NAMES)
    assert gray.ndim == 3



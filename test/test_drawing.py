"""core.drawing: boxes in class colours, labels with scores and track ids, the header band."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core.drawing import class_color, draw_detections, header_height
from dpa_perception.core.types import Detections
from dpa_perception.ros.conversions import annotate

NAMES = ("person", "bicycle", "car")


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64))


def gray_frame(h: int = 480, w: int = 640) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def test_class_color_is_stable_and_distinct() -> None:
    assert class_color(2) == class_color(2)
    colors = {class_color(i) for i in range(10)}
    assert len(colors) == 10
    assert all(0 <= c <= 255 for col in colors for c in col)


def test_boxes_drawn_in_class_colour_on_a_copy() -> None:
    frame = gray_frame()
    before = frame.copy()
    out = draw_detections(frame, dets((100, 150, 300, 350, 0.9, 2)), NAMES)
    assert np.array_equal(frame, before)  # input untouched
    assert out.shape == frame.shape and out.dtype == np.uint8 and not np.shares_memory(out, frame)
    color = np.array(class_color(2), np.uint8)
    assert (out[350, 150:250] == color).all()  # bottom edge, in the class colour
    assert (out[200:300, 100] == color).all()  # left edge
    assert (out[200:300, 150:250] == 128).all()  # the box's inside is left alone
    changed = np.any(out != frame, axis=2)
    assert changed[130:150, 100:160].any()  # the label band above the box
    assert not changed[400:, 400:].any()  # away from the box: untouched


def test_label_carries_the_track_id() -> None:
    frame = gray_frame()
    d = dets((100, 150, 300, 350, 0.9, 2))
    plain = draw_detections(frame, d, NAMES)
    tracked = draw_detections(frame, d, NAMES, track_ids=[17])
    untracked = draw_detections(frame, d, NAMES, track_ids=[0])
    assert np.array_equal(plain, untracked)  # id 0 = no track: no "#0"
    diff = np.any(plain != tracked, axis=2)
    ys, xs = np.nonzero(diff)
    assert len(xs) and ys.max() < 150 and xs.min() > 100  # the label grew to the right, above the box
    with pytest.raises(ValueError):
        draw_detections(frame, d, NAMES, track_ids=[1, 2])


def test_header_band_at_the_top() -> None:
    frame = gray_frame()
    out = draw_detections(frame, Detections.empty(), header="cam0  int8  visibility 0.12 clear  t=12.3 s")
    band = header_height(*frame.shape[:2])
    assert 8 <= band < 60
    top = out[:band]
    assert (top == 32).mean() > 0.5  # mostly the dark band
    assert (top > 200).any()  # with white text on it
    assert np.array_equal(out[band:], frame[band:])  # the rest untouched
    assert np.array_equal(draw_detections(frame, Detections.empty()), frame)  # no header, nothing drawn


def test_label_of_a_box_at_the_top_stays_below_the_header() -> None:
    frame = gray_frame()
    d = dets((200, 5, 400, 300, 0.5, 0))
    out = draw_detections(frame, d, NAMES, header="hdr")
    band = header_height(*frame.shape[:2])
    color = np.array(class_color(0), np.uint8)
    below = out[band : band + 30, 200:260]
    assert (below == color).all(axis=2).any()  # the label band, moved inside the box


def test_off_image_boxes_grey_and_bgra_frames() -> None:
    frame = gray_frame(200, 300)
    d = dets((-50, -50, 5000, 5000, 0.4, 1), (float("nan"), 0, 10, 10, 0.3, 7))
    out = draw_detections(frame, d, NAMES)
    assert out.shape == frame.shape
    assert draw_detections(frame[:, :, 0], d).shape == (200, 300, 3)
    bgra = np.dstack([frame, np.full((200, 300), 255, np.uint8)])
    assert draw_detections(bgra, d).shape == (200, 300, 3)
    with pytest.raises(ValueError):
        draw_detections(frame.astype(np.float32), d)


def test_annotate_is_draw_detections(testdata: Path) -> None:
    frame = cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    assert frame is not None
    d = dets((100, 100, 300, 250, 0.87, 2), (400, 200, 500, 300, 0.5, 0))
    assert np.array_equal(annotate(frame, d, NAMES), draw_detections(frame, d, NAMES))
    kw = {"track_ids": [3, 0], "header": "cam0 high"}
    assert np.array_equal(annotate(frame, d, NAMES, **kw), draw_detections(frame, d, NAMES, **kw))

"""Annotated frames: detection boxes, class names, scores, track ids and a header line (numpy + OpenCV).

Shared by the ROS node's annotated image topic, the replay's annotated videos and ``dpa-detect
--annotate``. Every function draws on a copy; the input frame is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from dpa_perception.core.types import Detections, class_name

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_HEADER_BG = (32, 32, 32)
_HEADER_FG = (255, 255, 255)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class id (hue steps of 47 degrees/2, full value)."""
    hue = (int(class_id) * 47) % 180
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _as_bgr_copy(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame.copy()
    raise ValueError(f"expected a BGR, BGRA or grey image, got shape {frame.shape}")


def _scale(h: int, w: int) -> tuple[int, float]:
    """Line thickness and font scale for a frame of ``h`` x ``w`` pixels."""
    thick = max(1, round(min(h, w) / 400))
    return thick, 0.4 * thick


def _clip_box(box: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(float(v)) if np.isfinite(v) else 0 for v in box)
    x1, x2 = sorted((min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)))
    y1, y2 = sorted((min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)))
    return x1, y1, x2, y2


def _label(name: str, score: float, track_id: int | None) -> str:
    text = f"{name} {score:.2f}"
    return f"{text} #{track_id}" if track_id is not None and track_id > 0 else text


def _draw_label(
    img: np.ndarray, text: str, x1: int, y1: int, color: tuple[int, int, int], thick: int, font_scale: float, top: int
) -> None:
    """``text`` on a filled band of ``color`` above the box corner (inside it when no room above ``top``)."""
    h, w = img.shape[:2]
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thick)
    ty = y1 - 2 if y1 - th - base - 2 >= top else min(y1 + th + 2, h - 1)
    cv2.rectangle(img, (x1, ty - th - 2), (min(x1 + tw + 2, w - 1), ty + base - 2), color, -1)
    cv2.putText(img, text, (x1 + 1, ty - 2), _FONT, font_scale, (0, 0, 0), thick, cv2.LINE_AA)


def header_height(frame_h: int, frame_w: int) -> int:
    """The height in pixels of the header band :func:`draw_detections` draws on such a frame."""
    thick, font_scale = _scale(frame_h, frame_w)
    (_, th), base = cv2.getTextSize("Ag", _FONT, font_scale, thick)
    return min(frame_h, th + base + 6)


def draw_header(img: np.ndarray, text: str) -> None:
    """Draw ``text`` in white on a dark band across the top of ``img`` (in place)."""
    h, w = img.shape[:2]
    thick, font_scale = _scale(h, w)
    band = header_height(h, w)
    cv2.rectangle(img, (0, 0), (w - 1, band - 1), _HEADER_BG, -1)
    (_, th), _base = cv2.getTextSize(text, _FONT, font_scale, thick)
    cv2.putText(img, text, (3, min(3 + th, band - 1)), _FONT, font_scale, _HEADER_FG, thick, cv2.LINE_AA)


def draw_detections(
    frame: np.ndarray,
    dets: Detections,
    class_names: Sequence[str] = (),
    track_ids: Sequence[int] | np.ndarray | None = None,
    header: str | None = None,
) -> np.ndarray:
    """A BGR uint8 copy of ``frame`` with each detection's box in its class colour and a label
    ``"name score"`` (plus ``"#id"`` where ``track_ids[i] > 0``); ``header``, if given, is one line
    of text on a dark band across the top (boxes' labels stay below it).

    ``frame`` may be BGR, BGRA or grey; boxes outside the frame are clipped to it.
    """
    img = _as_bgr_copy(frame)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if track_ids is not None and len(track_ids) != len(dets):
        raise ValueError(f"{len(track_ids)} track ids for {len(dets)} detections")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        return img
    thick, font_scale = _scale(h, w)
    top = header_height(h, w) if header else 0
    for i, (box, score, cid) in enumerate(zip(dets.boxes, dets.scores, dets.class_ids)):
        x1, y1, x2, y2 = _clip_box(box, h, w)
        color = class_color(int(cid))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick)
        tid = None if track_ids is None else int(track_ids[i])
        _draw_label(img, _label(class_name(class_names, int(cid)), float(score), tid), x1, y1, color, thick,
                    font_scale, top)  # fmt: skip
    if header:
        draw_header(img, header)
    return img

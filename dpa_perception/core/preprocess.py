"""Letterbox pre-processing into a batch tensor, and the inverse mapping of boxes.

Two input shape policies: ``square`` (the model's native canvas) and ``rect`` (the canvas trimmed to
the smallest stride multiple that holds the resized frames; same scale, less padding to compute).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dpa_perception.core.errors import ConfigError, ImageError
from dpa_perception.core.model_spec import ModelSpec


@dataclass(frozen=True)
class LetterboxInfo:
    """How one frame was placed on the canvas: ``canvas = frame * ratio + (pad_x, pad_y)``."""

    ratio: float  # x (and y unless ratio_y is set)
    pad_x: float
    pad_y: float
    src_hw: tuple[int, int]
    ratio_y: float | None = None  # Ultralytics maps y back by round(h * r) / h, x by round(w * r) / w


def check_frame(frame: np.ndarray) -> np.ndarray:
    """Return ``frame`` as a 3-channel uint8 image or raise :class:`ImageError`."""
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise ImageError("empty image")
    if frame.dtype != np.uint8:
        raise ImageError(f"image dtype {frame.dtype} is not uint8")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageError(f"image shape {frame.shape} is not HxW or HxWx3")
    return frame


def resize_ratio(src_hw: tuple[int, int], model_hw: tuple[int, int]) -> float:
    return min(model_hw[0] / src_hw[0], model_hw[1] / src_hw[1])


def resized_hw(src_hw: tuple[int, int], spec: ModelSpec) -> tuple[int, int]:
    """Size of a frame after the model's letterbox resize (rounding as the family's exporter does)."""
    r = resize_ratio(src_hw, spec.input_hw)
    if spec.size_rounding == "round":
        return round(src_hw[0] * r), round(src_hw[1] * r)
    return int(src_hw[0] * r), int(src_hw[1] * r)


def canvas_hw(frames_hw: Sequence[tuple[int, int]], spec: ModelSpec, policy: str) -> tuple[int, int]:
    """The batch canvas size for frames of the given sizes under ``policy``."""
    if policy == "square":
        return spec.input_hw
    if policy != "rect":
        raise ConfigError(f"input shape policy must be square or rect, not {policy!r}")
    s = spec.max_stride
    h = w = s
    for hw in frames_hw:
        nh, nw = resized_hw(hw, spec)
        h = max(h, math.ceil(nh / s) * s)
        w = max(w, math.ceil(nw / s) * s)
    return min(h, spec.input_hw[0]), min(w, spec.input_hw[1])


def _place(frame: np.ndarray, plane: np.ndarray, nh: int, nw: int, py: int, px: int, pad: int) -> None:
    """``frame`` resized to ``nw`` x ``nh`` at (``px``, ``py``) on ``plane``, the rest of it ``pad``."""
    plane[:py] = pad
    plane[py + nh :] = pad
    plane[py : py + nh, :px] = pad
    plane[py : py + nh, px + nw :] = pad
    roi = plane[py : py + nh, px : px + nw]
    if frame.shape[:2] == (nh, nw):
        roi[:] = frame
        return
    got = cv2.resize(frame, (nw, nh), dst=roi, interpolation=cv2.INTER_LINEAR)
    if not np.shares_memory(got, roi):  # OpenCV could not write into the view: copy its result
        roi[:] = got


def letterbox_batch(
    frames: Sequence[np.ndarray], spec: ModelSpec, canvas: tuple[int, int], out: np.ndarray | None = None
) -> tuple[np.ndarray, list[LetterboxInfo]]:
    """Resize each frame by the model's ratio, place it on a ``canvas`` of pad value, stack as NCHW.

    ``out``: a float32 (N, 3, H, W) buffer to fill instead of a new one (the engine keeps one per
    batch size and canvas, so no frame allocates megabytes)."""
    ch, cw = canvas
    shape = (len(frames), 3, ch, cw)
    batch = out if out is not None and out.shape == shape and out.dtype == np.float32 else np.empty(shape, np.float32)
    infos: list[LetterboxInfo] = []
    plane = np.empty((ch, cw, 3), np.uint8)
    order = (2, 1, 0) if spec.channel_order == "rgb" else (0, 1, 2)
    for i, frame in enumerate(frames):
        frame = check_frame(frame)
        h, w = frame.shape[:2]
        r = resize_ratio((h, w), spec.input_hw)
        nh, nw = resized_hw((h, w), spec)
        nh, nw = min(ch, nh), min(cw, nw)
        if nh < 1 or nw < 1:
            raise ImageError(f"frame {w}x{h} is too thin to letterbox onto {cw}x{ch} (it would be {nw}x{nh} px)")
        px, py = ((cw - nw) // 2, (ch - nh) // 2) if spec.letterbox == "center" else (0, 0)
        _place(frame, plane, nh, nw, py, px, int(spec.pad_value))
        for c, plane_c in zip(order, cv2.split(plane)):  # contiguous planes: a fast uint8 -> float32 copy
            batch[i, c] = plane_c
        if spec.size_rounding == "round":  # the exporter's exact inverse: each axis by its rounded size
            infos.append(LetterboxInfo(nw / w, float(px), float(py), (h, w), nh / h))
        else:
            infos.append(LetterboxInfo(r, float(px), float(py), (h, w)))
    if spec.scale != 1.0:
        batch *= np.float32(spec.scale)
    return batch, infos


def unletterbox(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map xyxy canvas boxes back to original pixels and clip them to the frame."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - info.pad_x) / info.ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - info.pad_y) / (info.ratio if info.ratio_y is None else info.ratio_y)
    h, w = info.src_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out

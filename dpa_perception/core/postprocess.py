"""Decode detector outputs (YOLOX and YOLOv8/YOLO11 layouts), filter, run NMS, map to pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.preprocess import LetterboxInfo, unletterbox
from dpa_perception.core.types import Detections


@dataclass
class DecodeConfig:
    """Thresholds applied after inference; safe to change between calls."""

    score_threshold: float = P.default("score_threshold")
    nms_iou: float = P.default("nms_iou")
    class_agnostic: bool = False
    class_filter: frozenset[int] = field(default_factory=frozenset)  # empty = all classes
    max_detections: int = 300

    def validate(self) -> None:
        P.check_fields(self, ("score_threshold", "nms_iou"))  # ranges from the parameter table
        if self.max_detections < 1:
            raise ConfigError("max_detections must be at least 1")


@lru_cache(maxsize=16)
def yolox_grid(hw: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Grid offsets (A, 2) and per-row stride (A, 1) for a YOLOX output on a canvas of size ``hw``."""
    grids, ss = [], []
    for s in strides:
        gh, gw = hw[0] // s, hw[1] // s
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack((xs, ys), -1).reshape(-1, 2))
        ss.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(ss).astype(np.float32)


def _candidates_yolox(
    out: np.ndarray, spec: ModelSpec, hw: tuple[int, int], thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's YOLOX rows ``[x, y, w, h, obj, cls...]`` -> xyxy canvas boxes, scores, classes."""
    grid, stride = yolox_grid(hw, spec.strides)
    if out.shape[0] != grid.shape[0]:
        raise ConfigError(f"YOLOX output has {out.shape[0]} rows, expected {grid.shape[0]} for canvas {hw}")
    rows = np.nonzero(out[:, 4] > thr)[0]  # score = obj * cls <= obj
    sub = out[rows]
    cls = sub[:, 5:].argmax(1)
    score = sub[:, 4] * sub[np.arange(len(rows)), 5 + cls]
    keep = score > thr
    rows, sub, cls, score = rows[keep], sub[keep], cls[keep], score[keep]
    xy = (sub[:, :2] + grid[rows]) * stride[rows]
    wh = np.exp(sub[:, 2:4]) * stride[rows]
    boxes = np.concatenate((xy - wh / 2, xy + wh / 2), 1)
    return boxes, score, cls


def _candidates_yolov8(out: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's ``[4 + C, A]`` output (cx, cy, w, h in canvas pixels) -> candidates."""
    cls_scores = out[4:]
    best = cls_scores.max(0)
    cols = np.nonzero(best > thr)[0]
    score = best[cols]
    cls = cls_scores[:, cols].argmax(0)
    c = out[:4, cols].T
    boxes = np.concatenate((c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2), 1)
    return boxes, score, cls


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, agnostic: bool) -> np.ndarray:
    """Indices kept by OpenCV's NMS, highest score first; class-aware unless ``agnostic``."""
    if len(scores) == 0:
        return np.zeros((0,), np.int64)
    xywh: Any = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1).astype(np.float64)
    sc: Any = scores.astype(np.float32)
    if agnostic:
        kept = cv2.dnn.NMSBoxes(xywh, sc, 0.0, iou)
    else:
        cls: Any = class_ids.astype(np.int32)
        kept = cv2.dnn.NMSBoxesBatched(xywh, sc, cls, 0.0, iou)
    idx = np.asarray(kept, np.int64).reshape(-1)
    return idx[np.argsort(-scores[idx], kind="stable")]


def decode_batch(
    output: np.ndarray,
    spec: ModelSpec,
    canvas: tuple[int, int],
    infos: list[LetterboxInfo],
    cfg: DecodeConfig,
    score_offset: float = 0.0,
) -> list[Detections]:
    """Turn a raw batch output into per-frame detections in original pixels.

    ``score_offset`` is a variant's score calibration (see ``dpa-build``): added to every score
    before the threshold, so an INT8 variant whose scores run systematically low keeps the same
    operating point as the high-precision one.
    """
    results = []
    thr = max(cfg.score_threshold - score_offset, 0.0)
    for b, info in enumerate(infos):
        if spec.family == "yolox":
            boxes, scores, cls = _candidates_yolox(output[b], spec, canvas, thr)
        else:
            boxes, scores, cls = _candidates_yolov8(output[b], thr)
        if cfg.class_filter:
            m = np.isin(cls, np.fromiter(cfg.class_filter, np.int64))
            boxes, scores, cls = boxes[m], scores[m], cls[m]
        keep = nms(boxes, scores, cls, cfg.nms_iou, cfg.class_agnostic)[: cfg.max_detections]
        results.append(
            Detections(
                unletterbox(boxes[keep], info),
                np.minimum(scores[keep] + score_offset, 1.0).astype(np.float32),
                cls[keep].astype(np.int64),
            )
        )
    return results


def anchor_scores(output: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Best class score per anchor, shape (B, A): the quantity detection thresholds act on."""
    if spec.family == "yolox":
        return output[:, :, 4] * output[:, :, 5:].max(2)
    return output[:, 4:, :].max(1)

"""How close a candidate variant comes to the high-precision reference on a set of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.build import sensitivity as sens
from dpa_perception.build.metrics import Agreement, agreement
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.postprocess import DecodeConfig, anchor_scores, decode_batch
from dpa_perception.core.preprocess import letterbox_batch
from dpa_perception.core.types import Detections

# The operating point the build measures at: detections above this score, matched one-to-one
# (class-aware) at this IoU; NMS as the engine runs it.
SCORE_THRESHOLD = 0.3
AGREEMENT_IOU = 0.5
NMS_IOU = 0.45


class Evaluator:
    """Runs a candidate variant on the held-out frames and compares it with the FP32 reference."""

    def __init__(self, spec: ModelSpec, high_path: Path, frames: list[np.ndarray], score_threshold: float = SCORE_THRESHOLD):
        self.spec = spec
        self.score_threshold = score_threshold
        # decode low so agreement can be measured at thresholds around the operating one
        self.decode = DecodeConfig(score_threshold=max(0.05, score_threshold - 0.15), nms_iou=NMS_IOU)
        self.batch, self.infos = letterbox_batch(frames, spec, spec.input_hw)
        self.ref_out = self.run(high_path)
        self.ref_scores = anchor_scores(self.ref_out, spec)
        self.ref_dets = self.detections(self.ref_out)

    def run(self, path: Path) -> np.ndarray:
        s = OnnxRuntimeSession(path, Placement("cpu"), OrtOptions(intra_op_threads=0))
        try:
            return np.concatenate([s.run(self.batch[i : i + 1]) for i in range(len(self.batch))])
        finally:
            s.close()

    def detections(self, out: np.ndarray, score_offset: float = 0.0) -> list[Detections]:
        return decode_batch(out, self.spec, self.spec.input_hw, self.infos, self.decode, score_offset)

    def score_error(self, out: np.ndarray) -> float:
        return sens.score_error(self.ref_scores, anchor_scores(out, self.spec))

    def agreement(self, out: np.ndarray, min_score: float | None = None, score_offset: float = 0.0) -> Agreement:
        total = Agreement()
        thr = self.score_threshold if min_score is None else min_score
        for r, t in zip(self.ref_dets, self.detections(out, score_offset)):
            total += agreement(r, t, iou=AGREEMENT_IOU, min_score=thr)
        return total

    def plan_error(self, out: np.ndarray, score_offset: float = 0.0) -> float:
        """1 - F1 averaged over score thresholds around the operating one (scores shifted by ``score_offset``).

        At a single threshold the error jumps whenever one borderline detection crosses it;
        the average is a smoother, more monotonic signal for the plan search and the score offset.
        """
        base = self.score_threshold
        thresholds = [t for t in (base - 0.1, base - 0.05, base, base + 0.05, base + 0.1) if 0.0 < t < 1.0]
        return float(np.mean([1.0 - self.agreement(out, t, score_offset).f1 for t in thresholds]))

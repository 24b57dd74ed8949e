"""Detection agreement metrics (matching at an IoU threshold), used by the builder, tests and eval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpa_perception.core.types import Detections


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Agreement:
    """Greedy one-to-one matching counts of ``test`` detections against ``ref``."""

    matched: int = 0
    n_ref: int = 0
    n_test: int = 0

    @property
    def recall(self) -> float:
        return self.matched / self.n_ref if self.n_ref else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.n_test if self.n_test else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __iadd__(self, other: Agreement) -> Agreement:
        self.matched += other.matched
        self.n_ref += other.n_ref
        self.n_test += other.n_test
        return self

    def as_dict(self) -> dict[str, float]:
        return {"recall": round(self.recall, 4), "precision": round(self.precision, 4),
                "f1": round(self.f1, 4), "n_ref": self.n_ref, "n_test": self.n_test}


def agreement(
    ref: Detections, test: Detections, iou: float = 0.5, min_score: float = 0.3, class_aware: bool = True
) -> Agreement:
    """Match ``test`` to ``ref`` (both filtered at ``min_score``), best scores first."""
    r = ref.filter(ref.scores >= min_score)
    t = test.filter(test.scores >= min_score)
    m = iou_matrix(t.boxes, r.boxes)
    if class_aware and m.size:
        m = np.where(t.class_ids[:, None] == r.class_ids[None, :], m, 0.0)
    used = np.zeros(len(r), bool)
    matched = 0
    for i in np.argsort(-t.scores, kind="stable"):
        if len(r) == 0:
            break
        cand = np.where(used, -1.0, m[i])
        j = int(cand.argmax())
        if cand[j] >= iou:
            used[j] = True
            matched += 1
    return Agreement(matched, len(r), len(t))

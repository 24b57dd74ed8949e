"""INT8 score calibration: the score offset that re-aligns INT8 scores with high precision.

Quantization tends to pull scores down a little everywhere; shifting them back restores recall at
the operating threshold. The offset is fitted on the selection frames and reported on the held-out ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpa_perception.build.evaluate import Evaluator
from dpa_perception.build.metrics import Agreement

Log = Callable[[str], None]


def best_score_offset(ev: Evaluator, out: np.ndarray, step: float = 0.01, limit: float = 0.1) -> tuple[float, Agreement]:
    """The score offset (0..limit) that best aligns this variant's detections with the reference, and
    the agreement at the operating threshold with it.

    Best: the highest F1 at the operating threshold (what the node runs at); among offsets that tie
    there, the lowest 1 - F1 averaged over thresholds around it (the plan search's error: an offset that
    only moves a few borderline detections should not win on them); then the smallest offset.
    """
    best: tuple[float, float, float] | None = None
    chosen = (0.0, ev.agreement(out))
    for offset in np.arange(0.0, limit + 1e-9, step):
        off = round(float(offset), 3)
        a = ev.agreement(out, score_offset=off)
        key = (-round(a.f1, 9), round(ev.plan_error(out, off), 9), off)
        if best is None or key < best:
            best, chosen = key, (off, a)
    return chosen


@dataclass(frozen=True)
class ScoreOffset:
    """The fitted offset and the held-out agreement of INT8 with high precision without and with it."""

    offset: float
    uncalibrated: Agreement
    final: Agreement


def fit_score_offset(int8_path: Path, ev_select: Evaluator, ev_held: Evaluator, log: Log) -> ScoreOffset:
    """Fit the offset on ``ev_select``'s frames, measure the result on ``ev_held``'s."""
    offset, _ = best_score_offset(ev_select, ev_select.run(int8_path))
    uncalibrated = ev_held.agreement(ev_held.run(int8_path))
    final = ev_held.agreement(ev_held.run(int8_path), score_offset=offset)
    log(f"dpa-build: INT8 score offset {offset:+.2f} (held-out F1 {uncalibrated.f1:.3f} -> {final.f1:.3f})")
    return ScoreOffset(offset, uncalibrated, final)

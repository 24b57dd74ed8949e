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
    """The score offset (0..limit) that best aligns this variant's detections with the reference.

    Ties go to the smallest offset.
    """
    best = (0.0, ev.agreement(out))
    for offset in np.arange(step, limit + 1e-9, step):
        a = ev.agreement(out, score_offset=float(offset))
        if a.f1 > best[1].f1 + 1e-9:
            best = (round(float(offset), 3), a)
    return best


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

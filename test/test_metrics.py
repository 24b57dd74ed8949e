"""Detection agreement: IoU, one-to-one matching, class awareness and score filtering."""

from __future__ import annotations

import numpy as np
import pytest

from dpa_perception.build.metrics import Agreement, agreement, iou_matrix
from dpa_perception.core.types import Detections


def dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    """Detections from (x1, y1, x2, y2, score, class) rows."""
    if not rows:
        return Detections.empty()
    a = np.array(rows, np.float64)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64))


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [50 / 150, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m[1], [100 / 400, 100 / 400, 0.0], rtol=1e-6)
    assert iou_matrix(a, np.zeros((0, 4), np.float32)).shape == (2, 0)


def test_identical_sets_agree_fully() -> None:
    d = dets([(0, 0, 10, 10, 0.9, 1), (20, 20, 40, 40, 0.5, 2)])
    a = agreement(d, d)
    assert (a.matched, a.n_ref, a.n_test) == (2, 2, 2)
    assert a.recall == a.precision == a.f1 == 1.0


def test_class_aware_vs_agnostic() -> None:
    ref = dets([(0, 0, 10, 10, 0.9, 2)])  # a car
    test = dets([(0, 0, 10, 10, 0.9, 7)])  # the same box called a truck
    aware = agreement(ref, test, class_aware=True)
    agnostic = agreement(ref, test, class_aware=False)
    assert aware.matched == 0 and aware.recall == 0.0 and aware.precision == 0.0 and aware.f1 == 0.0
    assert agnostic.matched == 1 and agnostic.recall == 1.0


def test_iou_threshold() -> None:
    ref = dets([(0, 0, 10, 10, 0.9, 0)])
    test = dets([(0, 0, 10, 6, 0.9, 0)])  # IoU 0.6
    assert agreement(ref, test, iou=0.5).matched == 1
    assert agreement(ref, test, iou=0.7).matched == 0


def test_score_filtering() -> None:
    ref = dets([(0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.2, 0)])
    test = dets([(0, 0, 10, 10, 0.8, 0), (50, 50, 60, 60, 0.35, 0), (80, 80, 90, 90, 0.25, 0)])
    a = agreement(ref, test, min_score=0.3)
    # ref keeps 1 box; test keeps 2 (0.8 and 0.35); the 0.35 one has no reference above 0.3
    assert (a.matched, a.n_ref, a.n_test) == (1, 1, 2)
    assert a.recall == 1.0 and a.precision == pytest.approx(0.5)
    b = agreement(ref, test, min_score=0.1)
    assert (b.matched, b.n_ref, b.n_test) == (2, 2, 3)


def test_matching_is_one_to_one_best_score_first() -> None:
    ref = dets([(0, 0, 10, 10, 0.9, 0)])
    test = dets([(0, 0, 10, 9, 0.6, 0), (0, 0, 10, 10, 0.7, 0)])  # two claims on one reference
    a = agreement(ref, test)
    assert (a.matched, a.n_ref, a.n_test) == (1, 1, 2)
    assert a.precision == 0.5
    assert a.f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_each_test_box_takes_its_best_free_reference() -> None:
    ref = dets([(0, 0, 10, 10, 0.9, 0), (2, 0, 12, 10, 0.9, 0)])
    # the first (best) test box is closest to the second reference (IoU 0.90 vs 0.74); the second
    # test box is identical to that one too, so it must fall back to the first reference (IoU 0.67)
    test = dets([(1.5, 0, 11.5, 10, 0.9, 0), (2, 0, 12, 10, 0.8, 0)])
    a = agreement(ref, test)
    assert a.matched == 2
    assert agreement(ref, test, iou=0.7).matched == 1  # the fallback match is below 0.7


def test_empty_sets() -> None:
    empty = Detections.empty()
    some = dets([(0, 0, 10, 10, 0.9, 0)])
    a = agreement(empty, empty)
    assert (a.matched, a.n_ref, a.n_test) == (0, 0, 0) and a.recall == 1.0 and a.precision == 1.0
    b = agreement(some, empty)
    assert b.recall == 0.0 and b.precision == 1.0
    c = agreement(empty, some)
    assert c.recall == 1.0 and c.precision == 0.0


def test_agreement_accumulates() -> None:
    total = Agreement()
    total += Agreement(3, 4, 5)
    total += Agreement(1, 2, 1)
    assert (total.matched, total.n_ref, total.n_test) == (4, 6, 6)
    d = total.as_dict()
    assert d["recall"] == pytest.approx(4 / 6, abs=1e-4) and d["precision"] == pytest.approx(4 / 6, abs=1e-4)
    assert d["n_ref"] == 6 and d["n_test"] == 6


def test_detections_to_dicts() -> None:
    d = dets([(1.04, 2.06, 30.0, 40.0, 0.87654, 1), (0, 0, 1, 1, 0.5, 99)])
    out = d.to_dicts(["person", "bicycle"])
    assert out[0] == {"class_id": 1, "class_name": "bicycle", "score": 0.8765, "box_xyxy": [1.0, 2.1, 30.0, 40.0]}
    assert out[1]["class_name"] == "99"
    assert len(d.filter(d.scores > 0.6)) == 1

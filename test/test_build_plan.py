"""The mixed-precision plan (build/plan.py), the INT8 score offset (build/score_offset.py) and the
atomic publish of the engine folder (build/engine_dir.py ``staging``), on hand-made inputs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dpa_perception.build import sensitivity as sens
from dpa_perception.build.engine_dir import staging
from dpa_perception.build.metrics import Agreement
from dpa_perception.build.plan import Candidate, Layers, PlanSearch
from dpa_perception.build.score_offset import best_score_offset


def _layers() -> Layers:
    """Three units at graph positions 0, 2 and 4 (an unquantizable node at 3), sensitivities 0.1, 0.5, 0.2."""
    units = [sens.Unit("c0", 0, ["c0", "s0"], False, 0.1), sens.Unit("c1", 2, ["c1"], False, 0.5),
             sens.Unit("c2", 4, ["c2"], False, 0.2)]  # fmt: skip
    position = {"c0": 0, "s0": 1, "c1": 2, "reshape": 3, "c2": 4}
    return Layers(units, sens.rank(units), ("c0", "s0", "c1", "c2"), position)


def _search(layers: Layers, max_error: float = 0.05) -> PlanSearch:
    stub: Any = None  # choose / mark_kept / kept_nodes need neither a quantizer nor an evaluator
    return PlanSearch(layers, stub, stub, Path("."), max_error, 0.5, progress=False)


def test_kept_nodes_by_strategy() -> None:
    layers = _layers()
    assert [u.name for u in layers.ranked] == ["c1", "c2", "c0"]
    assert layers.kept_nodes("sensitivity", 0) == set()
    assert layers.kept_nodes("sensitivity", 1) == {"c1"}
    assert layers.kept_nodes("sensitivity", 3) == {"c0", "s0", "c1", "c2"}
    # prefix: every quantizable node before the k-th unit
    assert layers.kept_nodes("prefix", 0) == set()
    assert layers.kept_nodes("prefix", 1) == {"c0", "s0"}
    assert layers.kept_nodes("prefix", 2) == {"c0", "s0", "c1"}
    assert layers.kept_nodes("prefix", 3) == {"c0", "s0", "c1", "c2"}
    # conv_only: the most sensitive units, and every quantizable node outside a unit (joins) always
    joined = Layers(layers.units, layers.ranked, (*layers.all_nodes, "add"), {**layers.position, "add": 5})
    assert joined.kept_nodes("conv_only", 0) == {"add"}
    assert joined.kept_nodes("conv_only", 1) == {"add", "c1"}
    assert joined.kept_nodes("sensitivity", 1) == {"c1"}


def test_choose_fastest_that_meets_the_error() -> None:
    search = _search(_layers())
    p = Path("x.onnx")
    both = {"sensitivity": Candidate("sensitivity", 1, {1: 0.04}, p), "prefix": Candidate("prefix", 2, {2: 0.03}, p)}
    assert search.choose(both, {"sensitivity": 12.0, "prefix": 10.0}).strategy == "prefix"
    assert search.choose(both, {"sensitivity": 9.0, "prefix": 10.0}).strategy == "sensitivity"
    # equal speed: the lower error
    assert search.choose(both, {"sensitivity": 10.0, "prefix": 10.0}).strategy == "prefix"
    # a faster plan that misses the error loses to a slower one that meets it
    one_ok = {"sensitivity": Candidate("sensitivity", 1, {1: 0.04}, p), "prefix": Candidate("prefix", 3, {3: 0.2}, p)}
    assert search.choose(one_ok, {"sensitivity": 12.0, "prefix": 10.0}).strategy == "sensitivity"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search.choose(one_ok, {"sensitivity": 12.0, "prefix": 10.0})  # no warning when the chosen one meets it


def test_choose_warns_when_no_plan_meets_the_error() -> None:
    search = _search(_layers(), max_error=0.01)
    p = Path("x.onnx")
    none_ok = {"sensitivity": Candidate("sensitivity", 1, {1: 0.04}, p), "prefix": Candidate("prefix", 3, {3: 0.2}, p)}
    # none meets it: the most accurate one, even though the other is faster (speed never buys error)
    with pytest.warns(UserWarning, match="still above --max-error 0.01 with 1 units kept"):
        assert search.choose(none_ok, {"sensitivity": 12.0, "prefix": 10.0}).strategy == "sensitivity"


def test_mark_kept_and_reasons() -> None:
    layers = _layers()
    search = _search(layers)
    chosen = Candidate("prefix", 2, {2: 0.0}, Path("x.onnx"))
    search.mark_kept(chosen, layers.kept_nodes("prefix", 2))
    assert [u.kept for u in layers.units] == [True, True, False]
    # c1 is also the most sensitive unit; c0 is kept only because it comes before it
    assert [u.reasons for u in layers.units] == [["contiguous prefix"], ["sensitivity"], []]


class _FakeEvaluator:
    """F1 at the operating threshold peaks at a score offset of 0.03; the error averaged over thresholds
    is flat (ties at the operating threshold are what it breaks)."""

    def plan_error(self, out: np.ndarray, score_offset: float = 0.0) -> float:
        return 0.1

    def agreement(self, out: np.ndarray, min_score: float | None = None, score_offset: float = 0.0) -> Agreement:
        matched = 90 - round(abs(score_offset - 0.03) * 1000)
        return Agreement(matched=matched, n_ref=100, n_test=100)


def test_best_score_offset_finds_the_peak_at_the_operating_threshold() -> None:
    offset, best = best_score_offset(_FakeEvaluator(), np.zeros(1))  # type: ignore[arg-type]
    assert offset == 0.03
    assert best.matched == 90


def test_a_tie_at_the_operating_threshold_goes_to_the_lower_error_over_thresholds() -> None:
    class Flat(_FakeEvaluator):
        def agreement(self, out: np.ndarray, min_score: float | None = None, score_offset: float = 0.0) -> Agreement:
            return Agreement(matched=95 if score_offset <= 0.02 else 90, n_ref=100, n_test=100)

        def plan_error(self, out: np.ndarray, score_offset: float = 0.0) -> float:
            return 0.1 + abs(score_offset - 0.01)

    assert best_score_offset(Flat(), np.zeros(1))[0] == 0.01  # type: ignore[arg-type]


def test_best_score_offset_ties_keep_zero() -> None:
    class Flat(_FakeEvaluator):
        def agreement(self, out: np.ndarray, min_score: float | None = None, score_offset: float = 0.0) -> Agreement:
            return Agreement(matched=5, n_ref=10, n_test=10)

    offset, _ = best_score_offset(Flat(), np.zeros(1))  # type: ignore[arg-type]
    assert offset == 0.0


def test_staging_publishes_or_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "eng"
    with staging(out) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".eng.")
        (folder / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new" and not folder.exists()
    with pytest.raises(KeyboardInterrupt), staging(out) as folder:
        (folder / "a.txt").write_text("newer")
        raise KeyboardInterrupt
    assert (out / "a.txt").read_text() == "new"  # the old folder stays
    assert [p.name for p in tmp_path.iterdir()] == ["eng"]
    with staging(out) as folder:
        (folder / "b.txt").write_text("replaced")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]

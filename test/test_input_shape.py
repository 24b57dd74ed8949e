"""input_shape auto: rect only where the engine build measured it agreeing with square and not slower."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpa_perception.core import node_params as P
from dpa_perception.core.input_shape import resolve_input_shape
from dpa_perception.runtime import assemble, runtime_config

GOOD = {"agreement_vs_square": {"recall": 0.99, "precision": 0.98, "f1": 0.985}, "speedup": 1.6}


@pytest.mark.parametrize(("choice", "dynamic", "rect", "expected", "why"), [
    ("square", True, GOOD, "square", "set by input_shape"),
    ("rect", True, None, "rect", "set by input_shape"),
    ("auto", True, GOOD, "rect", "F1 0.985 and runs 1.60x"),
    ("auto", False, GOOD, "square", "input size is fixed"),
    ("auto", True, None, "square", "no rect measurement"),
    ("auto", True, {**GOOD, "agreement_vs_square": {"f1": 0.9}}, "square", "F1 0.900, below rect_min_agreement 0.95"),
    ("auto", True, {**GOOD, "speedup": 0.97}, "square", "not faster (0.97x)"),
])  # fmt: skip
def test_auto_resolves_from_the_build_measurement(choice: str, dynamic: bool, rect: dict | None, expected: str,
                                                  why: str) -> None:
    shape, reason = resolve_input_shape(choice, dynamic, rect, 0.95)
    assert shape == expected and why in reason and "\n" not in reason


def test_the_parameter_accepts_auto_and_its_threshold() -> None:
    assert "auto" in P.SPECS["input_shape"].choices
    cfg = runtime_config({"engine_dir": "x", "input_shape": "auto", "rect_min_agreement": 0.9})
    assert cfg.pipeline.input_shape == "auto" and cfg.rect_min_agreement == 0.9  # resolved when the engine loads


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_the_runtime_runs_what_auto_resolved_to_and_reports_why(yolox_engine_dir: Path, threshold: float) -> None:
    """The YOLOX-Nano test engine (rect measured at build): the threshold decides, /diagnostics says why."""
    from dpa_perception.core.manifest import Manifest

    rect = Manifest.load(yolox_engine_dir).sections["rect"]
    expected, why = resolve_input_shape("auto", True, rect, threshold)
    rt = assemble({"engine_dir": str(yolox_engine_dir), "input_shape": "auto", "rect_min_agreement": threshold},
                  clock_ns=lambda: 0, warmup_runs=0)  # fmt: skip
    try:
        assert rt.pipeline.config.input_shape == expected == rt.config.pipeline.input_shape
        (engine,) = [s for s in rt.status(0, active=True) if s.name.endswith(": engine")]
        assert engine.value("input_shape") == expected and engine.value("input_shape_reason") == why
    finally:
        rt.close()
    if threshold == 1.0:
        assert expected == "square"  # no measured agreement is above 1.0

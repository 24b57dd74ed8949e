"""The shape ladder: reduced input scales dpa-build measured (speed, agreement with the full-size square
canvas) that auto may step down to under latency pressure, most accurate first, never for nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from engine_cache import TESTDATA
from fakes import FakeClock, LadderEngine, frame, make_pipeline
from test_governor import warm_model

from dpa_perception.build.metrics import agreement
from dpa_perception.core.errors import ModelError
from dpa_perception.core.governor import GovernorConfig, PrecisionGovernor
from dpa_perception.core.input_shape import Rung, ladder_rungs
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.model_spec import LADDER_SCALES, ModelSpec, at_scale, scaled_input_hw
from dpa_perception.core.preprocess import canvas_hw
from dpa_perception.inference.engine import DualModeEngine

RUNGS = (Rung(0.8, 1.5, 0.95), Rung(0.64, 2.2, 0.88))
SPEC = ModelSpec("yolox", "images", "output", (416, 416), 80, 3549)


# ---------------------------------------------------------------------------- the sizes


@pytest.mark.parametrize(("scale", "hw"), [(1.0, (416, 416)), (0.8, (320, 320)), (0.64, (256, 256)), (0.01, (32, 32))])
def test_a_scale_is_the_model_size_times_it_on_the_stride_grid(scale: float, hw: tuple[int, int]) -> None:
    assert scaled_input_hw(SPEC, scale) == hw
    spec = at_scale(SPEC, scale)
    assert spec.input_hw == hw and spec.num_anchors == sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32))
    spec.validate()


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.2, float("nan")])
def test_a_scale_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ModelError, match="input scale"):
        scaled_input_hw(SPEC, bad)


def test_rungs_are_read_from_the_manifest_keeping_only_measured_faster_ones() -> None:
    def entry(scale: object, speedup: object, f1: object) -> dict:
        return {"scale": scale, "speedup": speedup, "agreement_vs_square": {"f1": f1}}

    rect = {"ladder": {"rect": [entry(0.64, 2.0, 0.8), entry(0.8, 1.4, 0.93), entry(0.7, 0.95, 0.99),
                                entry("0.5", 3.0, 0.7), entry(True, 3.0, 0.7), entry(0.5, 3.0, None)],
                       "square": [entry(0.8, 1.5, 0.9)]}}  # fmt: skip
    assert ladder_rungs(rect, "rect") == (Rung(0.8, 1.4, 0.93), Rung(0.64, 2.0, 0.8))
    assert ladder_rungs(rect, "square") == (Rung(0.8, 1.5, 0.9),)
    assert ladder_rungs({"speedup": 1.5}, "rect") == () == ladder_rungs(None, "square")  # built before the ladder


# ---------------------------------------------------------------------------- the governor


def ladder_governor(**cfg: object) -> PrecisionGovernor:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=0, **cfg))  # type: ignore[arg-type]
    gov.int8_pays = False  # the case the ladder is for: INT8 is no faster on this CPU
    gov.rungs = RUNGS
    return gov


def test_under_pressure_auto_steps_down_to_the_most_accurate_rung_that_fits() -> None:
    gov = ladder_governor(scale_min_agreement=0.85)
    warm_model(gov.model, {"high": 90.0, "int8": 90.0})  # 90 ms does not fit 85 - 10; 90 / 1.5 = 60 does
    d = gov.decide("cam", 0.0, 0.0, 1)
    assert (d.mode, d.reason, d.scale) == ("high", "budget_scale", 0.8)
    assert d.predicted_ms == pytest.approx(60.0)  # the build's ratio until the rung has run here
    d = gov.decide("cam", 0.0, 20.0, 1)  # 20 ms old: 0.8 no longer fits (20 + 60 + 2 > 75); 0.64 (41 ms) does
    assert (d.mode, d.reason, d.scale) == ("high", "budget_scale", 0.64)


def test_the_learned_latency_of_a_rung_replaces_the_build_ratio() -> None:
    gov = ladder_governor(scale_min_agreement=0.85)
    warm_model(gov.model, {"high": 90.0})
    for _ in range(3):
        gov.observe("high", 1, 80.0, 1.0, scale=0.8)  # slower here than the build measured: does not fit
    d = gov.decide("cam", 0.0, 0.0, 1)
    assert (d.scale, d.predicted_ms) == (0.64, pytest.approx(90.0 / 2.2))


@pytest.mark.parametrize(("cfg", "expected"), [
    ({"scale_ladder": False}, (None, "budget_shed", 1.0)),  # the ladder off
    ({"scale_min_agreement": 0.96}, (None, "budget_shed", 1.0)),  # no rung agrees well enough
    ({"scale_min_agreement": 0.96, "budget_fallback": "high"}, ("high", "budget_high", 1.0)),
    ({"scale_min_agreement": 0.9}, ("high", "budget_scale", 0.8)),
])  # fmt: skip
def test_the_ladder_obeys_its_parameters(cfg: dict, expected: tuple) -> None:
    gov = ladder_governor(**cfg)
    warm_model(gov.model, {"high": 90.0})
    d = gov.decide("cam", 0.0, 0.0, 1)
    assert (d.mode, d.reason, d.scale) == expected


def test_no_rung_when_full_size_fits_nor_when_a_mode_is_forced() -> None:
    gov = ladder_governor()
    warm_model(gov.model, {"high": 40.0, "int8": 20.0})
    assert (gov.decide("cam", 0.0, 0.0, 1).scale, gov.decide("cam", 0.0, 0.0, 1).reason) == (1.0, "int8_does_not_pay")
    warm_model(gov.model, {"high": 200.0, "int8": 200.0})
    gov.config = GovernorConfig(precision_mode="high")
    assert gov.decide("cam", 0.0, 0.0, 1).scale == 1.0 and gov.fastest_lane() == ("high", 1.0)


def test_int8_budget_fallback_comes_before_the_ladder_when_int8_pays() -> None:
    gov = ladder_governor()
    gov.int8_pays = True
    warm_model(gov.model, {"high": 90.0, "int8": 50.0})
    d = gov.decide("cam", 0.9, 0.0, 1)  # poor visibility wants high; it does not fit; INT8 does
    assert (d.mode, d.reason, d.scale) == ("int8", "budget", 1.0)
    warm_model(gov.model, {"high": 90.0, "int8": 85.0})  # INT8 does not fit: high at 0.8 first, then INT8 at 0.8
    assert (gov.decide("cam", 0.9, 0.0, 1).mode, gov.decide("cam", 0.9, 0.0, 1).scale) == ("high", 0.8)
    assert gov.fastest_lane() == ("int8", 0.8)  # 0.64 agrees at F1 0.88, below scale_min_agreement 0.9


def test_the_pipeline_runs_and_reports_rung_frames_and_learns_their_cost() -> None:
    clock = FakeClock()
    engine = LadderEngine(clock, {"int8": (0.0, 100.0), "high": (0.0, 100.0)}, RUNGS)
    engine.int8_pays = False  # type: ignore[attr-defined]
    p = make_pipeline(clock, engine)
    assert p.governor.rungs == RUNGS
    warm_model(p.governor.model, {"high": 100.0, "int8": 100.0})
    out = []
    for _ in range(6):
        p.submit("cam", frame(0.0), clock.t)
        out += p.step()
    assert all((r.status, r.mode, r.reason, r.scale) == ("processed", "high", "budget_scale", 0.8) for r in out)
    assert {lane for lane in engine.lanes} == {("high", 1, 0.8)}
    assert p.governor.model.samples("high", 0.8) == 6
    assert all(r.timing_ms["e2e"] <= 85.0 for r in out)


# ---------------------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def engine(yolox_engine_dir: Path) -> Iterator[DualModeEngine]:
    eng = DualModeEngine(yolox_engine_dir)
    yield eng
    eng.close()


def test_the_build_measured_each_rung_of_both_policies(yolox_engine_dir: Path) -> None:
    ladder = Manifest.load(yolox_engine_dir).sections["rect"]["ladder"]
    for policy in ("square", "rect"):
        assert [e["scale"] for e in ladder[policy]] == list(LADDER_SCALES)
        for e in ladder[policy]:
            assert e["ms"] > 0 and e["speedup"] > 0 and all(v % 32 == 0 for v in e["input_hw"])
            assert 0.0 <= e["agreement_vs_square"]["f1"] <= 1.0 and e["agreement_vs_square"]["n_ref"] > 0


def test_a_rung_detects_the_same_objects_in_the_frame_own_pixels(engine: DualModeEngine) -> None:
    img = cv2.imread(str(TESTDATA / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    full = engine.infer([img], "high", "rect")
    small = engine.infer([img], "high", "rect", scale=0.8)
    assert small.input_hw == canvas_hw([img.shape[:2]], at_scale(engine.spec, 0.8), "rect")
    assert np.prod(small.input_hw) < np.prod(full.input_hw)
    a = agreement(full.detections[0], small.detections[0], iou=0.5)
    assert a.n_ref >= 3 and a.f1 >= 0.6, a.as_dict()  # boxes mapped back to the frame, not the small canvas
    assert {r.scale for r in engine.ladder_rungs("rect")} <= set(LADDER_SCALES)

"""PrecisionGovernor, LatencyModel and GovernorConfig (the pipeline's scheduling: test_pipeline_scheduling.py).

Deterministic: the governor is fed degradation values directly; no test sleeps.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import pytest
from fakes import CostEngine, FakeClock, frame, make_pipeline

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.governor import GovernorConfig, LatencyModel, PrecisionGovernor
from dpa_perception.core.pipeline import FrameResult


def warm_model(model: LatencyModel, ms: dict[str, float], batch: int = 1) -> None:
    for mode, v in ms.items():
        for _ in range(model.min_samples):
            model.observe(mode, batch, v)  # type: ignore[arg-type]


def run(gov: PrecisionGovernor, degradations: Sequence[float], camera: str = "cam") -> list[str]:
    return [gov.decide(camera, d, 0.0, 1).mode for d in degradations]


def switches(modes: Sequence[str]) -> int:
    return sum(1 for a, b in itertools.pairwise(modes) if a != b)


# ---------------------------------------------------------------------------- hysteresis


@pytest.mark.parametrize("low, high", [(0.3, 0.6), (0.0, 1.0), (0.34, 0.51)])
def test_flicker_across_thresholds_switches_at_most_once_per_dwell(low: float, high: float) -> None:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=10))
    warm_model(gov.model, {"int8": 5.0, "high": 10.0})
    modes = run(gov, [high if i % 2 == 0 else low for i in range(100)])
    n = switches(modes)
    assert 1 <= n <= 100 // 10, (n, modes)
    # every run of one mode (but the last) lasts at least the dwell
    runs, start = [], 0
    for i in range(1, len(modes) + 1):
        if i == len(modes) or modes[i] != modes[start]:
            runs.append(i - start)
            start = i
    assert min(runs[:-1]) >= 10, runs


@pytest.mark.parametrize("start_poor", [False, True])
def test_flicker_between_leave_and_enter_never_switches(start_poor: bool) -> None:
    cfg = GovernorConfig(min_dwell_frames=0)
    gov = PrecisionGovernor(cfg)
    warm_model(gov.model, {"int8": 5.0, "high": 10.0})
    first = run(gov, [0.9 if start_poor else 0.0])[0]
    assert first == ("high" if start_poor else "int8")
    modes = run(gov, [0.36 if i % 2 else 0.49 for i in range(100)])
    assert switches([first, *modes]) == 0, modes


def test_sustained_rise_goes_high_and_fall_returns_after_the_dwell() -> None:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=10))
    warm_model(gov.model, {"int8": 5.0, "high": 10.0})
    assert run(gov, [0.1] * 20) == ["int8"] * 20
    d = gov.decide("cam", 0.8, 0.0, 1)
    assert (d.mode, d.reason) == ("high", "visibility")
    assert run(gov, [0.8] * 29) == ["high"] * 29
    assert run(gov, [0.45] * 5) == ["high"] * 5, "between the thresholds the mode is held"
    d = gov.decide("cam", 0.2, 0.0, 1)
    assert (d.mode, d.reason) == ("int8", "clear")


def test_short_spike_is_held_for_exactly_the_dwell() -> None:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=10))
    warm_model(gov.model, {"int8": 5.0, "high": 10.0})
    modes = run(gov, [0.1] * 5 + [0.9] * 2 + [0.1] * 20)
    assert modes[:5] == ["int8"] * 5
    # high from the spike's first frame for 10 frames (the dwell), then back to int8 at once
    assert modes[5:15] == ["high"] * 10 and modes[15:] == ["int8"] * 12, modes


def test_hysteresis_is_per_camera() -> None:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=10))
    warm_model(gov.model, {"int8": 5.0, "high": 10.0})
    assert gov.decide("foggy", 0.9, 0.0, 1).mode == "high"
    assert gov.decide("clear", 0.1, 0.0, 1).mode == "int8"
    assert gov.decide("foggy", 0.1, 0.0, 1).mode == "high"  # held by its own dwell
    assert gov.decide("clear", 0.45, 0.0, 1).mode == "int8"


def test_warming_up_runs_high_until_the_model_has_samples() -> None:
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=0))
    d = gov.decide("cam", 0.9, 0.0, 1)
    assert (d.mode, d.reason, d.predicted_ms) == ("high", "warming_up", None)
    warm_model(gov.model, {"high": 10.0})
    d = gov.decide("cam", 0.9, 0.0, 1)
    assert (d.mode, d.reason) == ("high", "visibility")
    assert d.predicted_ms == pytest.approx(10.0)


# ---------------------------------------------------------------------------- budget


def test_slow_high_variant_falls_back_to_int8_for_the_budget() -> None:
    gov = PrecisionGovernor(GovernorConfig(latency_budget_ms=85.0, safety_margin_ms=10.0, min_dwell_frames=0))
    warm_model(gov.model, {"high": 120.0, "int8": 30.0})
    d = gov.decide("cam", 0.95, 0.0, 1)
    assert (d.mode, d.reason) == ("int8", "budget")
    assert d.predicted_ms == pytest.approx(30.0)
    # a fast-enough high variant is used for the same visibility
    gov2 = PrecisionGovernor(GovernorConfig(min_dwell_frames=0))
    warm_model(gov2.model, {"high": 40.0, "int8": 30.0})
    assert gov2.decide("cam", 0.95, 0.0, 1).mode == "high"


@pytest.mark.parametrize("policy, expected", [("shed", (None, "budget_shed")), ("high", ("high", "budget_high"))])
def test_budget_never_falls_back_to_an_int8_that_is_not_faster(policy: str, expected: tuple) -> None:
    """INT8 that does not pay (slower than high on this target) is never used "for the budget"."""
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=0, budget_fallback=policy))
    warm_model(gov.model, {"high": 80.0, "int8": 90.0})
    d = gov.decide("cam", 0.95, 0.0, 1)
    assert (d.mode, d.reason) == expected
    # nor an INT8 that would not fit either
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=0, budget_fallback=policy))
    warm_model(gov.model, {"high": 200.0, "int8": 100.0})
    assert (gov.decide("cam", 0.95, 0.0, 1).mode, gov.decide("cam", 0.95, 0.0, 1).reason) == expected


@pytest.mark.parametrize("policy", ["shed", "high"])
def test_auto_is_high_everywhere_when_the_build_says_int8_does_not_pay(policy: str) -> None:
    """The engine's verdict (manifest) says INT8 does not pay: auto runs high in every condition and
    never falls back to INT8 for the budget, even where INT8 is predicted faster right now."""
    gov = PrecisionGovernor(GovernorConfig(min_dwell_frames=0, budget_fallback=policy))
    gov.int8_pays = False
    warm_model(gov.model, {"high": 20.0, "int8": 10.0})
    for deg in (0.0, 0.2, 0.95, 0.1):
        d = gov.decide("cam", deg, 0.0, 1)
        assert (d.mode, d.reason) == ("high", "int8_does_not_pay")
    warm_model(gov.model, {"high": 200.0, "int8": 10.0})  # under load: high does not fit
    d = gov.decide("cam", 0.0, 0.0, 1)
    assert d.mode != "int8" and d.reason == {"shed": "budget_shed", "high": "budget_high"}[policy]
    assert gov.fastest_mode() == "high"
    gov.config = GovernorConfig(precision_mode="int8")  # forcing INT8 still obeys the setting
    assert gov.decide("cam", 0.0, 0.0, 1).mode == "int8" and gov.fastest_mode() == "int8"


def test_pipeline_takes_the_verdict_from_the_engine_and_runs_no_int8_under_load() -> None:
    clock = FakeClock()
    engine = CostEngine(clock, {"int8": (0.0, 5.0), "high": (0.0, 30.0)})
    engine.int8_pays = False  # type: ignore[attr-defined]
    p = make_pipeline(clock, engine, min_dwell_frames=0, latency_budget_ms=85.0, max_batch=4)
    warm_model(p.governor.model, {"high": 30.0, "int8": 5.0})
    out: list[FrameResult] = []
    for i in range(40):  # four cameras, 40 rounds: more work than high precision can do in the budget
        for c in range(4):
            p.submit(f"cam{c}", frame(0.9 if i % 2 else 0.0), clock.t)
        out += p.step()
    assert engine.calls and {m for m, _ in engine.calls} == {"high"}
    assert {r.reason for r in out if r.status == "processed"} <= {"int8_does_not_pay"}
    assert not any(r.mode == "int8" for r in out)


def test_budget_shed_frames_are_dropped_and_counted_by_the_pipeline() -> None:
    clock = FakeClock()
    engine = CostEngine(clock, {"int8": (0.0, 90.0), "high": (0.0, 80.0)})
    p = make_pipeline(clock, engine, min_dwell_frames=0)
    warm_model(p.governor.model, {"high": 80.0, "int8": 90.0})
    p.submit("cam", frame(0.95), clock.t)
    (r,) = p.step()
    assert (r.status, r.reason) == ("dropped", "budget_shed") and engine.calls == []
    cam = p.stats().cameras["cam"]
    assert cam.dropped == 1 and cam.deadline_misses == 1 and cam.received == 1


def test_frame_age_counts_against_the_budget() -> None:
    gov = PrecisionGovernor(GovernorConfig(latency_budget_ms=85.0, safety_margin_ms=10.0, min_dwell_frames=0))
    warm_model(gov.model, {"high": 40.0, "int8": 10.0})
    assert gov.decide("cam", 0.9, 10.0, 1).mode == "high"  # 10 + 40 + post 2 <= 75
    d = gov.decide("cam", 0.9, 40.0, 1)  # 40 + 40 + 2 > 75
    assert (d.mode, d.reason) == ("int8", "budget")


def test_budget_fallback_recovers_when_high_gets_fast_again() -> None:
    """A slow spell of the high variant (e.g. a busy machine) must not lock auto out of high for good."""
    clock = FakeClock()
    engine = CostEngine(clock, {"int8": (0.0, 20.0), "high": (0.0, 120.0)})
    p = make_pipeline(clock, engine, min_dwell_frames=0)
    out: list[FrameResult] = []
    for i in range(300):
        if i == 10:
            engine.cost["high"] = (0.0, 25.0)  # the machine is quiet again
        clock.advance_ms(100)
        p.submit("cam", frame(0.9), clock())
        out += p.step()
    assert any(r.reason == "budget" for r in out[:10])
    tail = [(r.mode, r.reason) for r in out[-50:]]
    assert tail == [("high", "visibility")] * 50, Counter(tail)


# ---------------------------------------------------------------------------- forced modes


@pytest.mark.parametrize("forced", ["int8", "high"])
def test_forced_mode_is_obeyed_whatever_the_visibility(forced: str) -> None:
    gov = PrecisionGovernor(GovernorConfig(precision_mode=forced, min_dwell_frames=0))
    warm_model(gov.model, {"high": 120.0, "int8": 30.0})  # even a high variant over budget
    for deg in (0.0, 0.2, 0.49, 0.5, 0.9, 1.0, 0.0):
        d = gov.decide("cam", deg, 0.0, 1)
        assert (d.mode, d.reason) == (forced, "forced"), deg


# ---------------------------------------------------------------------------- latency model


def test_latency_model_fits_fixed_plus_per_frame() -> None:
    m = LatencyModel(min_samples=3)
    for b in (1, 2, 4, 8, 1, 4):
        m.observe("int8", b, 5.0 + 3.0 * b)
    assert m.predict("int8", 1) == pytest.approx(8.0, abs=1e-6)
    assert m.predict("int8", 6) == pytest.approx(23.0, abs=1e-6)
    assert m.predict("high", 1) is None  # modes are separate


def test_latency_model_needs_min_samples() -> None:
    m = LatencyModel(min_samples=4)
    for i in range(3):
        m.observe("high", 1 + i, 10.0 * (1 + i))
        assert m.predict("high", 1) is None
    assert m.samples("high") == 3
    m.observe("high", 4, 40.0)
    assert m.predict("high", 2) == pytest.approx(20.0, abs=1e-6)


def test_latency_model_one_batch_size_is_proportional_and_adds_spread() -> None:
    m = LatencyModel(min_samples=3)
    for v in (10.0, 10.0, 10.0):
        m.observe("int8", 2, v)
    assert m.predict("int8", 4) == pytest.approx(20.0)
    noisy = LatencyModel(min_samples=3)
    for v in (8.0, 10.0, 12.0, 10.0):
        noisy.observe("int8", 1, v)
    assert noisy.predict("int8", 1) > 10.0  # plans above the mean


def test_latency_model_forgets_beyond_its_window() -> None:
    m = LatencyModel(window=4, min_samples=3)
    for _ in range(4):
        m.observe("high", 1, 100.0)
    for _ in range(4):
        m.observe("high", 1, 20.0)
    assert m.samples("high") == 4
    assert m.predict("high", 1) == pytest.approx(20.0)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize("bad", [
    {"latency_budget_ms": 0.5}, {"latency_budget_ms": 20_000.0}, {"latency_budget_ms": -1.0},
    {"safety_margin_ms": -1.0}, {"latency_budget_ms": 50.0, "safety_margin_ms": 50.0},
    {"enter_high_threshold": 1.5}, {"leave_high_threshold": -0.1},
    {"enter_high_threshold": 0.4, "leave_high_threshold": 0.6},
    {"precision_mode": "fp16"}, {"precision_mode": "AUTO"},
    {"min_dwell_frames": -1}, {"min_dwell_frames": 10_001},
])  # fmt: skip
def test_governor_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        GovernorConfig(**bad).validate()
    with pytest.raises(ConfigError):
        PrecisionGovernor(GovernorConfig(**bad))


def test_governor_config_defaults_and_edges_are_valid() -> None:
    GovernorConfig().validate()
    GovernorConfig(latency_budget_ms=1.0, safety_margin_ms=0.0, enter_high_threshold=0.4,
                   leave_high_threshold=0.4, min_dwell_frames=0, precision_mode="high").validate()



"""The INT8 verdict of dpa-build: interleaved rounds until the confidence interval is clear of the
threshold, "undecided" rather than a flip on a noisy machine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpa_perception.build import timing


def logs(ratios):
    return [math.log(r) for r in ratios]


def test_clear_speedup_pays_after_the_minimum_rounds():
    assert timing.decide(logs([1.40, 1.42, 1.39, 1.41]), 1.05, final=False) is None  # too few rounds
    assert timing.decide(logs([1.40, 1.42, 1.39, 1.41, 1.40]), 1.05, final=False) == timing.PAYS


def test_clear_slowdown_does_not_pay():
    assert timing.decide(logs([0.95, 0.96, 0.94, 0.95, 0.96]), 1.05, final=False) == timing.DOES_NOT_PAY


def test_noisy_rounds_ask_for_more_then_say_undecided():
    noisy = logs([1.30, 0.85, 1.20, 0.90, 1.25])
    assert timing.decide(noisy, 1.05, final=False) is None
    assert timing.decide(noisy, 1.05, final=True) == timing.UNDECIDED


def test_a_speedup_at_the_threshold_is_undecided_not_a_coin_flip():
    rng = np.random.default_rng(0)
    verdicts = {timing.decide(list(np.log(1.05) + rng.normal(0, 0.03, timing.MAX_ROUNDS)), 1.05, final=True)
                for _ in range(20)}
    assert timing.PAYS not in verdicts or timing.DOES_NOT_PAY not in verdicts
    assert timing.UNDECIDED in verdicts


def test_interval_contains_the_geometric_mean():
    mean, low, high = timing.ratio_interval(logs([1.2, 1.3, 1.25]))
    assert low < mean < high
    assert mean == pytest.approx((1.2 * 1.3 * 1.25) ** (1 / 3))


def test_verdict_record_and_sentence():
    v = timing.SpeedVerdict(timing.DOES_NOT_PAY, 0.97, (0.94, 1.0), 4, 1.05, 8.0, 8.25)
    d = v.as_dict()
    assert d["int8_verdict"] == "does_not_pay" and d["speedup_ci"] == [0.94, 1.0] and d["rounds"] == 4
    assert not v.pays and "does NOT pay" in v.describe() and "0.97x" in v.describe()


def test_compare_speed_on_real_files(tmp_path):
    """The same file against itself: the speed-up is about 1, so never "pays" at 1.05."""
    import onnx
    from onnx import TensorProto, helper

    from dpa_perception.backends.onnxruntime_backend import OrtOptions

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    v = timing.compare_speed(path, path, np.zeros((1, 3, 64, 64), np.float32), 5, OrtOptions(), 1.05, max_rounds=5)
    assert v.verdict in (timing.DOES_NOT_PAY, timing.UNDECIDED)
    assert v.rounds == 5 and v.high_ms > 0 and v.int8_ms > 0

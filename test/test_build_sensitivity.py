"""Per-layer sensitivity (build/sensitivity.py): the units, the output tail, ranking, bisection, probing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from dpa_perception.build import sensitivity as sens


@pytest.fixture(scope="module")
def yolox_model(testdata: Path) -> onnx.ModelProto:
    return onnx.load(str(testdata / "models" / "yolox_nano.onnx"))


def test_smallest_sufficient_bisection() -> None:
    calls: list[int] = []

    def error_of(k: int) -> float:
        calls.append(k)
        return 1.0 / (k + 1)  # falls monotonically; <= 0.1 from k = 9 on

    k, seen = sens.smallest_sufficient(100, error_of, 0.1)
    assert k == 9
    assert seen[9] <= 0.1 < seen.get(8, 1.0)
    assert 8 in seen  # bisection had to look just below the answer to know it
    assert len(calls) == len(set(calls))  # each k evaluated once
    assert len(calls) <= math.ceil(math.log2(100)) + 2


def test_smallest_sufficient_edges() -> None:
    k, seen = sens.smallest_sufficient(50, lambda k: 0.01, 0.05)
    assert k == 0 and list(seen) == [0]
    k, seen = sens.smallest_sufficient(50, lambda k: 0.5, 0.05)
    assert k == 50 and set(seen) == {0, 50}
    k, _ = sens.smallest_sufficient(50, lambda k: 0.5 if k < 50 else 0.0, 0.05)
    assert k == 50


def test_output_tail_on_real_model(yolox_model: onnx.ModelProto) -> None:
    tail = sens.output_tail(yolox_model)
    final = next(n for n in yolox_model.graph.node if yolox_model.graph.output[0].name in n.output)
    assert final.op_type == "Transpose"
    assert final.name in tail
    by_name = {n.name: n for n in yolox_model.graph.node}
    assert all(by_name[n].op_type != "Conv" for n in tail)
    # nothing in the tail feeds a Conv: follow each tail node's outputs forward
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in yolox_model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    for name in tail:
        stack, seen = list(by_name[name].output), set()
        while stack:
            t = stack.pop()
            for c in consumers.get(t, []):
                assert c.op_type != "Conv", f"{name} reaches {c.name}"
                if c.name not in seen:
                    seen.add(c.name)
                    stack.extend(c.output)
    # the backbone is not in the tail, and the tail is not in the quantizable set
    assert not any(n.startswith("/backbone/") for n in tail)
    assert not tail & set(sens.quantizable_nodes(yolox_model))


def test_conv_units_on_real_model(yolox_model: onnx.ModelProto) -> None:
    units = sens.conv_units(yolox_model)
    convs = [n for n in yolox_model.graph.node if n.op_type == "Conv"]
    assert [u.name for u in units] == [n.name for n in convs]
    by_name = {n.name: n for n in yolox_model.graph.node}
    stem = next(u for u in units if u.name == "/backbone/backbone/stem/conv/conv/Conv")
    assert [by_name[n].op_type for n in stem.nodes] == ["Conv", "Sigmoid", "Mul"]
    # every Conv followed by SiLU (x * sigmoid(x)) is grouped with both nodes
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in yolox_model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    silu = 0
    for u, conv in zip(units, convs):
        after = consumers.get(conv.output[0], [])
        sig = [c for c in after if c.op_type == "Sigmoid"]
        mul = [c for c in after if c.op_type == "Mul"]
        if sig and mul and sig[0].output[0] in mul[0].input:
            silu += 1
            assert {sig[0].name, mul[0].name} <= set(u.nodes), u.name
        assert u.nodes[0] == conv.name
    assert silu > 80
    dw = [u for u in units if u.depthwise]
    assert dw and all(next(a.i for a in by_name[u.name].attribute if a.name == "group") > 1 for u in dw)


def test_rank_puts_nan_last() -> None:
    units = [sens.Unit("a", 0, ["a"], False, 0.1), sens.Unit("b", 1, ["b"], False),
             sens.Unit("c", 2, ["c"], False, 0.5)]  # fmt: skip
    assert [u.name for u in sens.rank(units)] == ["c", "a", "b"]


def test_score_error() -> None:
    ref = np.array([[0.0, 0.5, 0.9, 0.01]])
    test = np.array([[0.0, 0.4, 0.9, 0.02]])
    assert sens.score_error(ref, test) == pytest.approx((0.1 + 0.0) / 2)
    assert sens.score_error(ref[:, [0, 3]], test[:, [0, 3]]) == 0.0


def test_probe_sets_each_sensitivity() -> None:
    units = [sens.Unit("a", 0, ["a"], False), sens.Unit("b", 1, ["b", "b2"], False)]
    sens.probe(units, lambda u: float(len(u.nodes)), progress=False)
    assert [u.sensitivity for u in units] == [1.0, 2.0]

"""Preparing the high-precision variant: a Conv's separate bias Add (a dequantized export's way of
writing it) folded into the Conv, with the same outputs, and only where that is the same arithmetic."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from engine_cache import TESTDATA
from onnx import TensorProto, helper, numpy_helper

from dpa_perception.build.prepare import fold_conv_bias

RNG = np.random.default_rng(3)


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def toy_model() -> onnx.ModelProto:
    """x -> Conv A (+ bias via Reshape) -> Relu -> Conv B (+ bias as [1,4,1,1] initializer) -> out1;
    Conv C's output also feeds a second reader (not foldable); an Add of two activations (not a bias)."""
    f32 = np.float32
    inits = [
        _init("wa", RNG.normal(size=(4, 3, 3, 3)).astype(f32)), _init("ba", RNG.normal(size=4).astype(f32)),
        _init("ba_shape", np.array([1, 4, 1, 1], np.int64)),
        _init("wb", RNG.normal(size=(4, 4, 1, 1)).astype(f32)), _init("bb", RNG.normal(size=(1, 4, 1, 1)).astype(f32)),
        _init("wc", RNG.normal(size=(4, 4, 1, 1)).astype(f32)), _init("bc", RNG.normal(size=(4, 1, 1)).astype(f32)),
        _init("wrong", RNG.normal(size=(1, 1, 1, 4)).astype(f32)),  # 4 values per column (W 4), not per channel
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a0"], name="convA", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["ba", "ba_shape"], ["ba4"], name="reshapeA"),
        helper.make_node("Add", ["a0", "ba4"], ["a1"], name="addA"),
        helper.make_node("Relu", ["a1"], ["a2"]),
        helper.make_node("Conv", ["a2", "wb"], ["b0"], name="convB"),
        helper.make_node("Add", ["bb", "b0"], ["out1"], name="addB"),  # the constant first
        helper.make_node("Conv", ["a2", "wc"], ["c0"], name="convC"),
        helper.make_node("Add", ["c0", "bc"], ["c1"], name="addC"),
        helper.make_node("Add", ["c0", "c1"], ["out2"], name="addActs"),  # c0 read twice: C stays unfolded
        helper.make_node("Conv", ["a2", "wb"], ["d0"], name="convD"),
        helper.make_node("Add", ["d0", "wrong"], ["out3"], name="addWrong"),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 4, 4]) for n in ("out1", "out2", "out3")]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])], vi, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def test_only_a_per_channel_constant_added_to_a_conv_read_once_is_folded() -> None:
    m = toy_model()
    folded, n = fold_conv_bias(m)
    assert n == 2
    onnx.checker.check_model(folded)
    names = {node.name for node in folded.graph.node}
    assert {"addA", "addB", "reshapeA"}.isdisjoint(names)  # folded, and the bias's Reshape pruned with them
    assert {"addC", "addActs", "addWrong"} <= names  # a second reader of the Conv output; not a channel bias
    convs = {node.name: node for node in folded.graph.node if node.op_type == "Conv"}
    assert len(convs["convA"].input) == len(convs["convB"].input) == 3 and len(convs["convC"].input) == 2
    assert "ba_shape" not in {i.name for i in folded.graph.initializer}
    assert len(m.graph.node) == 11  # the input model is not touched
    x = RNG.normal(size=(1, 3, 4, 4)).astype(np.float32)
    for a, b in zip(run(m, x), run(folded, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_model_with_biases_inside_its_convs_is_unchanged() -> None:
    m, _ = fold_conv_bias(toy_model())
    again, n = fold_conv_bias(m)
    assert n == 0 and len(again.graph.node) == len(m.graph.node)


@pytest.mark.parametrize("name", ["yolo11n_coco_fp32_deq_320.onnx"])
def test_the_shared_yolo11n_gets_every_bias_into_its_conv_with_the_same_output(name: str) -> None:
    m = onnx.load(str(TESTDATA / "models" / name))
    folded, n = fold_conv_bias(m)
    convs = [node for node in m.graph.node if node.op_type == "Conv"]
    assert n == sum(1 for c in convs if c.name != "/model.23/dfl/conv/Conv")  # each but the DFL's integral conv
    x = RNG.random(size=(1, 3, 320, 320)).astype(np.float32)
    np.testing.assert_allclose(run(m, x)[0], run(folded, x)[0], rtol=1e-4, atol=1e-3)

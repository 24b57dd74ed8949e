"""The FP16-typed ONNX pass (strongly typed TensorRT builds the high variant from it), on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from dpa_perception.backends.tensorrt.fp16 import convert_onnx_to_fp16
from dpa_perception.core.errors import BackendError


def test_tensorrt_fp16_onnx_conversion_tracks_fp32_output(testdata):
    import cv2
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    src = testdata / "models" / "yolox_nano.onnx"
    fp32 = onnx.load(str(src))
    fp16 = convert_onnx_to_fp16(fp32)
    io = [(v.name, v.type.tensor_type.elem_type) for v in list(fp16.graph.input) + list(fp16.graph.output)]
    assert io == [("images", TensorProto.FLOAT), ("output", TensorProto.FLOAT)]  # keep_io_types
    kinds = {t.data_type for t in fp16.graph.initializer}
    assert TensorProto.FLOAT16 in kinds
    for node in fp16.graph.node:  # Resize scales stay float32 as the ONNX spec requires
        if node.op_type == "Resize":
            const = next(n for n in fp16.graph.node if n.output and n.output[0] == node.input[2])
            assert const.attribute[0].t.data_type == TensorProto.FLOAT
    img = cv2.imread(str(testdata / "images" / "dog.jpg"))
    r = min(416 / img.shape[0], 416 / img.shape[1])
    canvas = np.full((416, 416, 3), 114, np.uint8)
    small = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)))
    canvas[: small.shape[0], : small.shape[1]] = small
    x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    ref = ort.InferenceSession(fp32.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    got = ort.InferenceSession(fp16.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    score_ref = ref[0, :, 4:5] * ref[0, :, 5:]
    score_got = got[0, :, 4:5] * got[0, :, 5:]
    assert np.abs(score_ref - score_got).max() < 0.02
    assert np.argmax(score_ref.max(1)) == np.argmax(score_got.max(1))


def test_tensorrt_fp16_conversion_refuses_graphs_it_cannot_type(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph([], "b", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(BackendError, match="ModelOpt AutoCast"):
        convert_onnx_to_fp16(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    del onnx


def _graph(nodes, inits, outputs=("y",)):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _f32(values, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, np.float32), name)


def test_fp16_pass_keeps_an_fp32_copy_of_an_initializer_also_read_as_resize_scales():
    from onnx import TensorProto, helper

    m = _graph([helper.make_node("Mul", ["x", "s"], ["m"]),
                helper.make_node("Resize", ["m", "", "s"], ["y"], mode="nearest")], [_f32([1, 1, 2, 2], "s")])
    out = convert_onnx_to_fp16(m)  # "s" is a Mul operand (FP16) and Resize scales (FP32 copy)
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert inits == {"s": TensorProto.FLOAT16, "s__fp32": TensorProto.FLOAT}
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert resize.input[2] == "s__fp32" and mul.input[1] == "s"
    m = _graph([helper.make_node("Mul", ["x", "k"], ["m"]),
                helper.make_node("Resize", ["m", "", "s"], ["y"], mode="nearest")],
               [_f32([1e6], "k"), _f32([1, 1, 2, 2], "s")])
    out = convert_onnx_to_fp16(m)
    inits = {t.name: t for t in out.graph.initializer}
    assert inits["s"].data_type == TensorProto.FLOAT  # only feeds Resize scales
    assert inits["k"].data_type == TensorProto.FLOAT16
    from onnx import numpy_helper

    assert float(numpy_helper.to_array(inits["k"])[0]) == 65504.0  # clipped to the FP16 range


def test_fp16_pass_constants_casts_and_io_types():
    from onnx import TensorProto, helper

    const = helper.make_node("Constant", [], ["c"], value=_f32([1, 1, 2, 2], "cv"))
    only_scales = _graph([const, helper.make_node("Resize", ["x", "", "c"], ["y"], mode="nearest")], [])
    out = convert_onnx_to_fp16(only_scales)
    c = next(n for n in out.graph.node if n.op_type == "Constant")
    assert c.attribute[0].t.data_type == TensorProto.FLOAT
    both = _graph([const, helper.make_node("Resize", ["x", "", "c"], ["r"], mode="nearest"),
                   helper.make_node("Mul", ["r", "c"], ["y"])], [])
    with pytest.raises(BackendError, match="feeds both FP32-only and FP16 inputs"):
        convert_onnx_to_fp16(both)
    casts = _graph([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                    helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)], [])
    kept = convert_onnx_to_fp16(casts)
    assert kept.graph.node[0].name == "x__to_fp16" and kept.graph.node[-1].name == "y__to_fp32"
    assert kept.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inner = [n for n in kept.graph.node if n.op_type == "Cast" and n.input[0] == "i"]
    assert inner[0].attribute[0].i == TensorProto.FLOAT16
    retyped = convert_onnx_to_fp16(casts, keep_io_types=False)
    assert retyped.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert retyped.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    # a graph output read by another node: the reader follows the renamed FP16 tensor
    two = _graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["z"])], [], ("y", "z"))
    out = convert_onnx_to_fp16(two)
    neg = next(n for n in out.graph.node if n.op_type == "Neg")
    assert list(neg.input) == ["y__fp16"]

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

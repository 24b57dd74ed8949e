"""Quantization helpers (build/quantize.py): opset upgrade, symbolic dims, argument errors."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from dpa_perception.build.quantize import make_dynamic, quantize_variant, upgrade_opset
from dpa_perception.core.errors import ConfigError


@pytest.fixture(scope="module")
def yolox_model(testdata: Path) -> onnx.ModelProto:
    return onnx.load(str(testdata / "models" / "yolox_nano.onnx"))


def test_upgrade_opset_and_make_dynamic(yolox_model: onnx.ModelProto) -> None:
    up = upgrade_opset(yolox_model)
    assert next(o.version for o in up.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert upgrade_opset(up) is up
    dyn = make_dynamic(up, spatial=True)
    dims = dyn.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"] and dims[1].dim_value == 3
    out_dims = dyn.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_param  # anchors follow the canvas
    fixed_hw = make_dynamic(up, spatial=False)
    assert [d.dim_value for d in fixed_hw.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 416, 416]
    # the original is untouched
    assert yolox_model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_quantize_variant_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        quantize_variant(tmp_path / "a.onnx", tmp_path / "b.onnx", target="gpu", nodes_to_quantize=["x"],
                         calibration_cache=tmp_path / "c.json", reader=None)  # fmt: skip
    with pytest.raises(ConfigError):
        quantize_variant(tmp_path / "a.onnx", tmp_path / "b.onnx", target="cpu", nodes_to_quantize=[],
                         calibration_cache=tmp_path / "c.json", reader=None)  # fmt: skip


def test_the_quantizers_preprocessing_warning_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from dpa_perception.build import quantize as q

    q._ONCE.install()
    q._ONCE.seen = False
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
            logging.warning("Please consider pre-processing before quantization. See ...")
        logging.warning("an unrelated warning")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("pre-processing before quantization" in m for m in msgs) == 1
    assert "an unrelated warning" in msgs

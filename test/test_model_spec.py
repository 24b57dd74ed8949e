"""Model adapters: the family, pre-processing and output layout read from real ONNX files and
description files, and the errors for models that do not fit."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dpa_perception.build.model_detect import detect_spec, load_onnx
from dpa_perception.core.errors import ModelError, UnknownFamilyError
from dpa_perception.core.model_spec import COCO_NAMES, ModelSpec, anchors_for, with_input_hw

YOLOX = "yolox_nano.onnx"
YOLOV8 = "yolov8n_random_calibrated_640.onnx"


def _io_only_model(path: Path, in_dims: list, out_dims: list, meta: dict[str, str] | None = None) -> Path:
    """A model holding only the declared input and output (all detect_spec looks at)."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, in_dims)
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)
    graph = helper.make_graph([], "g", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- real models


def test_yolox_spec_from_real_model(testdata: Path) -> None:
    spec = detect_spec(testdata / "models" / YOLOX)
    assert spec.family == "yolox"
    assert spec.input_name == "images" and spec.output_name == "output"
    assert spec.input_hw == (416, 416)
    assert spec.num_classes == 80
    assert spec.num_anchors == 3549 == 52 * 52 + 26 * 26 + 13 * 13
    assert spec.channel_order == "bgr"
    assert spec.scale == 1.0
    assert spec.pad_value == 114.0
    assert spec.letterbox == "top_left"
    assert spec.size_rounding == "floor"
    assert spec.strides == (8, 16, 32)
    # no names in the YOLOX export: 80 classes means COCO
    assert spec.class_names[0] == "person" and spec.class_names[16] == "dog" and len(spec.class_names) == 80


def test_yolov8_spec_from_real_model(testdata: Path) -> None:
    path = testdata / "models" / YOLOV8
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    spec = detect_spec(path)
    assert spec.family == "yolov8"
    assert spec.input_name == "images" and spec.output_name == "output0"
    assert spec.input_hw == (640, 640)
    assert spec.channel_order == "rgb"
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.letterbox == "center"
    assert spec.pad_value == 114.0
    # class and anchor counts from the output shape [1, 4 + C, A]
    assert spec.num_classes == out_dims[1] - 4 == 80
    assert spec.num_anchors == out_dims[2] == 8400
    # names from the Ultralytics metadata, in id order
    names = ast.literal_eval(meta["names"])
    assert spec.class_names == tuple(str(names[i]) for i in range(len(names)))


def test_yolov8_names_come_from_metadata_not_coco(testdata: Path, tmp_path: Path) -> None:
    """With metadata names that differ from COCO's, those names are used."""
    model = onnx.load(str(testdata / "models" / YOLOV8))
    custom = {i: f"thing{i}" for i in range(80)}
    for p in model.metadata_props:
        if p.key == "names":
            p.value = repr(custom)
    dst = tmp_path / "custom_names.onnx"
    onnx.save(model, str(dst))
    spec = detect_spec(dst)
    assert spec.class_names[0] == "thing0" and spec.class_names[79] == "thing79"
    assert spec.class_name(5) == "thing5"
    assert spec.class_name(500) == "500"


def test_spec_dict_round_trip(testdata: Path) -> None:
    spec = detect_spec(testdata / "models" / YOLOV8)
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_with_input_hw_recounts_anchors(testdata: Path) -> None:
    spec = detect_spec(testdata / "models" / YOLOX)
    rect = with_input_hw(spec, (256, 416))
    assert rect.input_hw == (256, 416)
    assert rect.num_anchors == 32 * 52 + 16 * 26 + 8 * 13
    assert anchors_for((640, 640), (8, 16, 32)) == 8400


# ---------------------------------------------------------------- description files


def test_yaml_description_overrides_settings(testdata: Path, tmp_path: Path) -> None:
    dst = tmp_path / "detector.onnx"
    shutil.copy(testdata / "models" / YOLOV8, dst)
    names = [f"n{i}" for i in range(80)]
    dst.with_suffix(".yaml").write_text(
        "family: yolov8\nchannel_order: bgr\nscale: 1.0\nletterbox: top_left\npad_value: 0\n"
        "size_rounding: floor\nclass_names: [" + ", ".join(names) + "]\n"
    )
    spec = detect_spec(dst)
    assert spec.family == "yolov8"
    assert spec.channel_order == "bgr"
    assert spec.scale == 1.0
    assert spec.letterbox == "top_left"
    assert spec.pad_value == 0.0
    assert spec.size_rounding == "floor"
    assert spec.class_names == tuple(names)  # the description wins over the metadata
    assert spec.num_classes == 80 and spec.num_anchors == 8400  # counts still from the model


def test_json_description_is_read(testdata: Path, tmp_path: Path) -> None:
    dst = tmp_path / "det.onnx"
    shutil.copy(testdata / "models" / YOLOX, dst)
    dst.with_suffix(".json").write_text(json.dumps({"family": "yolox", "channel_order": "rgb", "scale": 0.5}))
    spec = detect_spec(dst)
    assert spec.family == "yolox" and spec.channel_order == "rgb" and spec.scale == 0.5
    assert spec.letterbox == "top_left"  # untouched settings keep the family defaults


def test_yaml_description_overrides_family(testdata: Path, tmp_path: Path) -> None:
    """A YOLOX export carrying Ultralytics-style metadata is taken for YOLOv8 unless described."""
    model = onnx.load(str(testdata / "models" / YOLOX))
    model.metadata_props.add(key="task", value="detect")
    model.metadata_props.add(key="names", value=repr(dict(enumerate(COCO_NAMES))))
    dst = tmp_path / "tagged.onnx"
    onnx.save(model, str(dst))
    with pytest.raises(ModelError):
        detect_spec(dst)  # read as [1, 4 + C, A]: 3545 classes for 80 names
    dst.with_suffix(".yaml").write_text("family: yolox\n")
    spec = detect_spec(dst)
    assert spec.family == "yolox"
    assert spec.num_classes == 80 and spec.num_anchors == 3549
    assert spec.channel_order == "bgr" and spec.letterbox == "top_left"


@pytest.mark.parametrize(
    ("description", "error", "match"),
    [
        ("family: ssd\n", UnknownFamilyError, "ssd"),
        ("family: yolox\nletterbox: bottom_right\n", ModelError, "letterbox"),
        ("family: yolox\nstrides: [8, 16]\n", ModelError, "strides"),
        ("- just\n- a list\n", ModelError, "det.yaml"),
    ],
    ids=["unknown-family", "bad-letterbox", "wrong-strides", "not-a-mapping"],
)
def test_bad_description_file(testdata: Path, tmp_path: Path, description: str, error: type, match: str) -> None:
    dst = tmp_path / "det.onnx"
    shutil.copy(testdata / "models" / YOLOX, dst)
    dst.with_suffix(".yaml").write_text(description)
    with pytest.raises(error, match=match):
        detect_spec(dst)


@pytest.mark.parametrize("description", ["family: yolox\nscale: bright\n", "family: yolox\nstrides: [8, x, 32]\n",
                                         "family: yolox\nstrides: 8\n"])  # fmt: skip
def test_malformed_description_values(testdata: Path, tmp_path: Path, description: str) -> None:
    """A value of the wrong type in the description file is a ModelError naming the file, not a traceback."""
    dst = tmp_path / "det.onnx"
    shutil.copy(testdata / "models" / YOLOX, dst)
    dst.with_suffix(".yaml").write_text(description)
    with pytest.raises(ModelError, match="det.yaml"):
        detect_spec(dst)


def test_core_model_spec_needs_no_onnx() -> None:
    """Model detection lives with the builder: importing the core's ModelSpec loads neither onnx nor yaml."""
    code = ("import sys, dpa_perception.core.model_spec, dpa_perception.core.manifest; "
            "print(sorted(m for m in ('onnx', 'yaml', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- synthetic layouts


def test_synthetic_yolox_layout(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "x.onnx", [1, 3, 320, 320], [1, 2100, 5 + 3])
    spec = detect_spec(p)
    assert spec.family == "yolox" and spec.num_classes == 3 and spec.num_anchors == 2100
    assert spec.class_names == ("0", "1", "2")


def test_synthetic_yolov8_symbolic_input_size_from_metadata(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "v.onnx", ["batch", 3, "h", "w"], ["batch", 4 + 2, 8400],
                       meta={"task": "detect", "names": "{0: 'a', 1: 'b'}", "imgsz": "[640, 640]"})  # fmt: skip
    spec = detect_spec(p)
    assert spec.family == "yolov8" and spec.input_hw == (640, 640)
    assert spec.class_names == ("a", "b")


def test_unknown_family_symbolic_output(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "odd.onnx", [1, 3, 416, 416], [1, "rows", "cols"])
    with pytest.raises(UnknownFamilyError, match="odd"):
        detect_spec(p)


def test_output_too_narrow_for_either_layout(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "narrow.onnx", [1, 3, 640, 640], [1, 4, 8400])  # boxes, no classes
    with pytest.raises(ModelError, match="narrow.onnx"):
        detect_spec(p)


def test_wrong_input_rank(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "rank3.onnx", [3, 416, 416], [1, 3549, 85])
    with pytest.raises(ModelError, match="rank"):
        detect_spec(p)


def test_wrong_channel_count(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "gray.onnx", [1, 1, 416, 416], [1, 3549, 85])
    with pytest.raises(ModelError, match="channels"):
        detect_spec(p)


def test_wrong_output_rank(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "flat.onnx", [1, 3, 416, 416], [1, 3549 * 85])
    with pytest.raises(ModelError, match="rank"):
        detect_spec(p)


def test_input_size_not_multiple_of_stride(tmp_path: Path) -> None:
    p = _io_only_model(tmp_path / "odd_size.onnx", [1, 3, 400, 400], [1, 2100, 85])
    with pytest.raises(ModelError, match="stride"):
        detect_spec(p)


# ---------------------------------------------------------------- unreadable files


def test_missing_model_names_file(tmp_path: Path) -> None:
    p = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelError, match="nowhere.onnx"):
        detect_spec(p)
    with pytest.raises(ModelError, match="nowhere.onnx"):
        load_onnx(p)


def test_corrupt_model_names_file(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.onnx"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="corrupt.onnx"):
        detect_spec(p)


def test_truncated_model_names_file(testdata: Path, tmp_path: Path) -> None:
    p = tmp_path / "truncated.onnx"
    p.write_bytes((testdata / "models" / YOLOX).read_bytes()[:100_000])
    with pytest.raises(ModelError, match="truncated.onnx"):
        detect_spec(p)


def test_from_dict_incomplete() -> None:
    with pytest.raises(ModelError):
        ModelSpec.from_dict({"family": "yolox"})

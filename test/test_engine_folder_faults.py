"""Corrupt engine folders: every one refused at load with one line (DualModeEngine: ManifestError; the
tools: one error line, exit 2), whether the manifest is malformed, edited in ways that still parse
(caught by the model description's checksum), or describes another model than its variant files
(caught by the variants' declared shapes and one blank frame). Each case works on a copy of the
cached YOLOX-Nano folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpa_perception.core.errors import ManifestError
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.tools import detect

Edit = Callable[[dict[str, Any], Path], None]


@pytest.fixture()
def folder(yolox_engine_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(yolox_engine_dir, tmp_path / "eng"))


def _edit(folder: Path, edit: Edit) -> None:
    path = folder / "manifest.json"
    d = json.loads(path.read_text())
    edit(d, folder)
    path.write_text(json.dumps(d))


def _refused(folder: Path, testdata: Path, capsys: pytest.CaptureFixture, message: str) -> str:
    """DualModeEngine refuses ``folder`` with a one-line ManifestError matching ``message``, and so does
    dpa-detect (one error line, exit 2)."""
    with pytest.raises(ManifestError, match=message) as exc:
        DualModeEngine(folder)
    assert "\n" not in str(exc.value)
    rc = detect.main([str(testdata / "images" / "dog.jpg"), "--engine", str(folder)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("dpa-detect: error:"), err
    return str(exc.value)


def _spec(**changes: Any) -> Edit:
    """Change model.spec fields (and the model fields that repeat them), keeping the checksum."""

    def edit(d: dict[str, Any], _folder: Path) -> None:
        d["model"]["spec"].update(changes)
        for key in ("family", "input_hw", "num_classes", "num_anchors"):
            if key in changes:
                d["model"][key] = changes[key]

    return edit


def _resealed(edit: Edit) -> Edit:
    """``edit``, then the description checksum recomputed: only the model itself can tell."""

    def both(d: dict[str, Any], folder: Path) -> None:
        edit(d, folder)
        d["model"]["spec_sha256"] = ModelSpec.from_dict(d["model"]["spec"]).digest()

    return both


def _unsealed(edit: Edit) -> Edit:
    def both(d: dict[str, Any], folder: Path) -> None:
        edit(d, folder)
        del d["model"]["spec_sha256"]

    return both


def _set(path: str, value: Any) -> Edit:
    def edit(d: dict[str, Any], _folder: Path) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(d: dict[str, Any], _folder: Path) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return edit


# ---------------------------------------------------------------- malformed manifests

MALFORMED: dict[str, tuple[Edit, str]] = {
    "variant without file": (_drop("variants.int8.file"), "variants.int8.file is missing"),
    "variant as a string": (_set("variants.high", "high.onnx"), "variants.high must be a JSON object"),
    "strides [0]": (_set("model.spec.strides", [0]), "strides must be positive integers"),
    "strides []": (_set("model.spec.strides", []), "strides must be positive integers"),
    "score_offset abc": (_set("variants.int8.score_offset", "abc"), "score_offset must be a finite number"),
    "variant outside the folder": (_set("variants.high.file", "../outside.onnx"), "relative path inside the engine"),
    "model null": (_set("model", None), "model must be a JSON object, not null"),
    "variants a list": (_set("variants", []), "variants must be a JSON object"),
    "scale nan text": (_set("model.spec.scale", "nan"), "scale must be a positive finite number"),
    "checksum not a string": (_set("model.spec_sha256", 5), "model.spec_sha256 must be a string"),
    "score_offset out of range": (_set("variants.int8.score_offset", 7.0), "score_offset must be within"),
    "class names a number": (_set("model.spec.class_names", 5), "model.spec"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_refused(folder: Path, testdata: Path, capsys: pytest.CaptureFixture, case: str) -> None:
    edit, message = MALFORMED[case]
    _edit(folder, edit)
    _refused(folder, testdata, capsys, message)


NOT_AN_OBJECT: dict[str, Callable[[], str]] = {
    "list": lambda: "[]", "null": lambda: "null", "truncated": lambda: '{"format_version": 1, "model": ',
    "empty": lambda: "", "nested 100000 deep": lambda: "[" * 100_000 + "]" * 100_000,
    "17 MB": lambda: " " * (17 << 20),
}  # fmt: skip


@pytest.mark.parametrize("case", list(NOT_AN_OBJECT))
def test_manifest_that_is_no_object_is_refused(folder: Path, testdata: Path, capsys: pytest.CaptureFixture,
                                               case: str) -> None:  # fmt: skip
    (folder / "manifest.json").write_text(NOT_AN_OBJECT[case]())
    _refused(folder, testdata, capsys, "manifest")


# ---------------------------------------------------------------- edited values that still parse

EDITS: dict[str, Edit] = {
    "family": _spec(family="yolov8"),
    "class count": _spec(num_classes=79, class_names=[]),
    "input size": _spec(input_hw=[320, 320], num_anchors=2100),
    "channel_order": _spec(channel_order="rgb"),
    "scale": _spec(scale=1.0 / 255.0),
    "pad_value": _spec(pad_value=0.0),
    "letterbox": _spec(letterbox="center"),
    "size_rounding": _spec(size_rounding="round"),
    "class names": _spec(class_names=["car"] * 80),
    "output name": _spec(output_name="boxes"),
}


@pytest.mark.parametrize("field", list(EDITS))
def test_edited_description_is_refused_by_its_checksum(folder: Path, testdata: Path, capsys: pytest.CaptureFixture,
                                                       field: str) -> None:  # fmt: skip
    _edit(folder, EDITS[field])
    _refused(folder, testdata, capsys, "does not match its checksum model.spec_sha256.*rebuild with dpa-build")


@pytest.mark.parametrize("field", ["family", "channel_order"])
def test_edited_description_without_its_checksum_is_refused(folder: Path, testdata: Path,
                                                            capsys: pytest.CaptureFixture, field: str) -> None:  # fmt: skip
    """Deleting the checksum does not help: a manifest without one (an older dpa-build) is refused."""
    _edit(folder, _unsealed(EDITS[field]))
    _refused(folder, testdata, capsys, "spec_sha256 is missing.*rebuild with dpa-build")


# a dynamic-H/W variant is checked on one stride square (32x32: 21 anchor rows), not at 416x416 (3549)
@pytest.mark.parametrize(("field", "message"), [("family", "output is \\[1, 21, 85\\] at 32x32.*gives \\[1, 84, 21\\]"),
                                                ("class count", "gives \\[1, 21, 84\\]"),
                                                ("input size", "input 320x320")])  # fmt: skip
def test_description_of_another_model_is_refused_by_the_model(folder: Path, testdata: Path,
                                                              capsys: pytest.CaptureFixture, field: str,
                                                              message: str) -> None:  # fmt: skip
    """Even with the checksum recomputed, family, class count and input size are checked against the
    variant files: one blank frame at the described size must give the described output shape."""
    if field == "input size":  # the folder's variants take any H, W: make them static 416x416 to be told apart
        _static_variants(folder)
    _edit(folder, _resealed(EDITS[field]))
    text = _refused(folder, testdata, capsys, message)
    assert "does not describe this model" in text


def _static_variants(folder: Path) -> None:
    import onnx

    def edit(d: dict[str, Any], f: Path) -> None:
        for name in ("high", "int8"):
            path = f / d["variants"][name]["file"]
            model = onnx.load(str(path))
            dims = model.graph.input[0].type.tensor_type.shape.dim
            dims[2].dim_value, dims[3].dim_value = 416, 416
            onnx.save(model, str(path))
            d["variants"][name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        d["model"]["dynamic_hw"] = False

    _edit(folder, edit)


def test_dims_called_dynamic_that_are_static_are_refused(folder: Path, testdata: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """dynamic_hw (not in the description checksum) set back to true over static 416x416 variants."""
    _static_variants(folder)
    _edit(folder, _set("model.dynamic_hw", True))
    _refused(folder, testdata, capsys, "static dims the manifest calls dynamic")


def test_variant_replaced_by_another_detector_is_refused(folder: Path, testdata: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """high.onnx swapped for a YOLOv8 export (and its sha256 updated): its shapes give it away."""
    other = testdata / "models" / "yolov8n_random_calibrated_640.onnx"
    shutil.copy(other, folder / "high.onnx")
    _edit(folder, _set("variants.high.sha256", hashlib.sha256(other.read_bytes()).hexdigest()))
    text = _refused(folder, testdata, capsys, "variant 'high'")
    assert "does not describe this model" in text


def test_variant_symlinked_outside_the_folder_is_refused(folder: Path, testdata: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(folder / "int8.onnx", outside)
    (folder / "int8.onnx").symlink_to(outside)
    _refused(folder, testdata, capsys, "resolves outside the engine folder")


# ---------------------------------------------------------------- what is not required


def test_broken_tensorrt_only_variant_does_not_stop_onnxruntime(folder: Path, testdata: Path,
                                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    (folder / "int8_trt.onnx").write_bytes(b"truncated")
    engine = DualModeEngine(folder)
    engine.close()
    (folder / "int8_trt.onnx").unlink()
    assert detect.main([str(testdata / "images" / "dog.jpg"), "--engine", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["detections"]


def test_edits_outside_the_description_still_load(folder: Path) -> None:
    """Build records and the dims flags are not part of the description checksum."""
    _edit(folder, _set("latency_ms", {"note": "edited"}))
    _edit(folder, _set("model.dynamic_hw", False))
    engine = DualModeEngine(folder)
    try:
        assert not engine.supports("rect")
    finally:
        engine.close()


def test_tensorrt_backend_does_not_need_the_onnx_variant_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt int8.onnx stops ONNX Runtime (which runs it) but not TensorRT (which runs engines built from
    it, checked by their own key); here a stand-in TensorRT loader serves the intact high-precision file."""
    from dpa_perception.backends import base
    from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession
    from dpa_perception.backends.tensorrt import session as trt_session

    (folder / "int8.onnx").write_bytes(b"corrupt")
    with pytest.raises(ManifestError, match="int8.onnx: sha256"):
        DualModeEngine(folder)
    monkeypatch.setattr(trt_session, "load_tensorrt_session",
                        lambda d, m, v, p, **k: OnnxRuntimeSession(d / "high.onnx", base.Placement("cpu")))  # fmt: skip
    engine = DualModeEngine(folder, backend="tensorrt")
    engine.close()
    _edit(folder, _spec(channel_order="rgb"))  # the description checksum holds for every backend
    with pytest.raises(ManifestError, match="checksum"):
        DualModeEngine(folder, backend="tensorrt")

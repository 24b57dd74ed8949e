"""The manifest type: one writer, one reader, the on-disk layout, and every malformed shape refused
with a one-line ManifestError (never a KeyError, TypeError or AttributeError)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from dpa_perception.core.errors import ManifestError
from dpa_perception.core.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_DEFAULTS,
    REQUIRED_VARIANTS,
    Manifest,
    ModelEntry,
    VariantEntry,
)

SPEC = {"family": "yolox", "input_name": "images", "output_name": "output", "input_hw": [32, 32],
        "num_classes": 80, "num_anchors": 21, "channel_order": "bgr", "scale": 1.0, "pad_value": 114.0,
        "letterbox": "top_left", "strides": [8, 16, 32], "size_rounding": "floor", "class_names": []}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _on_disk(folder: Path) -> dict[str, Any]:
    """A manifest laid out exactly as dpa-build writes it, with its variant files in ``folder``."""
    files = {"high": b"high", "int8": b"int8", "int8_trt": b"int8 trt"}
    for name, data in files.items():
        (folder / f"{name}.onnx").write_bytes(data)
    return {
        "format_version": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"source": "tiny.onnx", "sha256": "ab" * 32, "family": "yolox", "input_name": "images",
                  "input_hw": [32, 32], "num_classes": 80, "num_anchors": 21, "dynamic_batch": True,
                  "dynamic_hw": True, "spec": copy.deepcopy(SPEC)},
        "variants": {
            "high": {"file": "high.onnx", "precision": "fp32", "sha256": _sha(files["high"])},
            "int8": {"file": "int8.onnx", "precision": "int8", "activations": "uint8 asymmetric",
                     "weights": "int8 symmetric per-channel", "target": "cpu", "sha256": _sha(files["int8"]),
                     "score_offset": 0.04},
            "int8_trt": {"file": "int8_trt.onnx", "precision": "int8", "activations": "int8 symmetric",
                         "weights": "int8 symmetric per-channel", "target": "tensorrt",
                         "sha256": _sha(files["int8_trt"])},
        },
        "calibration": {"method": "percentile", "percentile": 99.99, "frames": 5},
        "mixed_precision": {"kept_nodes": ["/stem/Conv"], "units_total": 3, "units_kept": 1},
        "agreement": {"iou": 0.5},
        "latency_ms": {"high": 3.0, "int8": 2.0},
        "rect": None,
        "tools": {"python": "3.10.12"},
        "build_seconds": 12.5,
    }


def _write(folder: Path, d: Any) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(d))


# ---------------------------------------------------------------- round trip and layout


def test_round_trip_keeps_the_layout_on_disk(tmp_path: Path) -> None:
    d = _on_disk(tmp_path)
    _write(tmp_path, d)
    m = Manifest.load(tmp_path)
    assert m.to_dict() == d
    assert list(m.to_dict()) == list(d)  # key order too
    assert list(m.to_dict()["variants"]["int8"]) == list(d["variants"]["int8"])
    assert m.format_version == FORMAT_VERSION == 1
    assert m.model.input_hw == (32, 32) and m.model.spec.num_anchors == 21
    assert m.variants["int8"].score_offset == 0.04 and m.variants["high"].score_offset == 0.0
    assert m.variants["int8"].details == {"activations": "uint8 asymmetric",
                                          "weights": "int8 symmetric per-channel", "target": "cpu"}
    assert m.sections["build_seconds"] == 12.5 and m.sections["rect"] is None
    assert m.tensorrt is None and "tensorrt" not in m.to_dict()
    assert m.variant_path(tmp_path, "int8_trt") == tmp_path / "int8_trt.onnx"
    # write then load again: same object, same text
    m.tensorrt = {"format_version": 1, "engines": {}}
    path = m.write(tmp_path)
    assert path == tmp_path / MANIFEST_NAME
    again = Manifest.load(tmp_path)
    assert again == m and json.loads(path.read_text())["tensorrt"] == {"format_version": 1, "engines": {}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temp file was renamed


def test_model_entry_from_spec_and_engine_max_batch(tmp_path: Path) -> None:
    m = Manifest.load(_folder(tmp_path))
    e = ModelEntry.from_spec(m.model.spec, source="tiny.onnx", sha256="ab" * 32, dynamic_batch=True, dynamic_hw=True)
    assert e == m.model
    assert e.engine_max_batch(8) == 8
    static = ModelEntry.from_spec(m.model.spec, source="", sha256="ab" * 32, dynamic_batch=False, dynamic_hw=False)
    assert static.engine_max_batch(8) == 1 and static.engine_max_batch(1) == 1


def test_variant_entry_writes_score_offset_only_when_set() -> None:
    assert VariantEntry("high.onnx", "fp32", "ab").to_dict() == {"file": "high.onnx", "precision": "fp32",
                                                                "sha256": "ab"}
    d = VariantEntry("int8.onnx", "int8", "cd", 0.05, {"target": "cpu"}).to_dict()
    assert d == {"file": "int8.onnx", "precision": "int8", "target": "cpu", "sha256": "cd", "score_offset": 0.05}


def _folder(tmp_path: Path, edit: Any = None) -> Path:
    d = _on_disk(tmp_path)
    if edit is not None:
        edit(d)
    _write(tmp_path, d)
    return tmp_path


# ---------------------------------------------------------------- defaults in one place


def test_missing_optional_fields_take_the_one_set_of_defaults(tmp_path: Path) -> None:
    def strip(d: dict) -> None:
        for key in ("source", "family", "input_name", "input_hw", "num_classes", "num_anchors",
                    "dynamic_batch", "dynamic_hw"):
            del d["model"][key]
        del d["variants"]["high"]["precision"]
        del d["created"]

    m = Manifest.load(_folder(tmp_path, strip))
    # dynamic_batch defaults to False (the safe choice: frames one by one, batch-1 TensorRT engines)
    assert MODEL_DEFAULTS == {"source": "", "dynamic_batch": False, "dynamic_hw": False}
    assert (m.model.dynamic_batch, m.model.dynamic_hw, m.model.source) == (False, False, "")
    # fields that repeat the spec come from it
    assert (m.model.family, m.model.input_name, m.model.input_hw) == ("yolox", "images", (32, 32))
    assert (m.model.num_classes, m.model.num_anchors) == (80, 21)
    assert m.variants["high"].precision == "" and m.created == ""
    assert m.model.engine_max_batch(8) == 1


# ---------------------------------------------------------------- malformed shapes


def _set(path: str, value: Any) -> Any:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return edit


def _delete(path: str) -> Any:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return edit


MALFORMED = [
    ("format_version", _set("format_version", 2), "format"),
    ("format_version true", _set("format_version", True), "format"),
    ("format_version float", _set("format_version", 1.0), "format"),
    ("format_version missing", _delete("format_version"), "format None"),
    ("no model", _delete("model"), "no model description"),
    ("model a list", _set("model", []), "model must be a JSON object"),
    ("model null", _set("model", None), "model must be a JSON object, not null"),
    ("no spec", _delete("model.spec"), "no model description"),
    ("spec a string", _set("model.spec", "yolox"), "model.spec must be an object"),
    ("spec incomplete", _delete("model.spec.output_name"), "model.spec"),
    ("spec family", _set("model.spec.family", "ssd"), "model.spec: unknown model family"),
    ("spec strides empty", _set("model.spec.strides", []), "model.spec"),
    ("spec strides zero", _set("model.spec.strides", [0]), "model.spec"),
    ("spec class names", _set("model.spec.class_names", 5), "model.spec"),
    ("no sha256", _delete("model.sha256"), "model.sha256 is missing"),
    ("sha256 number", _set("model.sha256", 5), "model.sha256 must be a string"),
    ("input_hw one int", _set("model.input_hw", [32]), "model.input_hw must be"),
    ("input_hw negative", _set("model.input_hw", [32, -32]), "model.input_hw must be"),
    ("input_hw strings", _set("model.input_hw", ["32", "32"]), "model.input_hw must be"),
    ("input_hw number", _set("model.input_hw", 32), "model.input_hw must be"),
    ("input_hw disagrees", _set("model.input_hw", [64, 64]), "model.input_hw .* differs from model.spec"),
    ("num_classes string", _set("model.num_classes", "80"), "model.num_classes must be a positive integer"),
    ("num_anchors bool", _set("model.num_anchors", True), "model.num_anchors must be a positive integer"),
    ("dynamic_batch string", _set("model.dynamic_batch", "yes"), "model.dynamic_batch must be true or false"),
    ("variants a list", _set("variants", ["high", "int8"]), "variants must be a JSON object"),
    ("no variants", _delete("variants"), "variants must be a JSON object, not null"),
    ("variant a string", _set("variants.int8", "int8.onnx"), "variants.int8 must be a JSON object, not str"),
    ("variant without file", _delete("variants.int8.file"), "variants.int8.file is missing"),
    ("variant file null", _set("variants.int8.file", None), "variants.int8.file must be a string"),
    ("variant without sha", _delete("variants.high.sha256"), "variants.high.sha256 is missing"),
    ("score_offset text", _set("variants.int8.score_offset", "abc"), "variants.int8.score_offset must be a finite"),
    ("score_offset nan", _set("variants.int8.score_offset", float("nan")), "score_offset must be a finite"),
    ("precision number", _set("variants.int8.precision", 8), "variants.int8.precision must be a string"),
    ("tensorrt a list", _set("tensorrt", []), "tensorrt must be a JSON object"),
    ("created number", _set("created", 5), "created must be a string"),
    ("required variant absent", _delete("variants.int8"), "must list the variants high, int8"),
]


@pytest.mark.parametrize(("what", "edit", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_manifest_is_refused_in_one_line(tmp_path: Path, what: str, edit: Any, message: str) -> None:
    _folder(tmp_path, edit)
    with pytest.raises(ManifestError, match=message) as exc:
        Manifest.load(tmp_path, verify=False)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(tmp_path / MANIFEST_NAME)), text


@pytest.mark.parametrize("top", ["[]", "null", "3", '"manifest"', "{", "\xff"])
def test_top_level_not_an_object_is_refused(tmp_path: Path, top: str) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(top.encode("latin-1"))
    with pytest.raises(ManifestError, match="manifest") as exc:
        Manifest.load(tmp_path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("value", [[], None, 3, "x", {"model": {}}])
def test_from_dict_never_lets_a_python_error_escape(value: Any) -> None:
    with pytest.raises(ManifestError):
        Manifest.from_dict(value, "here")


def test_every_single_field_replaced_by_a_wrong_type_is_a_manifest_error(tmp_path: Path) -> None:
    base = _on_disk(tmp_path)

    def paths(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out.append(prefix + k)
            if isinstance(v, dict) and k not in ("calibration", "mixed_precision", "agreement", "latency_ms", "tools"):
                out += paths(v, prefix + k + ".")
        return out

    for path in paths(base):
        for wrong in ([], None, "?", -1, {"a": 1}):
            d = copy.deepcopy(base)
            _set(path, wrong)(d)
            try:
                Manifest.from_dict(d, "here")
            except ManifestError as exc:
                assert "\n" not in str(exc)
            # anything else (KeyError, TypeError, AttributeError...) fails the test


# ---------------------------------------------------------------- paths and checksums


@pytest.mark.parametrize("file", ["../x.onnx", "a/../../x.onnx", "/etc/passwd", "C:\\x.onnx", "..\\x.onnx", "", ".",
                                  "\\\\server\\share\\x.onnx"])
def test_variant_file_outside_the_folder_is_refused(tmp_path: Path, file: str) -> None:
    _folder(tmp_path, _set("variants.high.file", file))
    with pytest.raises(ManifestError, match="variants.high.file .* must be a relative path inside the engine folder"):
        Manifest.load(tmp_path, verify=False)


def test_subfolder_variant_file_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    m = Manifest.load(_folder(tmp_path, _set("variants.int8_trt.file", "sub/int8_trt.onnx")), verify=False)
    assert m.variant_path(tmp_path, "int8_trt") == tmp_path / "sub" / "int8_trt.onnx"


def test_verify_checks_only_the_required_variants(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "int8_trt.onnx").write_bytes(b"broken")  # a TensorRT-only file does not stop ONNX Runtime
    assert Manifest.load(tmp_path).variants["int8_trt"].file == "int8_trt.onnx"
    assert REQUIRED_VARIANTS == ("high", "int8")
    with pytest.raises(ManifestError, match="int8_trt.onnx: sha256"):
        Manifest.load(tmp_path, required=("high", "int8_trt"))
    (tmp_path / "int8.onnx").unlink()
    with pytest.raises(ManifestError, match="int8.onnx: variant 'int8' listed in the manifest is missing"):
        Manifest.load(tmp_path)
    with pytest.raises(ManifestError, match="no variant 'fp8'"):
        Manifest.load(tmp_path, verify=False).variant_path(tmp_path, "fp8")


def test_missing_folder_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="engine folder not found"):
        Manifest.load(tmp_path / "nothing")
    with pytest.raises(ManifestError, match="no manifest"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("latency, verdict, words", [
    ({"int8_verdict": "pays", "speedup": 1.4, "speedup_ci": [1.3, 1.5], "min_speedup": 1.05}, "pays", "1.40x"),
    ({"int8_verdict": "does_not_pay", "speedup": 0.96, "speedup_ci": [0.93, 0.99], "min_speedup": 1.05},
     "does_not_pay", "does not pay"),
    ({"int8_verdict": "undecided", "speedup": 1.04}, "undecided", "nan"),
    ({"high": 8.0, "int8": 7.0}, None, "rebuild"),  # an older dpa-build: not judged
])  # fmt: skip
def test_int8_verdict_reads_the_build_record(tmp_path: Path, latency: dict, verdict: str | None, words: str) -> None:
    m = Manifest.from_dict({**_on_disk(tmp_path), "latency_ms": latency}, "test")
    got, line = m.int8_verdict()
    assert got == verdict and words in line and "\n" not in line


@pytest.mark.parametrize("latency", [{"int8_verdict": "maybe"}, {"int8_verdict": "pays", "speedup": "fast"},
                                     {"int8_verdict": "pays", "speedup_ci": ["a", 1.0]}])
def test_a_malformed_int8_verdict_is_refused_in_one_line(tmp_path: Path, latency: dict) -> None:
    m = Manifest.from_dict({**_on_disk(tmp_path), "latency_ms": latency}, "test")
    with pytest.raises(ManifestError) as e:
        m.int8_verdict()
    assert "latency_ms" in str(e.value) and "\n" not in str(e.value)

"""DualModeEngine on the built YOLOX-Nano engine folder: reference detections, INT8 agreement,
batching, rect input, and the manifest that guards the folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dpa_perception.build.metrics import Agreement, agreement, iou_matrix
from dpa_perception.core.errors import ConfigError, ImageError, ManifestError
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.types import Detections
from dpa_perception.inference.engine import DualModeEngine

IMAGES = sorted(
    ["uadetrac_MVI_20011_img00001.jpg", "rtts_fog_SJZ_Bing_492.png", "bdd_hybridnets_2_night_dark.jpg",
     "kitti_000008.png", "nuscenes_n015_CAM_FRONT.jpg", "dog.jpg"]
)  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def frames(testdata: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in IMAGES:
        img = cv2.imread(str(testdata / "images" / name), cv2.IMREAD_COLOR)
        assert img is not None, name
        out[name] = img
    return out


@pytest.fixture(scope="module")
def reference(testdata: Path) -> dict:
    return json.loads((testdata / "expected" / "yolox_nano_reference.json").read_text())


@pytest.fixture(scope="module")
def ref_engine(yolox_engine_dir: Path) -> Iterator[DualModeEngine]:
    """Decoded like the reference file: score >= 0.1, class-agnostic NMS at IoU 0.45."""
    eng = DualModeEngine(yolox_engine_dir, decode=DecodeConfig(score_threshold=0.1, nms_iou=0.45, class_agnostic=True))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def engine(yolox_engine_dir: Path) -> Iterator[DualModeEngine]:
    """Decoded low (0.1, class-aware NMS) so comparisons can use hysteresis around 0.3."""
    eng = DualModeEngine(yolox_engine_dir, decode=DecodeConfig(score_threshold=0.1))
    yield eng
    eng.close()


def _copy_engine(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _same_detections(a: Detections, b: Detections, box_atol: float = 0.1, score_atol: float = 1e-3) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=box_atol)


def _matches_with_hysteresis(a: Detections, b: Detections, hi: float = 0.3, iou: float = 0.85,
                             score_tol: float = 0.1) -> list[str]:  # fmt: skip
    """Detections of ``a`` at >= ``hi`` without a same-class box in ``b`` (decoded lower) close to them."""
    m = iou_matrix(a.boxes, b.boxes)
    if m.size:
        m = np.where(a.class_ids[:, None] == b.class_ids[None, :], m, 0.0)
    missing = []
    for i in np.nonzero(a.scores >= hi)[0]:
        j = int(m[i].argmax()) if m.shape[1] else -1
        if j < 0 or m[i, j] < iou or abs(float(a.scores[i]) - float(b.scores[j])) > score_tol:
            missing.append(f"class {a.class_ids[i]} score {a.scores[i]:.3f} box {a.boxes[i].round(1).tolist()}")
    return missing


# ---------------------------------------------------------------- high mode vs the reference


def test_reference_matches_shared_files(testdata: Path, reference: dict) -> None:
    assert reference["model_sha256"] == _sha256(testdata / "models" / "yolox_nano.onnx")
    assert sorted(reference["images"]) == IMAGES
    for name, entry in reference["images"].items():
        assert entry["sha256"] == _sha256(testdata / "images" / name), name


@pytest.mark.parametrize("name", IMAGES)
def test_high_mode_reproduces_reference(name: str, ref_engine: DualModeEngine, frames: dict, reference: dict) -> None:
    ref = [d for d in reference["images"][name]["detections"]]
    det = ref_engine.infer([frames[name]], "high").detections[0]
    assert len(det) > 0
    ref_boxes = np.array([d["box_xyxy"] for d in ref], np.float32)
    ious = iou_matrix(ref_boxes, det.boxes)
    strong = [i for i, d in enumerate(ref) if d["score"] >= 0.3]
    assert strong, "every shared image has at least one reference detection at 0.3"
    for i in strong:
        d = ref[i]
        same_class = det.class_ids == d["class_id"]
        cand = np.where(same_class, ious[i], 0.0)
        j = int(cand.argmax())
        assert cand[j] >= 0.9, f"{name}: reference {d} not found (best IoU {cand[j]:.3f})"
        assert float(det.scores[j]) == pytest.approx(d["score"], abs=0.02), f"{name}: {d} scored {det.scores[j]:.4f}"
    # and nothing strong that the reference does not have
    for j in np.nonzero(det.scores >= 0.3)[0]:
        cand = np.where(np.array([d["class_id"] for d in ref]) == det.class_ids[j], ious[:, j], 0.0)
        assert cand.max() >= 0.9, f"{name}: extra detection {det.boxes[j].tolist()} class {det.class_ids[j]}"


# ---------------------------------------------------------------- INT8 vs high


def test_int8_agrees_with_high(engine: DualModeEngine, frames: dict, record_property) -> None:
    imgs = [frames[n] for n in IMAGES]
    high = engine.infer(imgs, "high").detections
    int8 = engine.infer(imgs, "int8").detections
    total = Agreement()
    per_image = {}
    for name, h, q in zip(IMAGES, high, int8):
        a = agreement(h, q, iou=0.5, min_score=0.3, class_aware=True)
        per_image[name] = a.as_dict()
        total += a
    record_property("int8_vs_high", total.as_dict())
    print(f"\nINT8 vs high on the six shared images: {total.as_dict()}")
    assert total.n_ref >= 30  # the six images hold ~40 detections at 0.3
    assert total.recall >= 0.90, (total.as_dict(), per_image)
    assert total.precision >= 0.92, (total.as_dict(), per_image)


def test_int8_differs_from_high(engine: DualModeEngine, frames: dict) -> None:
    """The two modes really run different networks (same boxes would mean the same file twice)."""
    img = frames["uadetrac_MVI_20011_img00001.jpg"]
    h = engine.infer([img], "high").detections[0]
    q = engine.infer([img], "int8").detections[0]
    assert len(h) != len(q) or not np.allclose(h.scores, q.scores, atol=1e-4)


# ---------------------------------------------------------------- batching and input shapes


@pytest.mark.parametrize("mode", ["high", "int8"])
def test_batch_of_three_equals_single_calls(engine: DualModeEngine, frames: dict, mode: str) -> None:
    names = ["dog.jpg", "kitti_000008.png", "rtts_fog_SJZ_Bing_492.png"]
    batch = engine.infer([frames[n] for n in names], mode)
    assert len(batch.detections) == 3
    assert batch.mode == mode
    for n, det in zip(names, batch.detections):
        single = engine.infer([frames[n]], mode).detections[0]
        _same_detections(det, single)


def test_batch_larger_than_max_batch(yolox_engine_dir: Path, frames: dict) -> None:
    eng = DualModeEngine(yolox_engine_dir, max_batch=2)
    try:
        imgs = [frames[n] for n in IMAGES[:5]]
        res = eng.infer(imgs, "high")
        assert len(res.detections) == 5
        for img, det in zip(imgs, res.detections):
            _same_detections(det, eng.infer([img], "high").detections[0])
        assert eng.stats["high"].frames == 5 + 5
    finally:
        eng.close()


def test_rect_canvas_size_960x540(engine: DualModeEngine, frames: dict) -> None:
    img = frames["uadetrac_MVI_20011_img00001.jpg"]
    assert img.shape[:2] == (540, 960)
    assert engine.infer([img], "high", "rect").input_hw == (256, 416)
    assert engine.infer([img], "high", "square").input_hw == (416, 416)


def test_rect_finds_what_square_finds(engine: DualModeEngine, frames: dict) -> None:
    total = Agreement()
    for name in IMAGES:
        sq = engine.infer([frames[name]], "high", "square").detections[0]
        rc = engine.infer([frames[name]], "high", "rect").detections[0]
        total += agreement(sq, rc, iou=0.5, min_score=0.3)
    assert total.recall >= 0.85 and total.precision >= 0.85, total.as_dict()


@pytest.mark.parametrize("shape", ["square", "rect"])
def test_mixed_size_batch_equals_single_frames(engine: DualModeEngine, frames: dict, shape: str) -> None:
    """Frames of different sizes in one batch get the detections each gets alone.

    Square: the same canvas, so the same numbers. Rect: the batch canvas is the largest any frame
    needs, so a frame may get more padding than alone; detections must still agree (same class,
    IoU >= 0.85, score within 0.1, compared at 0.3 against the other decoded at 0.1).
    """
    imgs = [frames[n] for n in IMAGES]
    batch = engine.infer(imgs, "high", shape)
    for name, img, det in zip(IMAGES, imgs, batch.detections):
        single = engine.infer([img], "high", shape).detections[0]
        if shape == "square":
            _same_detections(det, single)
        else:
            assert not _matches_with_hysteresis(single, det), name
            assert not _matches_with_hysteresis(det, single), name


def test_boxes_inside_frames(engine: DualModeEngine, frames: dict) -> None:
    for name in IMAGES:
        h, w = frames[name].shape[:2]
        for shape in ("square", "rect"):
            det = engine.infer([frames[name]], "high", shape).detections[0]
            assert (det.boxes[:, [0, 2]] >= 0).all() and (det.boxes[:, [0, 2]] <= w).all(), name
            assert (det.boxes[:, [1, 3]] >= 0).all() and (det.boxes[:, [1, 3]] <= h).all(), name
            assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()


def test_grayscale_frame_is_accepted(engine: DualModeEngine, frames: dict) -> None:
    gray = cv2.cvtColor(frames["dog.jpg"], cv2.COLOR_BGR2GRAY)
    res = engine.infer([gray], "high")
    assert len(res.detections) == 1


def test_infer_errors(engine: DualModeEngine, frames: dict) -> None:
    with pytest.raises(ConfigError):
        engine.infer([frames["dog.jpg"]], "fp16")  # type: ignore[arg-type]
    with pytest.raises(ImageError):
        engine.infer([np.zeros((10, 10, 3), np.float32)], "high")
    with pytest.raises(ImageError):
        engine.infer([np.zeros((0, 10, 3), np.uint8)], "high")
    assert engine.infer([], "high").detections == []


def test_engine_option_errors(yolox_engine_dir: Path) -> None:
    with pytest.raises(ConfigError):
        DualModeEngine(yolox_engine_dir, backend="openvino")
    with pytest.raises(ConfigError):
        DualModeEngine(yolox_engine_dir, max_batch=0)
    with pytest.raises(ConfigError):
        DualModeEngine(yolox_engine_dir, placements={"int8": "gpu"})  # onnxruntime backend runs on the CPU
    with pytest.raises(ConfigError):
        DualModeEngine(yolox_engine_dir, decode=DecodeConfig(score_threshold=2.0))


# ---------------------------------------------------------------- dynamic dims


def test_dynamic_dims_recorded_and_real(yolox_engine_dir: Path, engine: DualModeEngine) -> None:
    import onnxruntime as ort

    man = Manifest.load(yolox_engine_dir)
    assert man.model.dynamic_batch is True
    assert man.model.dynamic_hw is True
    assert engine.dynamic_batch and engine.dynamic_hw and engine.supports("rect")
    for variant in ("high", "int8", "int8_trt"):
        model = onnx.load(str(man.variant_path(yolox_engine_dir, variant)), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert [d.HasField("dim_param") for d in dims] == [True, False, True, True], variant
    sess = ort.InferenceSession(str(yolox_engine_dir / "high.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": np.full((2, 3, 256, 416), 114, np.float32)})[0]
    assert out.shape == (2, 32 * 52 + 16 * 26 + 8 * 13, 85)


def test_static_engine_refuses_rect(yolox_engine_dir: Path, tmp_path: Path, frames: dict) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    man = json.loads((d / "manifest.json").read_text())
    man["model"]["dynamic_hw"] = False
    man["model"]["dynamic_batch"] = False
    (d / "manifest.json").write_text(json.dumps(man))
    eng = DualModeEngine(d)
    try:
        assert not eng.supports("rect") and eng.supports("square")
        with pytest.raises(ConfigError, match="rect"):
            eng.infer([frames["dog.jpg"]], "high", "rect")
        imgs = [frames["dog.jpg"], frames["kitti_000008.png"]]  # frame by frame when the batch is fixed
        res = eng.infer(imgs, "high")
        for img, det in zip(imgs, res.detections):
            _same_detections(det, eng.infer([img], "high").detections[0])
    finally:
        eng.close()


# ---------------------------------------------------------------- manifest checks


def test_load_manifest_round_trip(yolox_engine_dir: Path) -> None:
    man = Manifest.load(yolox_engine_dir)
    on_disk = json.loads((yolox_engine_dir / "manifest.json").read_text())
    assert man.to_dict() == on_disk
    assert man.format_version == 1
    assert {"high", "int8", "int8_trt"} <= set(man.variants)


def test_tampered_variant_is_refused(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    with (d / "int8.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="sha256") as exc:
        Manifest.load(d)
    assert "int8.onnx" in str(exc.value)
    with pytest.raises(ManifestError, match="sha256"):
        DualModeEngine(d)
    Manifest.load(d, verify=False)  # the checksum is what catches it


def test_missing_manifest(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    (d / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest"):
        Manifest.load(d)


def test_missing_variant(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    (d / "high.onnx").unlink()
    with pytest.raises(ManifestError, match="high"):
        DualModeEngine(d)


def test_variant_missing_from_manifest(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    man = json.loads((d / "manifest.json").read_text())
    del man["variants"]["int8"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="int8"):
        Manifest.load(d)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_bad_format_version(yolox_engine_dir: Path, tmp_path: Path, version: object) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    man = json.loads((d / "manifest.json").read_text())
    man["format_version"] = version
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError, match="format"):
        Manifest.load(d)


def test_malformed_manifest(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    (d / "manifest.json").write_text('{"format_version": 1, "variants": ')
    with pytest.raises(ManifestError, match="manifest"):
        Manifest.load(d)


def test_manifest_without_model_description(yolox_engine_dir: Path, tmp_path: Path) -> None:
    d = _copy_engine(yolox_engine_dir, tmp_path / "eng")
    man = json.loads((d / "manifest.json").read_text())
    del man["model"]["spec"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ManifestError):
        Manifest.load(d)


def test_engine_on_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not_built"):
        DualModeEngine(tmp_path / "not_built")


# ---------------------------------------------------------------- manifest content and variant files


def test_manifest_content(yolox_engine_dir: Path, testdata: Path) -> None:
    man = Manifest.load(yolox_engine_dir)
    model = man.model
    assert model.sha256 == _sha256(testdata / "models" / "yolox_nano.onnx")
    assert model.family == "yolox" and model.input_hw == (416, 416)
    assert model.num_classes == 80 and model.num_anchors == 3549
    for name, entry in man.variants.items():
        assert entry.sha256 == _sha256(yolox_engine_dir / entry.file), name
    assert man.variants["int8"].file == "int8.onnx"
    assert man.variants["int8_trt"].file == "int8_trt.onnx"
    cal = man.sections["calibration"]
    assert cal["method"] == "percentile"
    assert cal["frames"] == len([p for p in (testdata / "images").iterdir() if p.suffix in (".jpg", ".png")]) == 6
    mp = man.sections["mixed_precision"]
    assert mp["kept_nodes"], "some layers are kept in high precision"
    assert 0 < mp["units_kept"] < mp["units_total"]
    agree = man.sections["agreement"]["int8_vs_high_held_out"]
    assert 0.0 <= agree["recall"] <= 1.0 and 0.0 <= agree["precision"] <= 1.0 and agree["n_ref"] > 0
    lat = man.sections["latency_ms"]
    assert lat["high"] > 0 and lat["int8"] > 0
    lo, hi = lat["speedup_ci"]
    assert lo <= lat["speedup"] <= hi and lat["rounds"] >= 5
    # the verdict is what the interval says against the threshold (undecided when it straddles it)
    t, eps = lat["min_speedup"], 0.0005  # the record is rounded to 3 decimals
    if lat["int8_verdict"] == "pays":
        assert lo >= t - eps
    elif lat["int8_verdict"] == "does_not_pay":
        assert hi <= t + eps
    else:
        assert lo <= t + eps and hi >= t - eps and lat["rounds"] == 12
    tools = man.sections["tools"]
    for key in ("dpa_perception", "onnx", "onnxruntime", "numpy", "python"):
        assert isinstance(tools.get(key), str) and tools[key][0].isdigit(), key


def _zero_point(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise AssertionError(f"zero point {name} not found")


def _activation_zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert qs, f"{path.name} has no activation QuantizeLinear"
    return [_zero_point(model, n.input[2]) for n in qs]


def test_int8_files_are_qdq(yolox_engine_dir: Path) -> None:
    for f in ("int8.onnx", "int8_trt.onnx"):
        ops = {n.op_type for n in onnx.load(str(yolox_engine_dir / f)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, f
    ops = {n.op_type for n in onnx.load(str(yolox_engine_dir / "high.onnx")).graph.node}
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops


def test_trt_variant_has_symmetric_int8_activations(yolox_engine_dir: Path) -> None:
    zps = _activation_zero_points(yolox_engine_dir / "int8_trt.onnx")
    assert all(z.dtype == np.int8 for z in zps)
    assert all((z == 0).all() for z in zps)


def test_cpu_variant_has_uint8_activations(yolox_engine_dir: Path) -> None:
    zps = _activation_zero_points(yolox_engine_dir / "int8.onnx")
    assert all(z.dtype == np.uint8 for z in zps)
    assert any((z != 0).any() for z in zps)  # asymmetric: not all zero points sit at 0


def test_kept_convs_stay_float_and_others_are_quantized(yolox_engine_dir: Path) -> None:
    man = Manifest.load(yolox_engine_dir)
    kept = set(man.sections["mixed_precision"]["kept_nodes"])
    for f in ("int8.onnx", "int8_trt.onnx"):
        model = onnx.load(str(yolox_engine_dir / f))
        producer = {o: n for n in model.graph.node for o in n.output}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert len(convs) == man.sections["mixed_precision"]["units_total"]
        for n in convs:
            w = producer.get(n.input[1])
            quantized = w is not None and w.op_type == "DequantizeLinear"
            assert quantized == (n.name not in kept), f"{f}: {n.name}"


def test_precision_report(yolox_engine_dir: Path) -> None:
    man = Manifest.load(yolox_engine_dir)
    kept_nodes = set(man.sections["mixed_precision"]["kept_nodes"])
    png = yolox_engine_dir / "precision_report.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((yolox_engine_dir / "precision_report.json").read_text())
    units = report["units"]
    assert len(units) == man.sections["mixed_precision"]["units_total"]
    kept = [u for u in units if u["kept"]]
    assert len(kept) == man.sections["mixed_precision"]["units_kept"] > 0
    for u in units:
        assert (u["name"] in kept_nodes) == u["kept"], u["name"]
        if u["kept"]:
            assert set(u["nodes"]) <= kept_nodes
            assert u["reasons"]
    assert all(u["sensitivity"] is None or u["sensitivity"] >= 0 for u in units)
    assert report["error_by_kept_count"]


def test_int8_score_offset_recorded_and_applied(yolox_engine_dir: Path, engine: DualModeEngine, frames: dict) -> None:
    manifest = Manifest.load(yolox_engine_dir)
    offset = manifest.variants["int8"].score_offset
    assert 0.0 <= offset <= 0.1
    assert "score_offset" not in manifest.to_dict()["variants"]["high"]
    assert engine.score_offsets == {"int8": offset, "high": 0.0}
    assert "int8_vs_high_held_out_without_score_offset" in manifest.sections["agreement"]
    img = frames["uadetrac_MVI_20011_img00001.jpg"]
    calibrated = engine.infer([img], "int8").detections[0]
    engine.score_offsets = {"int8": 0.0, "high": 0.0}
    try:
        raw = engine.infer([img], "int8").detections[0]
    finally:
        engine.score_offsets = {"int8": offset, "high": 0.0}
    assert len(calibrated) >= len(raw)
    np.testing.assert_allclose(calibrated.scores[: len(raw)].max(), min(raw.scores.max() + offset, 1.0), atol=1e-5)


def test_engine_takes_the_int8_verdict_from_its_manifest(yolox_engine_dir: Path, tmp_path: Path) -> None:
    """A folder whose build measured INT8 no faster: the engine says so, and auto runs high precision."""
    from dpa_perception.core.pipeline import Pipeline, PipelineConfig

    folder = tmp_path / "engine"
    shutil.copytree(yolox_engine_dir, folder)
    d = json.loads((folder / "manifest.json").read_text())
    d["latency_ms"].update(int8_verdict="does_not_pay", speedup=0.96, speedup_ci=[0.93, 0.99])
    (folder / "manifest.json").write_text(json.dumps(d))
    engine = DualModeEngine(folder)
    try:
        assert engine.int8_pays is False
        assert "does not pay" in engine.describe()["int8"] and "auto runs high precision" in engine.describe()["int8"]
        p = Pipeline(engine, PipelineConfig(latency_budget_ms=5_000.0))
        assert p.governor.int8_pays is False
        p.submit("cam", np.full((240, 320, 3), 128, np.uint8), p.clock_ns())
        (r,) = p.step()
        assert (r.status, r.mode, r.reason) == ("processed", "high", "int8_does_not_pay")
    finally:
        engine.close()
    built = DualModeEngine(yolox_engine_dir)  # as built here: what this machine measured
    try:
        assert built.int8_pays is (Manifest.load(yolox_engine_dir).int8_verdict()[0] == "pays")
    finally:
        built.close()


def test_kept_buffers_never_alias_results(warm_yolox_engine: DualModeEngine, testdata: Path) -> None:
    """Input and output buffers are reused per batch size, canvas and thread: results of one call are
    not changed by the next, and two threads inferring at once each get their own frame's answer."""
    import threading

    from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession

    images = [cv2.imread(str(p)) for p in sorted((testdata / "images").glob("*.jpg"))[:2]]
    alone = [warm_yolox_engine.infer([img], "high").detections[0] for img in images]
    first = warm_yolox_engine.infer([images[0]], "high").detections[0]
    warm_yolox_engine.infer([images[1]], "high")
    assert np.array_equal(first.boxes, alone[0].boxes)  # not overwritten by the next call
    session = warm_yolox_engine.sessions["high"]
    assert isinstance(session, OnnxRuntimeSession)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    a = session.run_reusing(x).copy()
    b = session.run_reusing(x)
    assert session.run_reusing(x) is b and np.allclose(a, b, atol=1e-4) and np.allclose(session.run(x), b, atol=1e-4)
    got: dict[int, list[Detections]] = {0: [], 1: []}

    def work(k: int) -> None:
        for _ in range(5):
            got[k].append(warm_yolox_engine.infer([images[k]], "high").detections[0])

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        assert all(np.allclose(d.boxes, alone[k].boxes, atol=1e-3) for d in got[k]), k


def test_an_engine_of_one_mode_loads_only_that_variant(yolox_engine_dir: Path) -> None:
    engine = DualModeEngine(yolox_engine_dir, modes=("high",))
    try:
        assert list(engine.sessions) == ["high"]
        engine.warmup(1)
        assert len(engine.infer([np.full((240, 320, 3), 90, np.uint8)], "high").detections) == 1
        with pytest.raises(ConfigError, match="not loaded"):
            engine.infer([np.zeros((240, 320, 3), np.uint8)], "int8")
    finally:
        engine.close()
    with pytest.raises(ConfigError, match="modes must be"):
        DualModeEngine(yolox_engine_dir, modes=("fp16",))  # type: ignore[arg-type]


def test_the_optimised_graph_cache_loads_the_same_model_faster_and_survives_damage(yolox_engine_dir: Path,
                                                                                  tmp_path: Path) -> None:
    from dpa_perception.backends.base import Placement
    from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession

    path = yolox_engine_dir / "int8.onnx"
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    plain = OnnxRuntimeSession(path, Placement("cpu")).run(x)
    first = OnnxRuntimeSession(path, Placement("cpu"), cache_dir=tmp_path / "c")
    assert not first.from_cache and len(list((tmp_path / "c").glob("*.onnx"))) == 1
    again = OnnxRuntimeSession(path, Placement("cpu"), cache_dir=tmp_path / "c")
    assert again.from_cache and again.describe()["optimised_graph_cached"] is True
    from dpa_perception.core.manifest import sha256_file

    # the engine passes the checksum its manifest load verified: the same cache entry as dpa-build's
    assert OnnxRuntimeSession(path, Placement("cpu"), cache_dir=tmp_path / "c", file_sha256=sha256_file(path)).from_cache
    np.testing.assert_allclose(again.run(x), plain, atol=1e-4)
    (cached,) = (tmp_path / "c").glob("*.onnx")
    cached.write_bytes(b"not a model")  # damaged: optimised again, never an error
    third = OnnxRuntimeSession(path, Placement("cpu"), cache_dir=tmp_path / "c")
    assert not third.from_cache
    np.testing.assert_allclose(third.run(x), plain, atol=1e-4)
    (tmp_path / "file").write_text("x")  # a cache dir that cannot be made: a plain load
    assert not OnnxRuntimeSession(path, Placement("cpu"), cache_dir=tmp_path / "file" / "c").from_cache


def test_ort_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dpa_perception.backends.onnxruntime_backend import ort_cache_dir

    monkeypatch.setenv("DPA_ORT_CACHE", "off")
    assert ort_cache_dir() is None
    monkeypatch.setenv("DPA_ORT_CACHE", str(tmp_path))
    assert ort_cache_dir() == tmp_path
    monkeypatch.delenv("DPA_ORT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ort_cache_dir() == tmp_path / "x" / "dpa_perception" / "ort"

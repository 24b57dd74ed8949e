"""The Ultralytics path on the real-weight YOLO11n (shared, 320): the engine folder dpa-build makes
of it, high precision against the reference detections, and INT8 against high precision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from engine_cache import TESTDATA, cached_engine_dir

from dpa_perception.build.metrics import Agreement, agreement, iou_matrix
from dpa_perception.build.sensitivity import fragile_nodes
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.inference.engine import DualModeEngine

MODEL = TESTDATA / "models" / "yolo11n_coco_fp32_deq_320.onnx"
REFERENCE = TESTDATA / "expected" / "yolo11n_reference.json"


@pytest.fixture(scope="module")
def folder() -> Path:
    return cached_engine_dir(MODEL)


@pytest.fixture(scope="module")
def engine(folder: Path) -> Iterator[DualModeEngine]:
    """Decoded like the reference file: score > 0.1, class-aware NMS at IoU 0.7, 300 at most."""
    eng = DualModeEngine(folder, decode=DecodeConfig(score_threshold=0.1, nms_iou=0.7, max_detections=300))
    yield eng
    eng.close()


def images() -> dict[str, np.ndarray]:
    ref = json.loads(REFERENCE.read_text())["images"]
    return {name: cv2.imread(str(TESTDATA / "images" / name)) for name in sorted(ref)}


def test_the_build_reads_the_ultralytics_export(folder: Path) -> None:
    m = Manifest.load(folder)
    assert m.model.family == "yolov8" and m.model.input_hw == (320, 320)
    assert m.model.spec.class_names[:3] == ("person", "bicycle", "car")  # from the Ultralytics metadata
    assert m.model.dynamic_batch, "a static-batch export is made dynamic"
    fragile = m.sections["mixed_precision"]["fragile_nodes_kept"]
    assert {"/model.10/m/m.0/attn/MatMul", "/model.10/m/m.0/attn/Softmax"} <= set(fragile)  # the C2PSA attention
    assert m.sections["latency_ms"]["int8_verdict"] in ("pays", "does_not_pay", "undecided")


def test_fragile_nodes_are_attention_and_normalisation_not_convolutions() -> None:
    import onnx

    model = onnx.load(str(MODEL))
    fragile = fragile_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert fragile and {ops[n] for n in fragile} <= {"MatMul", "Softmax", "Div"}
    assert not any(ops[n] == "Conv" for n in fragile)


@pytest.mark.parametrize("name", sorted(json.loads(REFERENCE.read_text())["images"]))
def test_high_mode_reproduces_the_reference(name: str, engine: DualModeEngine) -> None:
    ref = json.loads(REFERENCE.read_text())["images"][name]["detections"]
    img = cv2.imread(str(TESTDATA / "images" / name))
    det = engine.infer([img], "high").detections[0]
    strong = [d for d in ref if d["score"] >= 0.25]
    if not strong:
        assert not (det.scores >= 0.3).any(), f"{name}: the reference has nothing at 0.25"
        return
    ious = iou_matrix(np.array([d["box_xyxy"] for d in strong], np.float32), det.boxes)
    for i, d in enumerate(strong):
        cand = np.where(det.class_ids == d["class_id"], ious[i], 0.0)
        j = int(cand.argmax())
        assert cand[j] >= 0.97, f"{name}: reference {d} not found (best IoU {cand[j]:.3f})"
        assert float(det.scores[j]) == pytest.approx(d["score"], abs=0.01), f"{name}: {d} scored {det.scores[j]:.4f}"


def test_int8_agrees_with_high_on_real_street_images(engine: DualModeEngine, record_property) -> None:
    imgs = images()
    total = Agreement()
    for img in imgs.values():
        high = engine.infer([img], "high").detections[0]
        int8 = engine.infer([img], "int8").detections[0]
        total += agreement(high, int8, iou=0.5, min_score=0.25, class_aware=True)
    record_property("yolo11n_int8_vs_high", total.as_dict())
    print(f"\nYOLO11n INT8 vs high (IoU 0.5, score 0.25, class-aware): {total.as_dict()}")
    assert total.n_ref >= 15
    assert total.recall >= 0.88 and total.precision >= 0.88, total.as_dict()  # a floor against regressions (0.94 / 0.94 here)

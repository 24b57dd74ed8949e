"""Letterboxing, coordinate mapping, decoding of hand-made YOLOX / YOLOv8 outputs and NMS."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.build.model_detect import detect_spec
from dpa_perception.core.errors import ConfigError, ImageError
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.postprocess import DecodeConfig, anchor_scores, decode_batch, nms
from dpa_perception.core.preprocess import (
    LetterboxInfo,
    canvas_hw,
    check_frame,
    letterbox_batch,
    resized_hw,
    unletterbox,
)


@pytest.fixture(scope="module")
def yolox_spec(testdata: Path) -> ModelSpec:
    return detect_spec(testdata / "models" / "yolox_nano.onnx")


@pytest.fixture(scope="module")
def yolov8_spec(testdata: Path) -> ModelSpec:
    return detect_spec(testdata / "models" / "yolov8n_random_calibrated_640.onnx")


def _solid(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bgr
    return img


# ---------------------------------------------------------------- letterbox


def test_yolox_letterbox_top_left_bgr_unscaled(yolox_spec: ModelSpec) -> None:
    frame = _solid(100, 200, (10, 20, 30))  # r = min(416/100, 416/200) = 2.08 -> 208 x 416
    batch, infos = letterbox_batch([frame], yolox_spec, (416, 416))
    assert batch.shape == (1, 3, 416, 416) and batch.dtype == np.float32
    info = infos[0]
    assert info.ratio == pytest.approx(2.08)
    assert (info.pad_x, info.pad_y) == (0.0, 0.0)
    assert info.src_hw == (100, 200)
    # image in rows 0..207, BGR order, values 0..255
    expected = np.broadcast_to(np.array([10, 20, 30], np.float32)[:, None, None], (3, 208, 416))
    np.testing.assert_array_equal(batch[0, :, :208, :], expected)
    np.testing.assert_array_equal(batch[0, :, 208:, :], 114.0)


def test_yolov8_letterbox_centre_rgb_scaled(yolov8_spec: ModelSpec) -> None:
    frame = _solid(100, 200, (10, 20, 30))  # r = 3.2 -> 320 x 640, pad (640 - 320) / 2 = 160 above and below
    batch, infos = letterbox_batch([frame], yolov8_spec, (640, 640))
    info = infos[0]
    assert info.ratio == pytest.approx(3.2)
    assert (info.pad_x, info.pad_y) == (0.0, 160.0)
    rgb = np.array([30, 20, 10], np.float32) / 255.0
    np.testing.assert_allclose(batch[0, :, 160:480, :], rgb[:, None, None] * np.ones((1, 320, 640)), rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, :160, :], 114 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(batch[0, :, 480:, :], 114 / 255.0, rtol=1e-6)


def test_letterbox_places_content_where_info_says(yolox_spec: ModelSpec, yolov8_spec: ModelSpec) -> None:
    """A white square in a black frame lands at frame * ratio + pad on the canvas."""
    frame = np.zeros((300, 500, 3), np.uint8)
    frame[100:200, 250:350] = 255
    for spec in (yolox_spec, yolov8_spec):
        batch, (info,) = letterbox_batch([frame], spec, spec.input_hw)
        plane = batch[0, 0] / spec.scale
        ys, xs = np.nonzero(plane > 200)
        assert ys.min() == pytest.approx(100 * info.ratio + info.pad_y, abs=1.5)
        assert ys.max() + 1 == pytest.approx(200 * info.ratio + info.pad_y, abs=1.5)
        assert xs.min() == pytest.approx(250 * info.ratio + info.pad_x, abs=1.5)
        assert xs.max() + 1 == pytest.approx(350 * info.ratio + info.pad_x, abs=1.5)


def test_resized_size_rounding(yolox_spec: ModelSpec, yolov8_spec: ModelSpec) -> None:
    # 375 x 1242: YOLOX r = 416/1242 -> 375 r = 125.6 (floor 125); YOLOv8 r = 640/1242 -> 193.2 (round 193)
    assert resized_hw((375, 1242), yolox_spec) == (125, 416)
    assert resized_hw((375, 1242), yolov8_spec) == (193, 640)
    # 364 x 500 in YOLOv8: 364 * 1.28 = 465.92 -> round 466, floor would give 465
    assert resized_hw((364, 500), yolov8_spec) == (466, 640)


def test_rect_canvas_for_960x540(yolox_spec: ModelSpec) -> None:
    assert canvas_hw([(540, 960)], yolox_spec, "rect") == (256, 416)
    assert canvas_hw([(540, 960)], yolox_spec, "square") == (416, 416)


def test_rect_canvas_covers_every_frame_of_a_batch(yolox_spec: ModelSpec) -> None:
    sizes = [(540, 960), (375, 1242), (900, 900), (1000, 300)]
    for hw in sizes:
        ch, cw = canvas_hw([hw], yolox_spec, "rect")
        nh, nw = resized_hw(hw, yolox_spec)
        assert ch % 32 == 0 and cw % 32 == 0
        assert nh <= ch < nh + 32 or ch == 32
        assert nw <= cw < nw + 32 or cw == 32
    ch, cw = canvas_hw(sizes, yolox_spec, "rect")
    assert (ch, cw) == (416, 416)  # the square frame needs all of it
    assert canvas_hw([(540, 960), (375, 1242)], yolox_spec, "rect") == (256, 416)


def test_canvas_bad_policy(yolox_spec: ModelSpec) -> None:
    with pytest.raises(ConfigError):
        canvas_hw([(540, 960)], yolox_spec, "wide")


def test_check_frame() -> None:
    gray = np.full((4, 5), 7, np.uint8)
    out = check_frame(gray)
    assert out.shape == (4, 5, 3) and (out == 7).all()
    with pytest.raises(ImageError):
        check_frame(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ImageError):
        check_frame(np.zeros((4, 5, 4), np.uint8))
    with pytest.raises(ImageError):
        check_frame(np.zeros((0, 5, 3), np.uint8))


# ---------------------------------------------------------------- coordinate mapping


@pytest.mark.parametrize("which", ["yolox", "yolov8"])
@pytest.mark.parametrize("hw", [(540, 960), (900, 600), (375, 1242)])
def test_unletterbox_round_trip(which: str, hw: tuple[int, int], yolox_spec: ModelSpec, yolov8_spec: ModelSpec) -> None:
    spec = yolox_spec if which == "yolox" else yolov8_spec
    frame = np.zeros((*hw, 3), np.uint8)
    _, (info,) = letterbox_batch([frame], spec, spec.input_hw)
    h, w = hw
    orig = np.array([[0, 0, w, h], [w * 0.1, h * 0.2, w * 0.5, h * 0.9], [10, 20, 30, 40]], np.float32)
    canvas = orig.copy()
    canvas[:, [0, 2]] = orig[:, [0, 2]] * info.ratio + info.pad_x
    canvas[:, [1, 3]] = orig[:, [1, 3]] * (info.ratio if info.ratio_y is None else info.ratio_y) + info.pad_y
    if which == "yolov8":  # Ultralytics' exact inverse: each axis by its rounded resized size
        assert (info.ratio, info.ratio_y) == (round(w * min(640 / h, 640 / w)) / w, round(h * min(640 / h, 640 / w)) / h)
    # the whole frame fits inside the canvas
    assert canvas.min() >= 0 and canvas[:, [0, 2]].max() <= spec.input_hw[1] + 1e-3
    assert canvas[:, [1, 3]].max() <= spec.input_hw[0] + 1e-3
    np.testing.assert_allclose(unletterbox(canvas, info), orig, atol=1e-3)


def test_unletterbox_centre_known_values() -> None:
    info = LetterboxInfo(ratio=0.5, pad_x=0.0, pad_y=140.0, src_hw=(720, 1280))
    boxes = np.array([[270, 295, 370, 345]], np.float32)
    np.testing.assert_allclose(unletterbox(boxes, info), [[540, 310, 740, 410]])


def test_unletterbox_clips_to_frame() -> None:
    info = LetterboxInfo(ratio=0.5, pad_x=10.0, pad_y=140.0, src_hw=(720, 1280))
    boxes = np.array([[0, 100, 700, 900], [-50, 130, 20, 150]], np.float32)
    out = unletterbox(boxes, info)
    np.testing.assert_allclose(out, [[0, 0, 1280, 720], [0, 0, 20, 20]])
    assert boxes[0, 0] == 0 and boxes[0, 2] == 700  # input not modified


# ---------------------------------------------------------------- YOLOv8 decode


def test_yolov8_decode_hand_made(yolov8_spec: ModelSpec) -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)  # r = 0.5 -> 360 x 640 at pad_y = 140
    _, infos = letterbox_batch([frame], yolov8_spec, (640, 640))
    assert (infos[0].pad_x, infos[0].pad_y, infos[0].ratio) == (0.0, 140.0, 0.5)
    out = np.zeros((1, 84, 8400), np.float32)
    # column 100: class 5 at 0.9, canvas box cx 320 cy 320 w 100 h 50 -> original (540, 310, 740, 410)
    out[0, :4, 100] = (320, 320, 100, 50)
    out[0, 4 + 5, 100] = 0.9
    out[0, 4 + 3, 100] = 0.4  # a weaker second class on the same anchor: class 5 wins
    # column 200: same class, nearly the same box, lower score -> suppressed by NMS
    out[0, :4, 200] = (322, 321, 100, 50)
    out[0, 4 + 5, 200] = 0.6
    # column 300: class 2 at 0.8, canvas (550, 130, 650, 170) -> (1100, -20, 1300, 60), clipped to the frame
    out[0, :4, 300] = (600, 150, 100, 40)
    out[0, 4 + 2, 300] = 0.8
    # column 400: below the threshold
    out[0, :4, 400] = (100, 300, 20, 20)
    out[0, 4 + 7, 400] = 0.2
    (det,) = decode_batch(out, yolov8_spec, (640, 640), infos, DecodeConfig(score_threshold=0.3))
    assert len(det) == 2
    np.testing.assert_array_equal(det.class_ids, [5, 2])
    np.testing.assert_allclose(det.scores, [0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(det.boxes, [[540, 310, 740, 410], [1100, 0, 1280, 60]], atol=1e-3)


def test_score_offset_shifts_scores_and_admits_borderline_candidates(yolov8_spec: ModelSpec) -> None:
    infos = [LetterboxInfo(1.0, 0.0, 0.0, (640, 640))]
    out = np.zeros((1, 84, 8400), np.float32)
    out[0, :4, 10] = (100, 100, 40, 40)
    out[0, 4 + 2, 10] = 0.28  # just under the 0.3 threshold
    out[0, :4, 20] = (400, 400, 40, 40)
    out[0, 4 + 0, 20] = 0.99  # shifted past 1.0: capped
    cfg = DecodeConfig(score_threshold=0.3)
    (plain,) = decode_batch(out, yolov8_spec, (640, 640), infos, cfg)
    (shifted,) = decode_batch(out, yolov8_spec, (640, 640), infos, cfg, score_offset=0.03)
    np.testing.assert_allclose(plain.scores, [0.99], rtol=1e-6)
    np.testing.assert_allclose(shifted.scores, [1.0, 0.31], rtol=1e-6)
    np.testing.assert_array_equal(shifted.class_ids, [0, 2])


def test_yolov8_decode_class_filter_and_cap(yolov8_spec: ModelSpec) -> None:
    infos = [LetterboxInfo(1.0, 0.0, 0.0, (640, 640))]
    out = np.zeros((1, 84, 8400), np.float32)
    for i in range(10):  # ten separate boxes, classes alternate 0 / 1
        out[0, :4, i] = (30 + 60 * i, 100, 40, 40)
        out[0, 4 + i % 2, i] = 0.5 + 0.04 * i
    cfg = DecodeConfig(score_threshold=0.3, class_filter=frozenset({1}))
    (det,) = decode_batch(out, yolov8_spec, (640, 640), infos, cfg)
    assert len(det) == 5 and set(det.class_ids.tolist()) == {1}
    (det,) = decode_batch(out, yolov8_spec, (640, 640), infos, DecodeConfig(score_threshold=0.3, max_detections=3))
    assert len(det) == 3
    np.testing.assert_allclose(det.scores, [0.86, 0.82, 0.78], rtol=1e-5)  # the best three, best first


def test_yolov8_real_model_output_decodes(testdata: Path, yolov8_spec: ModelSpec) -> None:
    """The real YOLOv8n export's output fits the spec and decodes to boxes inside the frame."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(testdata / "models" / "yolov8n_random_calibrated_640.onnx"),
                                providers=["CPUExecutionProvider"])  # fmt: skip
    frame = cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    batch, infos = letterbox_batch([frame], yolov8_spec, yolov8_spec.input_hw)
    out = sess.run(None, {yolov8_spec.input_name: batch})[0]
    assert out.shape == (1, 4 + yolov8_spec.num_classes, yolov8_spec.num_anchors)
    (det,) = decode_batch(out, yolov8_spec, yolov8_spec.input_hw, infos, DecodeConfig(score_threshold=0.25))
    assert len(det) > 0
    assert (det.boxes[:, [0, 2]] >= 0).all() and (det.boxes[:, [0, 2]] <= 960).all()
    assert (det.boxes[:, [1, 3]] >= 0).all() and (det.boxes[:, [1, 3]] <= 540).all()
    assert (det.scores > 0.25).all()
    assert anchor_scores(out, yolov8_spec).shape == (1, 8400)


# ---------------------------------------------------------------- YOLOX decode


def test_yolox_decode_hand_made(yolox_spec: ModelSpec) -> None:
    out = np.zeros((1, 3549, 85), np.float32)
    # stride 16 grid (26 x 26) starts after the 52 x 52 stride-8 rows; cell gx=3, gy=5
    row = 52 * 52 + 5 * 26 + 3
    out[0, row, :4] = (0.5, 0.25, math.log(2.0), 0.0)  # centre ((3.5, 5.25) * 16) = (56, 84), size (32, 16)
    out[0, row, 4] = 0.9
    out[0, row, 5 + 7] = 0.8
    out[0, row, 5 + 2] = 0.5
    # stride 8 cell gx=10, gy=0 with a low score
    out[0, 10, 4] = 0.5
    out[0, 10, 5] = 0.5  # 0.25 < 0.3
    info = LetterboxInfo(0.5, 0.0, 0.0, (832, 832))  # an 832 x 832 frame at r = 0.5, top-left
    (det,) = decode_batch(out, yolox_spec, (416, 416), [info], DecodeConfig(score_threshold=0.3))
    assert len(det) == 1
    assert det.class_ids[0] == 7
    assert det.scores[0] == pytest.approx(0.72, rel=1e-6)
    # canvas (40, 76, 72, 92) / 0.5
    np.testing.assert_allclose(det.boxes[0], [80, 152, 144, 184], atol=1e-3)


def test_yolox_decode_last_stride_cell(yolox_spec: ModelSpec) -> None:
    out = np.zeros((1, 3549, 85), np.float32)
    row = 3549 - 1  # stride 32, cell gx=12, gy=12 (the bottom-right one)
    out[0, row, :4] = (0.0, 0.0, 0.0, 0.0)  # centre (384, 384), size 32
    out[0, row, 4] = 1.0
    out[0, row, 5] = 0.95
    info = LetterboxInfo(1.0, 0.0, 0.0, (416, 416))
    (det,) = decode_batch(out, yolox_spec, (416, 416), [info], DecodeConfig())
    np.testing.assert_allclose(det.boxes, [[368, 368, 400, 400]], atol=1e-3)


def test_yolox_decode_on_rect_canvas(yolox_spec: ModelSpec) -> None:
    hw = (256, 416)
    n = (32 * 52) + (16 * 26) + (8 * 13)
    out = np.zeros((1, n, 85), np.float32)
    row = 32 * 52 + 16 * 26 + 2 * 13 + 5  # stride 32, gx=5, gy=2: centre (160, 64), size 32
    out[0, row, 4] = 0.9
    out[0, row, 5 + 1] = 0.9
    info = LetterboxInfo(1.0, 0.0, 0.0, hw)
    (det,) = decode_batch(out, yolox_spec, hw, [info], DecodeConfig())
    np.testing.assert_allclose(det.boxes, [[144, 48, 176, 80]], atol=1e-3)
    with pytest.raises(ConfigError):
        decode_batch(out, yolox_spec, (416, 416), [info], DecodeConfig())  # rows do not fit the canvas


def test_decode_config_validation() -> None:
    for bad in (DecodeConfig(score_threshold=1.5), DecodeConfig(nms_iou=0.0), DecodeConfig(max_detections=0)):
        with pytest.raises(ConfigError):
            bad.validate()
    DecodeConfig().validate()


# ---------------------------------------------------------------- NMS


def _overlapping() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([
        [0, 0, 100, 100],     # 0: class 0, 0.9
        [5, 5, 105, 105],     # 1: class 1, 0.8 - overlaps 0 (IoU ~0.82) but another class
        [10, 0, 110, 100],    # 2: class 0, 0.7 - overlaps 0 (IoU ~0.82), same class
        [300, 300, 350, 350], # 3: class 1, 0.6 - alone
        [0, 0, 100, 60],      # 4: class 0, 0.95 - IoU with 0 is 0.6
    ], np.float32)  # fmt: skip
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    classes = np.array([0, 1, 0, 1, 0], np.int64)
    return boxes, scores, classes


def test_nms_class_aware() -> None:
    boxes, scores, classes = _overlapping()
    keep = nms(boxes, scores, classes, iou=0.45, agnostic=False)
    # 4 (0.95) suppresses 0 (IoU 0.6) and 2 (IoU 5400 / 10600 = 0.51); class 1 boxes untouched
    assert keep.tolist() == [4, 1, 3]


def test_nms_class_agnostic() -> None:
    boxes, scores, classes = _overlapping()
    keep = nms(boxes, scores, classes, iou=0.45, agnostic=True)
    # 4 suppresses 0 and 2; 1 vs 4: inter 95*55=5225, union 6000+10000-5225 -> 0.48 -> suppressed
    assert keep.tolist() == [4, 3]


def test_nms_higher_iou_threshold_keeps_more() -> None:
    boxes, scores, classes = _overlapping()
    keep = nms(boxes, scores, classes, iou=0.9, agnostic=True)
    assert keep.tolist() == [4, 0, 1, 2, 3]


def test_nms_empty() -> None:
    keep = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.45, False)
    assert keep.shape == (0,)


def test_decode_agnostic_flag_reaches_nms(yolov8_spec: ModelSpec) -> None:
    infos = [LetterboxInfo(1.0, 0.0, 0.0, (640, 640))]
    out = np.zeros((1, 84, 8400), np.float32)
    out[0, :4, 0] = (100, 100, 100, 100)
    out[0, 4 + 2, 0] = 0.9  # car
    out[0, :4, 1] = (102, 101, 100, 100)
    out[0, 4 + 7, 1] = 0.8  # truck on the same object
    (aware,) = decode_batch(out, yolov8_spec, (640, 640), infos, DecodeConfig())
    (agn,) = decode_batch(out, yolov8_spec, (640, 640), infos, DecodeConfig(class_agnostic=True))
    assert sorted(aware.class_ids.tolist()) == [2, 7]
    assert agn.class_ids.tolist() == [2]

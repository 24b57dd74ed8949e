"""The demo scene renderer (exact labels, determinism), the demo bag and the shipped demo detector."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dpa_perception.demo.scene import COCO_IDS, Obj, Scene, sample

ASSETS = Path(__file__).resolve().parents[1] / "dpa_perception" / "demo" / "assets"


def test_same_seed_same_frame_and_labels() -> None:
    for weather in ("clear", "fog", "rain", "night"):
        a_img, a_lab = Scene(11).frame(3.0, weather, 0.7)
        b_img, b_lab = Scene(11).frame(3.0, weather, 0.7)
        assert np.array_equal(a_img, b_img)
        assert np.array_equal(a_lab.boxes, b_lab.boxes) and np.array_equal(a_lab.class_ids, b_lab.class_ids)


def test_different_seed_or_time_differs() -> None:
    a_img, a_lab = Scene(11).frame(3.0)
    b_img, _b_lab = Scene(12).frame(3.0)
    c_img, c_lab = Scene(11).frame(4.0)
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lab.boxes, c_lab.boxes)  # things move


def test_labels_inside_image_and_non_degenerate() -> None:
    seen: set[int] = set()
    for seed in range(8):
        img, lab, _, _ = sample(seed)
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and img.shape == (360, 640, 3)
        assert len(lab) > 0
        b = lab.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) >= 3).all() and ((b[:, 3] - b[:, 1]) >= 4).all()
        assert set(lab.class_ids.tolist()) <= set(COCO_IDS.values())
        assert (lab.visible >= 0.25).all()
        seen |= set(lab.class_ids.tolist())
    assert {0, 1, 2} <= seen


def test_two_wheeler_oversampling_adds_bicycles_and_motorcycles_only() -> None:
    base = [sample(seed) for seed in range(20)]
    same = [sample(seed, two_wheelers=1.0) for seed in range(20)]
    more = [sample(seed, two_wheelers=2.0) for seed in range(20)]
    for (a_img, a_lab, a_w, _), (b_img, b_lab, b_w, _) in zip(base, same):  # 1.0: the scene's own mix, unchanged
        assert a_w == b_w and np.array_equal(a_img, b_img) and np.array_equal(a_lab.boxes, b_lab.boxes)

    def count(frames, cls: int) -> int:
        return sum(int((lab.class_ids == cls).sum()) for _, lab, _, _ in frames)

    for cls in (COCO_IDS["bicycle"], COCO_IDS["motorcycle"]):
        assert count(more, cls) >= 1.5 * count(base, cls) > 0
    for seed in range(5):  # the vehicles are placed before the two-wheelers: the very same ones
        a = [(o.kind, o.lane_x, o.z0) for o in Scene(seed).objects if o.kind in ("car", "van", "truck", "bus")]
        b = [(o.kind, o.lane_x, o.z0) for o in Scene(seed, two_wheelers=2.0).objects if o.kind in ("car", "van", "truck", "bus")]
        assert a == b and a


def _single(kind: str, cls: int, size, heading: float, z: float, x: float = -1.75) -> Scene:
    obj = Obj(kind, cls, x, z, 0.0, heading, size, (40, 40, 200), (90, 120, 170), 0.0, (4.0, 70.0))
    scene = Scene(5, objects=[obj], noise=False)
    scene.background = np.zeros_like(scene.background)
    return scene


@pytest.mark.parametrize("kind,cls,size,heading", [
    ("car", 2, (4.5, 1.8, 1.5), math.pi),
    ("bus", 5, (12.0, 2.5, 3.1), 0.0),
    ("truck", 7, (8.0, 2.4, 3.4), math.pi),
    ("person", 0, (0.35, 0.5, 1.8), 0.0),
    ("bicycle", 1, (1.75, 0.55, 1.05), math.pi / 2),
])
def test_box_is_the_extent_of_the_object_pixels(kind: str, cls: int, size, heading: float) -> None:
    for z in (12.0, 30.0):
        scene = _single(kind, cls, size, heading, z)
        img, lab, _ = scene.render(0.0)
        ys, xs = np.nonzero(img.any(2))
        assert len(lab) == 1 and lab.class_ids[0] == cls
        expected = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        assert np.abs(lab.boxes[0] - expected).max() <= 1.0, (kind, z, lab.boxes[0], expected)


def test_occluded_object_gets_its_visible_box() -> None:
    # a pedestrian walking behind a bus: the person's box shrinks to what is visible, or goes
    scene = Scene(3)
    for t in np.linspace(0, 20, 9):
        _img, lab, placed = scene.render(float(t))
        assert (lab.visible <= 1.0 + 1e-6).all()
        assert len(lab) <= len(placed)


def test_render_is_fast_enough() -> None:
    import time

    scene = Scene(1)
    scene.frame(0.0)
    t0 = time.perf_counter()
    for i in range(10):
        scene.frame(i * 0.1)
    assert (time.perf_counter() - t0) / 10 < 0.2  # generous: shared CI machines


def test_make_bag_writes_a_readable_mcap(tmp_path: Path) -> None:
    from dpa_perception.bags.reader import image_topics, iter_images
    from dpa_perception.demo.make_bag import main

    out = tmp_path / "bag"
    assert main([str(out), "--cameras", "1", "--seconds", "1", "--fps", "5", "--quiet"]) == 0
    assert list(out.glob("*.mcap")) and (out / "metadata.yaml").is_file()
    assert image_topics([out]) == {"/rsu/cam0/image_raw/compressed": "sensor_msgs/msg/CompressedImage"}
    msgs = list(iter_images([out]))
    assert len(msgs) == 5
    assert all(m.stamp_ns == m.log_time_ns for m in msgs)
    assert msgs[0].decode().shape == (360, 640, 3)

    from rosbags.highlevel import AnyReader

    with AnyReader([out]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {"/rsu/cam0/image_raw/compressed": 5, "/rsu/cam0/ground_truth": 5,
                      "/rsu/cam0/ground_truth/objects": 5, "/rsu/weather": 1}


def test_make_bag_raw_camera_and_timeline(tmp_path: Path) -> None:
    from dpa_perception.demo.make_bag import camera_topics, weather_at

    assert camera_topics(3)[-1] == ("/rsu/cam2/image_raw", "sensor_msgs/msg/Image")
    assert camera_topics(3)[0] == ("/rsu/cam0/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
    assert [weather_at(p)[0] for p in (0.1, 0.3, 0.6, 0.9)] == ["clear", "fog", "rain", "night"]


def test_shipped_model_matches_its_description() -> None:
    from dpa_perception.build.model_detect import detect_spec

    model = ASSETS / "demo_detector.onnx"
    assert model.is_file(), f"{model} is tracked in git and shipped with the package"
    spec = detect_spec(model)
    assert spec.family == "yolox" and spec.input_name == "images"
    assert spec.class_names == ("person", "bicycle", "car", "motorcycle", "bus", "truck")
    assert spec.num_classes == 6 and spec.letterbox == "top_left" and spec.size_rounding == "floor"
    assert abs(spec.scale - 1 / 255) < 1e-9
    assert model.stat().st_size < 5 * 2**20


def test_shipped_model_detects_objects_with_the_engine(tmp_path: Path) -> None:
    from engine_cache import demo_engine_dir

    from dpa_perception.demo.evaluate import eval_frames, mean_ap
    from dpa_perception.inference.engine import DualModeEngine

    model = ASSETS / "demo_detector.onnx"
    assert model.is_file(), f"{model} is tracked in git and shipped with the package"
    out = demo_engine_dir(tmp_path)  # the rendered frames are deterministic: cached
    images, gts = eval_frames(6, "clear")
    engine = DualModeEngine(out)
    try:
        for mode in ("high", "int8"):
            dets = [engine.infer([im], mode).detections[0] for im in images]  # type: ignore[arg-type]
            assert sum(len(d) for d in dets) > 0
            assert mean_ap(dets, gts, 6)["map"] > 0.3, mode
    finally:
        engine.close()

"""The demo's shared world: several cameras on one road and one traffic, 3D ground truth and surveyed points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from dpa_perception.demo import make_bag as mb
from dpa_perception.demo.scene import WRAP_ID_STRIDE, Scene, gt_object_id, shared_cameras

SEED = 4
FPS = 5.0


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "demo"
    info = mb.make_bag(out, cameras=2, seconds=1.0, fps=FPS, seed=SEED, progress=False)
    assert info["points"] == str(out.parent / "demo_points.yaml")
    return out


def _gt(bag: Path):
    from dpa_perception.bags.objects import read_objects

    return read_objects(bag)


def test_views_share_the_world_and_keep_single_scene_behaviour() -> None:
    world = Scene(11)
    same = world.view(world.cam)
    a, la = world.frame(2.0)
    b, lb = same.frame(2.0)
    assert np.array_equal(a, b) and np.array_equal(la.boxes, lb.boxes)  # a view through the scene's own camera
    np.testing.assert_array_equal(la.object_ids, lb.object_ids)
    cams = shared_cameras(11, 3)
    views = [world.view(c) for c in cams]
    assert all(v.objects is world.objects for v in views)
    assert len({(c.x, c.h, c.pitch_deg, c.yaw_deg) for c in cams}) == 3
    frames = [v.frame(2.0) for v in views]
    assert not np.array_equal(frames[0][0], frames[1][0])
    seen = [set(lab.object_ids.tolist()) for _, lab in frames]
    assert len(seen[0] & seen[1] & seen[2]) >= 3  # overlapping views
    for _, lab in frames:  # labels and object ids line up
        assert len(lab.object_ids) == len(lab) and len(set(lab.object_ids.tolist())) == len(lab)
        assert all(world.objects[i].cls == c for i, c in zip(lab.object_ids, lab.class_ids))


def test_ground_truth_ids_change_exactly_at_a_wrap() -> None:
    world = Scene(11)
    fast = max(range(len(world.objects)), key=lambda i: world.objects[i].speed)
    o = world.objects[fast]
    ts = np.arange(0.0, 30.0, 0.1)
    ys = np.array([world.world_state(fast, t)[1 if not o.cross else 0] for t in ts])
    ids = np.array([gt_object_id(fast, world.lap(o, t)) for t in ts])
    jumps = np.abs(np.diff(ys)) > 5.0
    assert jumps.any()
    np.testing.assert_array_equal(np.diff(ids) != 0, jumps)
    assert set(ids % WRAP_ID_STRIDE) == {fast}


def test_same_object_seen_by_two_cameras_in_one_frame(bag: Path) -> None:
    gt = _gt(bag)
    cam0, cam1 = gt["/rsu/cam0/ground_truth/objects"], gt["/rsu/cam1/ground_truth/objects"]
    assert len(cam0) == len(cam1) == 5
    for a, b in zip(cam0, cam1):
        assert b.stamp_ns - a.stamp_ns == 3_000_000 and a.frame_id == b.frame_id == "map"
        pa = {o.id: o for o in a.objects}
        pb = {o.id: o for o in b.objects}
        shared = sorted(set(pa) & set(pb))
        assert len(shared) >= 3
        for k in shared:  # one world: 3 ms apart, the same place to within a few centimetres
            assert math.hypot(pa[k].x - pb[k].x, pa[k].y - pb[k].y) < 0.05
            assert pa[k].class_id == pb[k].class_id and pa[k].size == pb[k].size


def test_ground_truth_positions_are_the_scene_objects(bag: Path) -> None:
    from dpa_perception.demo.scene import COCO_IDS

    world = Scene(SEED * 1000)
    views = [world.view(c) for c in shared_cameras(SEED, 2)]
    gt = _gt(bag)
    for k, view in enumerate(views):
        for i, m in enumerate(gt[f"/rsu/cam{k}/ground_truth/objects"]):
            t = (m.stamp_ns - mb.START_NS) / 1e9
            assert t == pytest.approx(i / FPS + k * 0.003)
            _, labels = view.frame(t)
            assert [int(o.id) % WRAP_ID_STRIDE for o in m.objects] == labels.object_ids.tolist()
            for o in m.objects:
                idx = int(o.id) % WRAP_ID_STRIDE
                obj = world.objects[idx]
                x, y, heading, _speed = world.world_state(idx, t)
                assert (o.x, o.y, o.z) == pytest.approx((x, y, 0.0), abs=1e-9)
                assert math.cos(o.yaw - heading) == pytest.approx(1.0, abs=1e-9)
                assert o.size == pytest.approx(obj.size) and o.class_id == str(obj.cls) and o.score == 1.0
                assert int(o.id) == gt_object_id(idx, world.lap(obj, t))
    # the heading convention: 0 = +x (east), pi/2 = +y (north, away from the cameras along the road)
    away = next(i for i, o in enumerate(world.objects) if not o.cross and o.parent < 0 and o.heading == 0.0 and o.speed > 0)
    assert world.world_state(away, 0.0)[2] == pytest.approx(math.pi / 2)
    assert COCO_IDS["car"] == 2


def test_points_file_beside_the_bag(bag: Path) -> None:
    from dpa_perception.world.calibration import load_points

    path = mb.points_path(bag)
    doc = yaml.safe_load(path.read_text())
    assert [c["topic"] for c in doc["cameras"]] == ["/rsu/cam0/image_raw/compressed", "/rsu/cam1/image_raw"]
    pf = load_points(path)
    cams = shared_cameras(SEED, 2)
    for cam, sc in zip(pf.cameras, cams):
        assert len(cam.pixels) >= 6 and cam.image_size == (640, 360)
        assert cam.position == pytest.approx((sc.x, sc.z, sc.h))
        rng = np.hypot(cam.ground[:, 0] - sc.x, cam.ground[:, 1] - sc.z)
        assert rng.min() >= 5.0 - 0.1 and rng.max() <= 60.0 + 0.1 and rng.max() - rng.min() > 25.0
        assert np.ptp(cam.pixels[:, 0]) > 200 and np.ptp(cam.pixels[:, 1]) > 80  # spread across the image
        exact, _ = sc.project(np.stack([cam.ground[:, 0], np.zeros(len(cam.ground)), cam.ground[:, 1]], 1))
        noise = np.linalg.norm(cam.pixels - exact, axis=1)
        assert 0.2 < float(np.sqrt(np.mean(noise**2))) < 2.0  # 0.7 px per axis, plus the ground's 1.5 cm


def test_deterministic_and_refuses_an_existing_points_file(bag: Path, tmp_path: Path) -> None:
    from dpa_perception.core.errors import ConfigError

    world = Scene(SEED * 1000)
    views = [world.view(c) for c in shared_cameras(SEED, 2)]
    topics = [t for t, _ in mb.camera_topics(2)]
    doc = mb.points_document(views, topics, SEED)
    assert doc == mb.points_document(views, topics, SEED)
    assert doc == yaml.safe_load(mb.points_path(bag).read_text())
    assert doc != mb.points_document(views, topics, SEED + 1)
    again = tmp_path / "demo"
    mb.make_bag(again, cameras=2, seconds=0.4, fps=FPS, seed=SEED, progress=False)
    first, second = _gt(bag), _gt(again)
    for topic, msgs in second.items():
        assert msgs == first[topic][: len(msgs)]
    (tmp_path / "other_points.yaml").write_text("x")
    with pytest.raises(ConfigError, match="other_points.yaml"):
        mb.make_bag(tmp_path / "other", cameras=1, seconds=0.2, fps=FPS, progress=False)


def test_object_writer_round_trip(tmp_path: Path) -> None:
    """write_objects / write_label_info: vision_msgs 4.x Detection3DArray and LabelInfo, read back without ROS."""
    from rosbags.highlevel import AnyReader

    from dpa_perception.bags.objects import read_objects
    from dpa_perception.bags.writer import DetectionBagWriter
    from dpa_perception.world.objects import WorldObject

    obj = WorldObject(track_id=17, stamp_ns=5_000_000_123, camera="/rsu/cam0/image_raw/compressed", class_id=2,
                      class_name="car", class_score=0.8, x=3.0, y=40.0, z=0.0, position_cov=(0.5, 0.1, 0.1, 2.0),
                      vx=0.0, vy=-9.0, velocity_cov=(1.0, 0.0, 0.0, 1.0), heading=-math.pi / 2, heading_std=0.2,
                      length=4.5, width=1.8, height=1.5, age_s=3.0, hits=30, confirmed=True, existence=0.95)
    out = tmp_path / "objects"
    w = DetectionBagWriter(out)
    w.write_objects("/rsu/cam0/objects", 6_000_000_000, obj.stamp_ns, "map", [obj])
    w.write_objects("/rsu/cam0/objects", 6_100_000_000, obj.stamp_ns + 1, "map", [])
    w.write_label_info("/dpa_perception/label_info", 6_000_000_000, ["person", "bicycle", "car"], 0.25)
    w.close()
    msgs = read_objects(out)["/rsu/cam0/objects"]
    assert [m.stamp_ns for m in msgs] == [5_000_000_123, 5_000_000_124] and msgs[1].objects == ()
    o = msgs[0].objects[0]
    assert (o.id, o.class_id, o.x, o.y, o.z, o.size) == ("17", "2", 3.0, 40.0, 0.0, (4.5, 1.8, 1.5))
    assert o.score == pytest.approx(0.8) and o.yaw == pytest.approx(-math.pi / 2)
    by_topic: dict = {}
    with AnyReader([out]) as reader:
        for c, _, raw in reader.messages():
            by_topic.setdefault(c.topic, reader.deserialize(raw, c.msgtype))
    cov = np.asarray(by_topic["/rsu/cam0/objects"].detections[0].results[0].pose.covariance).reshape(6, 6)
    assert (cov[0, 0], cov[0, 1], cov[1, 0], cov[1, 1], cov[5, 5]) == pytest.approx((0.5, 0.1, 0.1, 2.0, 0.04))
    assert cov[2, 2] > 0 and cov[3, 3] > 0 and cov[4, 4] > 0
    info = by_topic["/dpa_perception/label_info"]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "person"), (1, "bicycle"), (2, "car")]
    assert info.threshold == pytest.approx(0.25)

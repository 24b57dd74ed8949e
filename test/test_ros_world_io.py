"""ROS-free parts of the node's world-frame outputs (dpa_perception.ros.world_io) and the track ids of the 2D output.

The builders are exercised with look-alike classes that have the vision_msgs 4.x / geometry_msgs field
layout (Detection3D.bbox.center.position.x ...); the real classes are used in test_ros_node.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_ros_conversions import FAKE, _Hyp  # vision_msgs/ObjectHypothesis, the same message

from dpa_perception.bags.messages import TILT_VARIANCE, Z_VARIANCE, quaternion_yaw
from dpa_perception.core.types import Detections
from dpa_perception.ros.conversions import box_records, detection_array_msg
from dpa_perception.ros.world_io import CPM_NAME, WorldIO, fill_objects_array
from dpa_perception.runtime import Runtime
from dpa_perception.world.objects import WorldObject

REPO = Path(__file__).resolve().parents[1]
CAM = "/rsu/cam0/image_raw/compressed"

# ---------------------------------------------------------------- look-alike messages (geometry_msgs, vision_msgs 4.x)


@dataclass
class _Point:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class _Quaternion:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 1.0


@dataclass
class _Vector3:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class _Pose:
    position: _Point = field(default_factory=_Point)
    orientation: _Quaternion = field(default_factory=_Quaternion)


@dataclass
class _PoseWithCovariance:
    pose: _Pose = field(default_factory=_Pose)
    covariance: Any = field(default_factory=lambda: np.zeros(36))


@dataclass
class _BoundingBox3D:
    center: _Pose = field(default_factory=_Pose)
    size: _Vector3 = field(default_factory=_Vector3)


@dataclass
class _HypWithPose:
    hypothesis: _Hyp = field(default_factory=_Hyp)
    pose: _PoseWithCovariance = field(default_factory=_PoseWithCovariance)


@dataclass
class _Det3D:
    header: Any = None
    results: list = field(default_factory=list)
    bbox: _BoundingBox3D = field(default_factory=_BoundingBox3D)
    id: str = ""


@dataclass
class _Det3DArray:
    header: Any = None
    detections: list = field(default_factory=list)


FAKE_2D = FAKE  # the 2D look-alike messages of test_ros_conversions.py


@dataclass
class _Time:
    sec: int = 0
    nanosec: int = 0


@dataclass
class _Header:
    stamp: _Time = field(default_factory=_Time)
    frame_id: str = ""


@dataclass
class _String:
    data: str = ""


def obj(track_id: int = 17, heading: float = -math.pi / 2, **kw: Any) -> WorldObject:
    base: dict[str, Any] = dict(
        track_id=track_id, stamp_ns=1_700_000_000_250_000_000, camera=CAM, class_id=2, class_name="car",
        class_score=0.8, x=3.0, y=40.0, z=0.0, position_cov=(0.5, 0.1, 0.12, 2.0), vx=0.0, vy=-9.0,
        velocity_cov=(1.0, 0.0, 0.0, 1.0), heading=heading, heading_std=0.2, length=4.5, width=1.8, height=1.5,
        age_s=3.0, hits=30, confirmed=True, existence=0.95, box=(10.0, 20.0, 50.0, 60.0), detection_score=0.7)  # fmt: skip
    base.update(kw)
    return WorldObject(**base)


# ---------------------------------------------------------------- fill_objects_array


def test_fill_objects_array_fills_every_field() -> None:
    header = _Header(_Time(1_700_000_000, 250_000_000), "map")
    objects = [obj(), obj(track_id=4, heading=3 * math.pi / 4, class_id=0, class_name="person", class_score=0.55,
                          x=-1.25, y=7.5, z=0.1, position_cov=(0.04, -0.01, -0.01, 0.09), heading_std=1.5,
                          length=0.5, width=0.6, height=1.7)]  # fmt: skip
    msg = _Det3DArray()
    out = fill_objects_array(msg, _Det3D, _HypWithPose, header, objects)
    assert out is msg and msg.header is header and len(msg.detections) == 2
    for det, o in zip(msg.detections, objects):
        assert det.header is header
        assert det.id == str(o.track_id)
        p, q = det.bbox.center.position, det.bbox.center.orientation
        assert (p.x, p.y, p.z) == (o.x, o.y, o.z)
        assert (q.x, q.y) == (0.0, 0.0)
        assert (q.z, q.w) == pytest.approx((math.sin(o.heading / 2), math.cos(o.heading / 2)))
        assert q.x**2 + q.y**2 + q.z**2 + q.w**2 == pytest.approx(1.0)
        assert quaternion_yaw(q.x, q.y, q.z, q.w) == pytest.approx(o.heading)
        assert (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) == (o.length, o.width, o.height)
        assert len(det.results) == 1
        hyp = det.results[0]
        assert hyp.hypothesis.class_id == str(o.class_id) and hyp.hypothesis.score == pytest.approx(o.class_score)
        hp = hyp.pose.pose
        assert (hp.position.x, hp.position.y, hp.position.z) == (o.x, o.y, o.z)
        assert (hp.orientation.z, hp.orientation.w) == (q.z, q.w)
        cov = hyp.pose.covariance
        assert isinstance(cov, list) and len(cov) == 36 and all(isinstance(v, float) for v in cov)
        c = np.asarray(cov).reshape(6, 6)
        assert (c[0, 0], c[0, 1], c[1, 0], c[1, 1]) == pytest.approx(o.position_cov)
        assert c[2, 2] == Z_VARIANCE and c[3, 3] == c[4, 4] == TILT_VARIANCE
        assert c[5, 5] == pytest.approx(o.heading_std**2)
        off = c.copy()
        off[:2, :2] = 0.0
        off[[2, 3, 4, 5], [2, 3, 4, 5]] = 0.0
        assert not off.any()  # nothing else
        for v in (p.x, p.y, p.z, q.z, q.w, det.bbox.size.x, hyp.hypothesis.score):
            assert type(v) is float  # rclpy refuses numpy scalars in float64 fields
    # the messages are distinct objects per detection
    assert msg.detections[0].bbox is not msg.detections[1].bbox


def test_fill_objects_array_with_no_objects_is_an_empty_array_with_the_header() -> None:
    header = _Header(_Time(5, 6), "map")
    msg = fill_objects_array(_Det3DArray(), _Det3D, _HypWithPose, header, [])
    assert msg.header is header and msg.detections == []


def test_node_messages_match_the_replay_bag_messages() -> None:
    """The node (rclpy classes) and the replay (rosbags) fill Detection3D the same way."""
    from dpa_perception.bags.messages import objects_message
    from dpa_perception.bags.writer import typestore

    objects = [obj(), obj(track_id=9, heading=0.3, class_id=5, class_score=0.33, x=12.0, y=-4.0)]
    node = fill_objects_array(_Det3DArray(), _Det3D, _HypWithPose, _Header(_Time(1, 2), "map"), objects)
    bag = objects_message(typestore(), 1_000_000_002, "map", objects)
    assert (bag.header.stamp.sec, bag.header.stamp.nanosec, bag.header.frame_id) == (1, 2, "map")
    assert len(bag.detections) == len(node.detections) == 2
    for a, b in zip(node.detections, bag.detections):
        assert a.id == b.id
        for pa, pb in ((a.bbox.center, b.bbox.center), (a.results[0].pose.pose, b.results[0].pose.pose)):
            assert (pa.position.x, pa.position.y, pa.position.z) == pytest.approx((pb.position.x, pb.position.y, pb.position.z))
            assert (pa.orientation.x, pa.orientation.y, pa.orientation.z, pa.orientation.w) == pytest.approx(
                (pb.orientation.x, pb.orientation.y, pb.orientation.z, pb.orientation.w))
        assert (a.bbox.size.x, a.bbox.size.y, a.bbox.size.z) == pytest.approx((b.bbox.size.x, b.bbox.size.y, b.bbox.size.z))
        ha, hb = a.results[0].hypothesis, b.results[0].hypothesis
        assert (ha.class_id, ha.score) == (hb.class_id, pytest.approx(hb.score))
        np.testing.assert_allclose(a.results[0].pose.covariance, b.results[0].pose.covariance)


# ---------------------------------------------------------------- track ids in the 2D output


def _dets(n: int) -> Detections:
    boxes = np.array([[10.0 * i, 20.0, 10.0 * i + 8.0, 40.0] for i in range(n)], np.float32).reshape(-1, 4)
    return Detections(boxes, np.linspace(0.9, 0.5, n).astype(np.float32), np.full(n, 2, np.int64))


def test_detection2d_id_is_the_track_id_or_empty() -> None:
    records = box_records(_dets(4), ["person", "bicycle", "car"])
    msg = detection_array_msg("h", records, FAKE_2D, [5, 0, 12, 0])
    assert [d.id for d in msg.detections] == ["5", "", "12", ""]
    assert [d.bbox.center.position.x for d in msg.detections] == [4.0, 14.0, 24.0, 34.0]  # ids stay with their box
    ids = np.array([3, 1, 0, 7], np.int64)
    msg = detection_array_msg("h", records, FAKE_2D, ids)  # type: ignore[arg-type]  # numpy ids: plain strings
    assert [d.id for d in msg.detections] == ["3", "1", "", "7"] and all(type(d.id) is str for d in msg.detections)
    assert [d.id for d in detection_array_msg("h", records, FAKE_2D).detections] == ["", "", "", ""]  # no tracker
    assert detection_array_msg("h", [], FAKE_2D, []).detections == []


# ---------------------------------------------------------------- imports without ROS


def test_world_io_imports_without_ros() -> None:
    """Importing the module pulls in nothing of ROS (rclpy and the message packages load inside WorldIO only)."""
    code = """
import sys
ROS = ("rclpy", "vision_msgs", "std_msgs", "sensor_msgs", "geometry_msgs", "tf2_ros", "builtin_interfaces",
       "rosidl_runtime_py", "rcl_interfaces")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ROS:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
import dpa_perception.ros.world_io
import dpa_perception.ros.conversions
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ROS)
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ---------------------------------------------------------------- WorldIO with look-alike node parts


class _Pub:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)


class _Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str, **_kw: Any) -> None:
        self.lines.append(("info", text))

    def error(self, text: str, **_kw: Any) -> None:
        self.lines.append(("error", text))


class _Node:
    def __init__(self) -> None:
        self.logger = _Logger()

    def get_logger(self) -> _Logger:
        return self.logger


@dataclass
class _Result:
    camera: str
    world: Any


def _io(values: dict[str, Any], runtime: Any = None) -> WorldIO:
    """A WorldIO without its rclpy constructor: look-alike publishers and message classes."""
    io = WorldIO.__new__(WorldIO)
    io.node, io.runtime, io.values = _Node(), runtime, values
    io._types = (_Det3DArray, _Det3D, _HypWithPose, _String)
    io.pubs = {CAM: _Pub()}
    io.fused, io.cpm = _Pub(), _Pub()  # type: ignore[assignment]
    io._subs, io._tf_pending, io._tf, io._timer = [], [], None, None
    return io


def test_publish_restamps_into_the_world_frame_and_sends_fused_and_cpm() -> None:
    from dpa_perception.world.stage import WorldFrame

    io = _io({"world_frame": "enu_site"})
    stamp_ns = 1_700_000_000_250_000_000
    mine, other = obj(track_id=3), obj(track_id=8, x=-5.0, camera="/rsu/cam1/image_raw")
    world = WorldFrame(CAM, stamp_ns, [mine], [mine, other], [3, 0])
    cam_header = _Header(_Time(1_700_000_000, 250_000_000), "rsu_cam0")
    io.publish(_Result(CAM, world), cam_header)
    fused_pub, cpm_pub = io.fused, io.cpm
    assert isinstance(fused_pub, _Pub) and isinstance(cpm_pub, _Pub)
    (per_cam,) = io.pubs[CAM].sent
    (fused,) = fused_pub.sent
    for msg in (per_cam, fused):
        assert msg.header.frame_id == "enu_site" and msg.header.stamp == cam_header.stamp
        assert msg.header is not cam_header
    assert cam_header.frame_id == "rsu_cam0"  # the 2D header is left as it was
    assert [d.id for d in per_cam.detections] == ["3"] and [d.id for d in fused.detections] == ["3", "8"]
    (cpm,) = cpm_pub.sent
    doc = json.loads(cpm.data)
    assert doc["numberOfPerceivedObjects"] == 2 and len(doc["perceivedObjects"]) == 2
    assert CPM_NAME == "objects/cpm"
    # a camera without a publisher (no geometry), or a frame without a world result: nothing is sent
    io.publish(_Result("/rsu/cam1/image_raw", world), cam_header)
    io.publish(_Result(CAM, None), cam_header)
    assert len(io.pubs[CAM].sent) == len(fused_pub.sent) == len(cpm_pub.sent) == 1


def test_camera_info_rebuilds_the_geometry_once_and_refuses_a_bad_one() -> None:
    from dpa_perception.core import node_params as P
    from dpa_perception.world.stage import WorldConfig, WorldStage

    values = P.validate_values({"engine_dir": "e", "camera_topics": [CAM],
                                "cameras.rsu_cam0.camera_info_topic": "/rsu/cam0/camera_info",
                                "cameras.rsu_cam0.pose": [0.0, 0.0, 6.0, -0.7071068, 0.0, 0.0, 0.7071068]})  # fmt: skip
    stage = WorldStage({}, WorldConfig(), ["person", "car"])

    @dataclass
    class _Runtime:  # the runtime's own geometry update, on a bare world stage
        world: Any
        values: dict[str, Any]
        update_camera_geometry = Runtime.update_camera_geometry

    io = _io(values, _Runtime(stage, dict(values)))
    assert not stage.has_camera(CAM)

    @dataclass
    class _Info:
        k: list
        d: list

    k = [500.0, 0.0, 320.0, 0.0, 500.0, 180.0, 0.0, 0.0, 1.0]
    cb = io._info_cb(CAM)
    cb(_Info(k, [0.0] * 5))
    geo = stage.geometry(CAM)
    assert geo is not None and geo.camera_matrix is not None
    np.testing.assert_allclose(geo.camera_matrix.ravel(), k)
    assert io.values["cameras.rsu_cam0.camera_matrix"] == k
    assert io.values["cameras.rsu_cam0.distortion"] == [0.0] * 5
    updates = [t for lvl, t in io.node.logger.lines if lvl == "info" and "geometry updated" in t]
    assert len(updates) == 1
    cb(_Info(list(k), [0.0] * 5))  # the same CameraInfo again: nothing rebuilt
    assert stage.geometry(CAM) is geo and len(io.node.logger.lines) == 1
    cb(_Info([0.0] * 9, [0.0] * 5))  # a singular K: refused, logged, the last geometry kept
    assert stage.geometry(CAM) is geo and io.values["cameras.rsu_cam0.camera_matrix"] == k
    errors = [t for lvl, t in io.node.logger.lines if lvl == "error"]
    assert len(errors) == 1 and "cameras.rsu_cam0.camera_matrix" in errors[0] and "\n" not in errors[0]

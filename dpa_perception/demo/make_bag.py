"""Generate the demo rosbag2 (mcap): several roadside cameras under a clear -> fog -> rain -> night timeline.

    dpa-demo-bag OUT [--cameras 3] [--seconds 40] [--fps 10] [--seed 0]

The cameras look at ONE world (:meth:`Scene.view`: the same road, buildings and traffic), each from
its own pose (:func:`~dpa_perception.demo.scene.shared_cameras`), with overlapping views: an object
on the road is seen by several cameras.  Cameras ``cam0 .. cam{N-2}`` publish
``sensor_msgs/CompressedImage`` (JPEG) on ``/rsu/camK/image_raw/compressed``; with two or more
cameras the last one publishes a raw ``sensor_msgs/Image`` (rgb8) on ``/rsu/camK/image_raw``.
Header stamps equal the bag log times.  Deterministic: the same arguments give the same messages.

Ground truth, per camera and per camera frame (same stamp as the image):

* ``/rsu/camK/ground_truth``: ``vision_msgs/Detection2DArray``, the exact image boxes (COCO class
  ids, score 1), frame ``rsu_camK``.
* ``/rsu/camK/ground_truth/objects``: ``vision_msgs/Detection3DArray`` in frame ``map``, one
  Detection3D per labelled (visible) object of that frame: ``id`` = the true object id
  (:func:`~dpa_perception.demo.scene.gt_object_id`: the object's index in the world's objects, plus
  1000 per wrap of its loop, so that the jump back at a wrap is a new object), footprint centre
  (x, y, 0), heading as a yaw quaternion, size (length, width, height), hypothesis (COCO id, 1.0).
  Velocities are not in the message: every object moves at a constant velocity between wraps, so the
  evaluation takes it from two positions of the same id (:mod:`dpa_perception.demo.track_eval`).

The weather is announced on ``/rsu/weather`` (``std_msgs/String`` such as ``fog:0.70``, once per
second).  Beside the bag, ``OUT_points.yaml`` holds a surveyor's point pairs per camera (pixel <->
ground metres, lane-marking and kerb corners 5-60 m away, pixels with 0.7 px noise, ground with
1.5 cm noise), each camera's image size and ground position: the input of ``dpa-calibrate``
(format: :mod:`dpa_perception.world.calibration`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dpa_perception.core.types import Detections
from dpa_perception.demo.scene import COCO_IDS, Camera, Labels, Scene, gt_object_id, shared_cameras
from dpa_perception.world.objects import WorldObject

START_NS = 1_700_000_000 * 1_000_000_000
TIMELINE = (("clear", 0.0), ("fog", 0.7), ("rain", 0.7), ("night", 0.85))
WORLD_FRAME = "map"
PIXEL_NOISE_PX = 0.7  # standard deviation of a surveyed point's pixel (clicking a marking corner)
GROUND_NOISE_M = 0.015  # standard deviation of a surveyed point's ground position (RTK survey)
SURVEY_RANGE_M = (5.0, 60.0)
SURVEY_POINTS = 10
_COCO_NAMES = {v: k for k, v in COCO_IDS.items()}


def weather_at(progress: float) -> tuple[str, float]:
    """Weather and strength at ``progress`` in [0, 1): four equal segments, each ramping in over its first fifth."""
    k = min(len(TIMELINE) - 1, int(progress * len(TIMELINE)))
    kind, target = TIMELINE[k]
    within = progress * len(TIMELINE) - k
    return kind, round(target * min(1.0, within / 0.2), 3)


def camera_topics(cameras: int) -> list[tuple[str, str]]:
    """(image topic, message type) per camera."""
    out = []
    for k in range(cameras):
        if cameras >= 2 and k == cameras - 1:
            out.append((f"/rsu/cam{k}/image_raw", "sensor_msgs/msg/Image"))
        else:
            out.append((f"/rsu/cam{k}/image_raw/compressed", "sensor_msgs/msg/CompressedImage"))
    return out


INT_LIMITS = {"--cameras": (1, 64), "--seed": (0, 10**9), "--jpeg-quality": (0, 100)}
FLOAT_LIMITS = {"--seconds": (0.0, 86_400.0), "--fps": (0.0, 1000.0)}


def check_args(out: Path, cameras: int, seconds: float, fps: float, seed: int, jpeg_quality: int) -> None:
    """:class:`ConfigError` (one line) for arguments no bag can be made of, before anything is written."""
    from dpa_perception.core.errors import ConfigError
    from dpa_perception.tools.cli_common import finite_in, int_in

    for flag, value in (("--cameras", cameras), ("--seed", seed), ("--jpeg-quality", jpeg_quality)):
        int_in(value, flag, *INT_LIMITS[flag])
    for flag, number in (("--seconds", seconds), ("--fps", fps)):
        finite_in(number, flag, *FLOAT_LIMITS[flag])
        if number <= 0:
            raise ConfigError(f"{flag} must be positive, not {number}")
    if round(seconds * fps) < 1:
        raise ConfigError(f"--seconds {seconds} at --fps {fps} gives no frame")
    if out.suffix.lower() == ".bag":
        raise ConfigError(f"{out}: a folder named *.bag is read as a ROS 1 bag by rosbags (and dpa-replay); "
                          f"choose a name without .bag")  # fmt: skip
    if os.path.lexists(out):
        raise ConfigError(f"{out} already exists")
    if os.path.lexists(points_path(out)):
        raise ConfigError(f"{points_path(out)} (the surveyed points written beside the bag) already exists")
    parent = Path(os.path.abspath(out)).parent
    existing = next((p for p in (parent, *parent.parents) if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{out}: {existing} is not a folder")
    parent.mkdir(parents=True, exist_ok=True)  # like dpa-build: missing parent folders are created


def points_path(out: Path) -> Path:
    """The surveyed points file written beside bag ``out``: ``OUT_points.yaml``."""
    out = Path(out)
    return out.with_name(out.name + "_points.yaml")


def ground_truth_objects(scene: Scene, labels: Labels, t: float, stamp_ns: int, camera: str) -> list[WorldObject]:
    """World-frame ground truth of the labelled objects of one frame (``track_id`` = the true id)."""
    out = []
    for idx, box in zip(labels.object_ids, labels.boxes):
        o = scene.objects[int(idx)]
        x, y, heading, speed = scene.world_state(int(idx), t)
        length, width, height = o.size
        out.append(WorldObject(
            track_id=gt_object_id(int(idx), scene.lap(o, t)), stamp_ns=stamp_ns, camera=camera, class_id=int(o.cls),
            class_name=_COCO_NAMES[int(o.cls)], class_score=1.0, x=x, y=y, z=0.0, position_cov=(0.0, 0.0, 0.0, 0.0),
            vx=speed * float(np.cos(heading)), vy=speed * float(np.sin(heading)), velocity_cov=(0.0, 0.0, 0.0, 0.0),
            heading=heading, heading_std=0.0, length=float(length), width=float(width), height=float(height),
            age_s=0.0, hits=0, confirmed=True, existence=1.0, box=tuple(float(v) for v in box),  # type: ignore[arg-type]
            detection_score=1.0))
    return out


def _marking_corners(scene: Scene) -> np.ndarray:
    """Ground (scene X, Z) of the corners a surveyor would pick: lane dashes, zebra stripes, kerbs."""
    cz = scene.cross_z
    pts = []
    for z in np.arange(1.0, 200.0, 9.0):  # the lane dashes the background draws
        if abs(z + 1.5 - cz) < 7:
            continue
        for x in (-3.5, 3.5):
            pts += [(x - 0.08, z), (x + 0.08, z), (x - 0.08, z + 3.0), (x + 0.08, z + 3.0)]
    for x in np.arange(-6.5, 7.0, 1.0):  # zebra crossing stripes
        pts += [(x, cz - 8), (x + 0.5, cz - 8), (x, cz - 5.2), (x + 0.5, cz - 5.2)]
    for side in (-1.0, 1.0):  # kerb corners at the cross street
        pts += [(side * 7.0, cz - 5), (side * 7.0, cz + 5), (side * 11.0, cz - 5), (side * 11.0, cz + 5)]
    return np.array(pts, np.float64)


def survey_points(scene: Scene, rng: np.random.Generator, n: int = SURVEY_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` surveyed pairs of one camera: (pixels (n, 2) with noise, ground world x, y (n, 2) with noise).

    Points are spread across the image (greedy farthest-point choice among the visible marking corners
    5-60 m away); pixels are OpenCV pixel coordinates (the centre of the top-left pixel is 0, 0).
    """
    cam = scene.cam
    ground = _marking_corners(scene)
    world3 = np.stack([ground[:, 0], np.zeros(len(ground)), ground[:, 1]], 1)
    uv, depth = cam.project(world3)
    rng_m = np.hypot(ground[:, 0] - cam.x, ground[:, 1] - cam.z)
    margin = 8.0
    ok = ((depth > 1.0) & (uv[:, 0] >= margin) & (uv[:, 0] <= cam.width - 1 - margin) & (uv[:, 1] >= margin)
          & (uv[:, 1] <= cam.height - 1 - margin) & (rng_m >= SURVEY_RANGE_M[0]) & (rng_m <= SURVEY_RANGE_M[1]))
    cand = np.nonzero(ok)[0]
    if len(cand) < 6:
        raise RuntimeError(f"only {len(cand)} surveyable ground points in view of camera at x={cam.x}")
    # greedy farthest-point choice in the image, from a random first point: spread across the image,
    # which is near (bottom) to far (top) as well as left to right
    chosen = [int(cand[int(rng.integers(len(cand)))])]
    gap = np.linalg.norm(uv[cand] - uv[chosen[0]], axis=1)
    while len(chosen) < min(n, len(cand)):
        j = int(cand[int(gap.argmax())])
        chosen.append(j)
        gap = np.minimum(gap, np.linalg.norm(uv[cand] - uv[j], axis=1))
    chosen.sort(key=lambda i: -rng_m[i])
    pix = uv[chosen] + rng.normal(0.0, PIXEL_NOISE_PX, (len(chosen), 2))
    gnd = ground[chosen] + rng.normal(0.0, GROUND_NOISE_M, (len(chosen), 2))
    return pix, gnd


def points_document(scenes: Sequence[Scene], topics: Sequence[str], seed: int) -> dict:
    """The surveyed points file (:mod:`dpa_perception.world.calibration` format) of the demo cameras."""
    cams = []
    for k, (scene, topic) in enumerate(zip(scenes, topics)):
        pix, gnd = survey_points(scene, np.random.default_rng([seed, 47, k]))
        cam: Camera = scene.cam
        cams.append({
            "topic": topic, "image_size": [cam.width, cam.height],
            "position": [round(cam.x, 3), round(cam.z, 3), round(cam.h, 3)],
            "points": [{"pixel": [round(float(u), 2), round(float(v), 2)], "ground": [round(float(x), 3), round(float(y), 3)]}
                       for (u, v), (x, y) in zip(pix, gnd)],
        })
    return {"version": 1, "frame_id": WORLD_FRAME, "cameras": cams}


def _write_points(out: Path, doc: dict) -> Path:
    import yaml

    path = points_path(out)
    text = ("# Surveyed point pairs of the demo cameras (dpa-demo-bag): pixel (u, v) <-> ground (x east, y north, m).\n"
            "# Calibrate with: dpa-calibrate " + path.name + " --out cameras.yaml\n")
    path.write_text(text + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200))
    return path


def make_bag(out: Path, cameras: int = 3, seconds: float = 40.0, fps: float = 10.0, seed: int = 0,
             jpeg_quality: int = 85, progress: bool = True) -> dict:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dpa_perception.bags.writer import DETECTIONS_TYPE, OBJECTS_TYPE, DetectionBagWriter, typestore

    check_args(out, cameras, seconds, fps, seed, jpeg_quality)
    ts = typestore()
    T = ts.types
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    topics = camera_topics(cameras)
    world = Scene(seed * 1000)
    scenes = [world.view(c, fx_seed=seed * 1000 + k) for k, c in enumerate(shared_cameras(seed, cameras))]
    conns = [writer.add_connection(t, m, typestore=ts) for t, m in topics]
    wx_conn = writer.add_connection("/rsu/weather", "std_msgs/msg/String", typestore=ts)
    # reuse the detection message builders for ground truth
    gt_writer = DetectionBagWriter.__new__(DetectionBagWriter)
    gt_writer.ts, gt_writer.writer, gt_writer.count = ts, writer, 0
    gt_writer.connections = {f"/rsu/cam{k}/ground_truth": writer.add_connection(f"/rsu/cam{k}/ground_truth", DETECTIONS_TYPE,
                                                                               typestore=ts) for k in range(cameras)}
    gt_writer.connections.update({f"/rsu/cam{k}/ground_truth/objects": writer.add_connection(
        f"/rsu/cam{k}/ground_truth/objects", OBJECTS_TYPE, typestore=ts) for k in range(cameras)})
    n_frames = round(seconds * fps)
    counts: dict[str, int] = {}
    last_wx = -1
    try:
        for i in range(n_frames):
            t = i / fps
            kind, strength = weather_at(i / n_frames)
            if int(t) != last_wx:
                last_wx = int(t)
                ns = START_NS + round(t * 1e9)
                writer.write(wx_conn, ns, ts.serialize_cdr(T["std_msgs/msg/String"](data=f"{kind}:{strength:.2f}"),
                                                           "std_msgs/msg/String"))
                counts["/rsu/weather"] = counts.get("/rsu/weather", 0) + 1
            for k, scene in enumerate(scenes):
                # cameras are not synchronised: each is offset by a few milliseconds (and renders that instant)
                ns = START_NS + round(t * 1e9) + k * 3_000_000
                t_k = (ns - START_NS) / 1e9
                img, labels = scene.frame(t_k, kind if strength > 0 else "clear", strength, frame_index=i)
                frame_id = f"rsu_cam{k}"
                header = gt_writer._header(ns, frame_id)
                topic, msgtype = topics[k]
                if msgtype == "sensor_msgs/msg/CompressedImage":
                    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                    assert ok
                    msg = T[msgtype](header=header, format="jpeg", data=jpg.reshape(-1))
                else:
                    rgb = np.ascontiguousarray(img[:, :, ::-1])
                    msg = T[msgtype](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                     is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
                writer.write(conns[k], ns, ts.serialize_cdr(msg, msgtype))
                gt_writer.write_detections(f"/rsu/cam{k}/ground_truth", ns, ns, frame_id,
                                           Detections(labels.boxes, np.ones(len(labels), np.float32), labels.class_ids))
                gt_writer.write_objects(f"/rsu/cam{k}/ground_truth/objects", ns, ns, WORLD_FRAME,
                                        ground_truth_objects(scene, labels, t_k, ns, topic))
                for name in (topic, f"/rsu/cam{k}/ground_truth", f"/rsu/cam{k}/ground_truth/objects"):
                    counts[name] = counts.get(name, 0) + 1
            if progress and (i + 1) % max(1, n_frames // 10) == 0:
                print(f"make_bag: {i + 1}/{n_frames} frames ({kind} {strength:.2f})", file=sys.stderr, flush=True)
    finally:
        writer.close()
    points = _write_points(out, points_document(scenes, [t for t, _ in topics], seed))
    return {"path": str(out), "points": str(points), "messages": counts, "timeline": [k for k, _ in TIMELINE]}


def make_parser() -> argparse.ArgumentParser:
    from dpa_perception.tools.cli_common import Parser

    p = Parser(prog="dpa-demo-bag", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="bag folder to create (must not exist; not named *.bag)")
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jpeg-quality", type=int, default=85)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from dpa_perception.tools.cli_common import run_cli

    a = make_parser().parse_args(argv)

    def body() -> int:
        info = make_bag(a.out, a.cameras, a.seconds, a.fps, a.seed, a.jpeg_quality, progress=not a.quiet)
        for topic, n in sorted(info["messages"].items()):
            print(f"{topic}: {n} messages")
        print(f"surveyed points: {info['points']}")
        return 0

    return run_cli("dpa-demo-bag", body)


if __name__ == "__main__":
    raise SystemExit(main())

"""Generate the demo rosbag2 (mcap): several roadside cameras under a clear -> fog -> rain -> night timeline.

    dpa-demo-bag OUT [--cameras 3] [--seconds 40] [--fps 10] [--seed 0]

Cameras ``cam0 .. cam{N-2}`` publish ``sensor_msgs/CompressedImage`` (JPEG) on
``/rsu/camK/image_raw/compressed``; with two or more cameras the last one publishes a raw
``sensor_msgs/Image`` (rgb8) on ``/rsu/camK/image_raw``.  Every camera also gets its exact
ground truth on ``/rsu/camK/ground_truth`` (``vision_msgs/Detection2DArray``, COCO class ids,
score 1) and the weather is announced on ``/rsu/weather`` (``std_msgs/String`` such as
``fog:0.70``, once per second).  Header stamps equal the bag log times.  Deterministic: the
same arguments give the same messages.
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
from dpa_perception.demo.scene import Scene

START_NS = 1_700_000_000 * 1_000_000_000
TIMELINE = (("clear", 0.0), ("fog", 0.7), ("rain", 0.7), ("night", 0.85))


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
    parent = Path(os.path.abspath(out)).parent
    existing = next((p for p in (parent, *parent.parents) if os.path.lexists(p)), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{out}: {existing} is not a folder")
    parent.mkdir(parents=True, exist_ok=True)  # like dpa-build: missing parent folders are created


def make_bag(out: Path, cameras: int = 3, seconds: float = 40.0, fps: float = 10.0, seed: int = 0,
             jpeg_quality: int = 85, progress: bool = True) -> dict:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dpa_perception.bags.writer import DETECTIONS_TYPE, DetectionBagWriter, typestore

    check_args(out, cameras, seconds, fps, seed, jpeg_quality)
    ts = typestore()
    T = ts.types
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    topics = camera_topics(cameras)
    scenes = [Scene(seed * 1000 + k) for k in range(cameras)]
    conns = [writer.add_connection(t, m, typestore=ts) for t, m in topics]
    gt_conns = [writer.add_connection(f"/rsu/cam{k}/ground_truth", DETECTIONS_TYPE, typestore=ts) for k in range(cameras)]
    wx_conn = writer.add_connection("/rsu/weather", "std_msgs/msg/String", typestore=ts)
    # reuse the detection message builder for ground truth
    gt_writer = DetectionBagWriter.__new__(DetectionBagWriter)
    gt_writer.ts, gt_writer.writer, gt_writer.connections, gt_writer.count = ts, writer, {}, 0
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
                # cameras are not synchronised: each is offset by a few milliseconds
                ns = START_NS + round(t * 1e9) + k * 3_000_000
                img, labels = scene.frame(t, kind if strength > 0 else "clear", strength, frame_index=i)
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
                gt_writer.connections[f"/rsu/cam{k}/ground_truth"] = gt_conns[k]
                gt_writer.write_detections(f"/rsu/cam{k}/ground_truth", ns, ns, frame_id,
                                           Detections(labels.boxes, np.ones(len(labels), np.float32), labels.class_ids))
                counts[topic] = counts.get(topic, 0) + 1
                counts[f"/rsu/cam{k}/ground_truth"] = counts.get(f"/rsu/cam{k}/ground_truth", 0) + 1
            if progress and (i + 1) % max(1, n_frames // 10) == 0:
                print(f"make_bag: {i + 1}/{n_frames} frames ({kind} {strength:.2f})", file=sys.stderr, flush=True)
    finally:
        writer.close()
    return {"path": str(out), "messages": counts, "timeline": [k for k, _ in TIMELINE]}


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
        return 0

    return run_cli("dpa-demo-bag", body)


if __name__ == "__main__":
    raise SystemExit(main())

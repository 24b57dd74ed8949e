#!/usr/bin/env python3
"""Benchmark the world stage (ground projection + tracking, ``WorldStage.process``) per frame.

Run from the repository root:

    python benchmarks/bench_tracking.py [--frames 2000] [--objects 40 10]

Three pinhole cameras (the demo renderer's camera model, 1280x720) watch one stretch of road
with ``--objects`` road users (vehicles in four lanes, pedestrians on the sidewalks) moving at
constant velocity and looping over 15-75 m. Their boxes are rendered exactly, with 0.7 px noise,
before timing; frames go round-robin to the cameras at 10 Hz each (one tracker for all).
Prints the CPU and the median, 90th and 99th percentile of the per-frame wall time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.core.machine import cpu_summary
from dpa_perception.core.types import Detections
from dpa_perception.demo.scene import Camera
from dpa_perception.world.geometry import CameraGeometry
from dpa_perception.world.stage import WorldConfig, WorldStage

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"]
SIZES = {0: (0.5, 0.6, 1.7), 2: (4.5, 1.8, 1.5), 5: (12.0, 2.55, 3.2), 7: (7.0, 2.3, 3.0)}
SCENE_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
CAMERAS = {
    "/rsu/cam0/image_raw": Camera(1280, 720, 1040.0, x=-2.0, h=7.0, pitch_deg=12.0),
    "/rsu/cam1/image_raw": Camera(1280, 720, 1000.0, x=6.0, h=8.0, pitch_deg=13.0, yaw_deg=-6.0),
    "/rsu/cam2/image_raw": Camera(1280, 720, 900.0, x=-9.0, h=6.5, pitch_deg=11.0, yaw_deg=7.0),
}
Y_MIN, Y_MAX = 15.0, 75.0


def geometry(cam: Camera) -> CameraGeometry:
    import cv2

    K = np.array([[cam.focal, 0.0, cam.width / 2], [0.0, cam.focal, cam.height / 2], [0.0, 0.0, 1.0]])
    rvec, _ = cv2.Rodrigues(SCENE_TO_WORLD @ cam.R.T)
    angle = float(np.linalg.norm(rvec))
    q = np.concatenate([rvec.ravel() / angle * math.sin(angle / 2), [math.cos(angle / 2)]])
    return CameraGeometry.from_intrinsics(K, [], np.concatenate([SCENE_TO_WORLD @ cam.C, q]), 0.0)


def road_users(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start positions (n, 2), velocities (n, 2) and class ids of ``n`` road users."""
    n_ped = n // 5
    lanes = [(-5.25, -1.0), (-1.75, -1.0), (1.75, 1.0), (5.25, 1.0)]
    p, v, c = [], [], []
    for i in range(n - n_ped):
        lane_x, sign = lanes[i % 4]
        k = i // 4
        p.append((lane_x, Y_MIN + (k * 13.0) % (Y_MAX - Y_MIN)))
        v.append((0.0, sign * (7.0 + 1.5 * (i % 4))))
        c.append((2, 2, 7, 2, 5)[k % 5])
    for i in range(n_ped):
        side = -1.0 if i % 2 else 1.0
        p.append((side * 8.5, Y_MIN + (i * 7.0) % (Y_MAX - Y_MIN)))
        v.append((0.0, side * float(rng.uniform(0.8, 1.6))))
        c.append(0)
    return np.array(p), np.array(v), np.array(c, np.int64)


def render(cam: Camera, xy: np.ndarray, heading: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Exact image boxes (N, 4) of the road users' 3-D boxes, clipped to the image."""
    dims = np.array([SIZES[int(k)] for k in cls])
    corners = np.array([(a, b, h) for a in (-0.5, 0.5) for b in (-0.5, 0.5) for h in (0.0, 1.0)])
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    dl, dw, dh = corners[None, :, 0] * dims[:, 0:1], corners[None, :, 1] * dims[:, 1:2], corners[None, :, 2] * dims[:, 2:3]
    wx = xy[:, 0:1] + dl * c - dw * s
    wy = xy[:, 1:2] + dl * s + dw * c
    uv, _ = cam.project(np.stack([wx, dh, wy], axis=-1).reshape(-1, 3))  # scene X, Y (up), Z
    uv = uv.reshape(len(xy), -1, 2)
    boxes = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    return np.clip(boxes, 0.0, [cam.width, cam.height, cam.width, cam.height])


def frames(n_objects: int, n_frames: int, seed: int = 0) -> list[tuple[str, int, Detections]]:
    rng = np.random.default_rng(seed)
    p0, vel, cls = road_users(n_objects, rng)
    heading = np.arctan2(vel[:, 1], vel[:, 0])
    topics = list(CAMERAS)
    out = []
    for k in range(n_frames):
        t = k / (10.0 * len(topics))  # each camera at 10 Hz, interleaved
        xy = p0 + vel * t
        xy[:, 1] = Y_MIN + (xy[:, 1] - Y_MIN) % (Y_MAX - Y_MIN)
        topic = topics[k % len(topics)]
        boxes = render(CAMERAS[topic], xy, heading, cls) + rng.normal(0.0, 0.7, (len(xy), 4))
        scores = rng.uniform(0.3, 0.95, len(xy)).astype(np.float32)
        out.append((topic, round(t * 1e9), Detections(boxes.astype(np.float32), scores, cls.copy())))
    return out


def run(n_objects: int, n_frames: int) -> None:
    stage = WorldStage({t: geometry(c) for t, c in CAMERAS.items()}, WorldConfig(), NAMES)
    work = frames(n_objects, n_frames)
    for topic, stamp, dets in work[:50]:  # warm-up (tracks born and confirmed)
        stage.process(topic, stamp, dets)
    wall = []
    for topic, stamp, dets in work[50:]:
        t0 = time.perf_counter()
        stage.process(topic, stamp, dets)
        wall.append((time.perf_counter() - t0) * 1e3)
    ms = np.array(wall)
    st = stage.stats()
    print(f"{n_objects:3d} objects/frame, {len(ms)} frames, 3 cameras: median {np.median(ms):.3f} ms, "
          f"p90 {np.percentile(ms, 90):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms "
          f"(tracks: {st['tracks_live']} live, {st['tracks_confirmed']} confirmed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--objects", type=int, nargs="+", default=[40, 10])
    args = ap.parse_args()
    print(cpu_summary())
    for n in args.objects:
        run(n, args.frames + 50)


if __name__ == "__main__":
    main()

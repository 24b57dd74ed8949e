"""The world stage on boxes rendered by the demo's pinhole camera: projection, drops, fusion, live config."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_world_geometry import demo_geometry

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.types import Detections
from dpa_perception.core.world_params import WORLD_PARAMS
from dpa_perception.demo.scene import Camera
from dpa_perception.world.priors import class_prior
from dpa_perception.world.stage import DROP_REASONS, WorldConfig, WorldStage, hidden_bottom, rider_contact_v

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"]
# the mechanics tests run a short, clean sequence: quick confirmation and long memory
QUICK = WorldConfig(track_confirm_hits=3, track_high_score=0.5, track_max_age_s=1.0)
CAM = Camera(1280, 720, 1040.0, x=-2.0, h=7.0, pitch_deg=12.0)
CAM_B = Camera(1280, 720, 1000.0, x=6.0, h=8.0, pitch_deg=14.0, yaw_deg=-9.0)
SIZES = {2: (4.5, 1.8, 1.5), 7: (7.0, 2.3, 3.0), 5: (12.0, 2.55, 3.2), 0: (0.5, 0.6, 1.7)}


def render(cam: Camera, objs: list[tuple[float, float, float, int]]) -> np.ndarray:
    """Image boxes (N, 4) of 3-D boxes (x, y, heading, class id) standing on the ground (world frame)."""
    out = []
    for x, y, heading, cid in objs:
        L, W, H = SIZES[cid]
        c, s = math.cos(heading), math.sin(heading)
        pts = []
        for dl in (-L / 2, L / 2):
            for dw in (-W / 2, W / 2):
                for z in (0.0, H):
                    pts.append((x + dl * c - dw * s, z, y + dl * s + dw * c))  # scene X, Y (up), Z
        uv, depth = cam.project(np.array(pts))
        assert np.all(depth > 0.5)
        out.append([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
    return np.array(out, np.float32)


def traffic(t: float) -> tuple[list[tuple[float, float, float, int]], np.ndarray]:
    """12 road users at constant velocity, and their velocities."""
    objs, vel = [], []
    for lane_x, vy, cids in ((-5.25, -8.0, (2, 7, 2)), (-1.75, -10.0, (2, 5, 2)), (1.75, 9.0, (7, 2, 2)),
                             (5.25, 12.0, (2, 2, 7))):
        for j, cid in enumerate(cids):
            y0 = 22.0 + 15.0 * j - (0.0 if vy > 0 else -8.0)
            objs.append((lane_x, y0 + vy * t, math.atan2(vy, 0.0), cid))
            vel.append((0.0, vy))
    for side, y0 in ((-1.0, 14.0), (1.0, 18.0), (1.0, 30.0)):
        objs.append((side * 8.5, y0 + 1.2 * t, math.pi / 2, 0))
        vel.append((0.0, 1.2))
    return objs, np.array(vel)


def detections(boxes: np.ndarray, class_ids, scores=0.9, rng: np.random.Generator | None = None) -> Detections:
    n = len(boxes)
    noise = rng.normal(0.0, 0.7, boxes.shape).astype(np.float32) if rng is not None else 0.0
    return Detections((boxes + noise).astype(np.float32), np.broadcast_to(np.float32(scores), (n,)).copy(),
                      np.asarray(class_ids, np.int64))


def test_world_config_defaults_and_validation():
    defaults = {p.name: p.default for p in WORLD_PARAMS}
    cfg = WorldConfig.from_values({})
    for name in ("pixel_sigma_px", "max_range_m", "track_high_score", "track_low_score", "track_gate_m",
                 "track_confirm_hits", "track_max_age_s", "track_accel_sigma"):
        assert getattr(cfg, name) == defaults[name]
    assert WorldConfig.from_values({"track_gate_m": 3, "tracking": False}).track_gate_m == 3  # ints are numbers
    assert cfg.tracker().confirm_hits == defaults["track_confirm_hits"]
    cases = [({"track_low_score": 0.8, "track_high_score": 0.5}, "track_low_score (0.8) must not exceed"),
             ({"max_range_m": 0.5}, "max_range_m: 0.5 is outside [1.0, 10000.0]"),
             ({"track_confirm_hits": 2.5}, "track_confirm_hits: expected an integer"),
             ({"track_gate_m": "far"}, "track_gate_m: expected a number"),
             ({"pixel_sigma_px": float("nan")}, "pixel_sigma_px: nan is outside")]
    for values, message in cases:
        with pytest.raises(ConfigError) as e:
            WorldConfig.from_values(values)
        assert str(e.value).startswith(message)


def test_rendered_road_users_are_tracked_at_their_footprint_centres():
    rng = np.random.default_rng(0)
    stage = WorldStage({"cam": demo_geometry(CAM)}, QUICK, NAMES)
    assert stage.has_camera("cam") and not stage.has_camera("other")
    assert stage.process("other", 0, Detections.empty()) is None
    first = None
    for k in range(16):
        t = 0.1 * k
        objs, vel = traffic(t)
        dets = detections(render(CAM, objs), [o[3] for o in objs], rng=rng)
        frame = stage.process("cam", round(t * 1e9), dets)
        assert frame is not None and len(frame.track_ids) == len(dets)
        first = first or frame
    assert first is not None and first.track_ids == [0] * len(dets) and first.objects == []  # not yet confirmed
    assert frame.dropped == dict.fromkeys(DROP_REASONS, 0) and frame.ms > 0
    by_id = {o.track_id: o for o in frame.objects}
    assert len(by_id) == len(objs) == len(frame.fused)
    raw, _ = stage.geometry("cam").ground(np.stack([(dets.boxes[:, 0] + dets.boxes[:, 2]) / 2, dets.boxes[:, 3]], 1))
    hidden = hidden_bottom(dets.boxes.astype(np.float64), np.full(len(dets), -1))
    assert 0 < hidden.sum() < len(dets) / 2  # queued cars hide some bottoms
    for i, (tid, (x, y, _, cid)) in enumerate(zip(frame.track_ids, objs)):
        o = by_id[tid]
        assert o.class_id == cid and o.confirmed and o.camera == "cam"
        assert o.box == tuple(float(v) for v in dets.boxes[i]) and o.detection_score == pytest.approx(0.9)
        err = math.hypot(o.x - x, o.y - y)
        # these boxes' bottom edges are exactly the footprint's near edge; the priors' contact factor is
        # measured on rendered vehicles (wheels set in, body clearance), so it leaves (1 - contact) L / 2;
        # a bottom hidden behind a nearer box is placed from the box top (a car's roof is shorter than
        # these plain boxes' tops): within twice the prior's top spread
        prior = class_prior(NAMES[cid])
        bound = 2.0 * prior.top_std + 0.6 if hidden[i] else 0.6 + (1.0 - prior.contact) * prior.length / 2
        assert err < bound, (i, cid, err, hidden[i])
        if cid != 0:  # the bottom centre alone is the near edge: metres off for a vehicle
            assert math.hypot(raw[i, 0] - x, raw[i, 1] - y) > 1.5
        assert math.hypot(o.vx - vel[i, 0], o.vy - vel[i, 1]) < 1.5
    st = stage.stats()
    assert st["tracks_confirmed"] == len(objs) and st["cameras"]["cam"]["frames"] == 16 and st["mean_ms"] > 0


def test_drops_by_reason_and_low_scores_ignored():
    roi = [0, 0, 640, 0, 640, 720, 0, 720]  # the left half of the image
    stage = WorldStage({"cam": demo_geometry(CAM, roi=roi)}, dataclasses.replace(QUICK, max_range_m=60.0), NAMES)
    left = render(CAM, [(-4.0, 20.0, math.pi / 2, 2)])[0]
    right = render(CAM, [(5.0, 20.0, math.pi / 2, 2)])[0]
    far = render(CAM, [(-6.0, 90.0, math.pi / 2, 2)])[0]
    sky = np.array([600.0, 10.0, 640.0, 40.0], np.float32)  # bottom above the horizon
    boxes = np.stack([left, right, far, sky, left + 1.0])
    dets = Detections(boxes, np.array([0.9, 0.9, 0.9, 0.9, 0.05], np.float32), np.full(5, 2, np.int64))
    for k in range(4):
        frame = stage.process("cam", k * 100_000_000, dets)
    assert frame.dropped == {"horizon": 1, "roi": 1, "range": 1}
    assert frame.track_ids[0] > 0 and frame.track_ids[1:] == [0, 0, 0, 0]
    assert stage.stats()["cameras"]["cam"]["dropped"] == {"horizon": 4, "roi": 4, "range": 4}
    assert stage.stats()["tracks_live"] == 1


def test_two_cameras_fuse_overlapping_views_into_one_track_per_object():
    rng = np.random.default_rng(5)
    stage = WorldStage({"a": demo_geometry(CAM), "b": demo_geometry(CAM_B)}, QUICK, NAMES)
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    unsure: set[int] = set()
    for k in range(16):
        for cam_name, cam, dt in (("a", CAM, 0.0), ("b", CAM_B, 0.04)):
            t = 0.1 * k + dt
            objs, _ = traffic(t)
            objs = objs[:9] if cam_name == "a" else objs[3:12]  # overlapping halves
            dets = detections(render(cam, objs), [o[3] for o in objs], rng=rng)
            frame = stage.process(cam_name, round(t * 1e9), dets)
            hidden = hidden_bottom(dets.boxes.astype(np.float64), np.full(len(dets), -1))
            if k >= 10:
                seen[cam_name].update(frame.track_ids)
                unsure.update(i for i, h in zip(frame.track_ids, hidden) if h)
    # every object but those only camera b sees with a hidden bottom far away (too unsure to start a track)
    assert 11 <= stage.stats()["tracks_confirmed"] <= 12
    assert len(frame.fused) == stage.stats()["tracks_confirmed"]
    assert len(seen["a"] & seen["b"] - {0}) == 6  # the shared objects have the same track in both views
    assert 0 not in seen["a"] and (0 not in seen["b"] or 0 in unsure)


def test_live_update_is_validated_and_takes_effect():
    stage = WorldStage({"cam": demo_geometry(CAM)}, WorldConfig(), NAMES)
    with pytest.raises(ConfigError, match="track_low_score"):
        stage.update(track_low_score=0.9)
    with pytest.raises(ConfigError, match="not a live world parameter: foo"):
        stage.update(foo=1)
    assert stage.config == WorldConfig()
    far = render(CAM, [(0.0, 50.0, math.pi / 2, 2)])
    assert stage.process("cam", 0, detections(far, [2])).dropped["range"] == 0
    stage.update(max_range_m=30.0, track_confirm_hits=1)
    assert stage.config.max_range_m == 30.0 and stage.tracker.config.confirm_hits == 1
    assert stage.process("cam", 10**8, detections(far, [2])).dropped["range"] == 1


def test_a_rider_stands_on_its_two_wheeler_and_a_hidden_bottom_is_flagged():
    person, bike, car = 0, 1, 2
    boxes = np.array([[100, 50, 130, 140],   # rider: feet inside the bicycle's box
                      [95, 100, 140, 160],   # bicycle
                      [300, 100, 340, 200],  # pedestrian, bottom hidden by the car in front
                      [280, 150, 400, 260],  # car
                      [500, 100, 520, 150]], np.float64)  # pedestrian in the open
    cls = np.array([person, bike, person, car, person])
    v, ridden = rider_contact_v(boxes, cls, np.array([person]), np.array([bike, 3]))
    assert v.tolist() == [160, 160, 200, 260, 150] and ridden.tolist() == [bike, -1, -1, -1, -1]
    assert hidden_bottom(boxes, ridden).tolist() == [False, False, True, False, False]

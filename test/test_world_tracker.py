"""World-frame tracker on simulated ground measurements: identities, velocities, ByteTrack passes, fusion."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from dpa_perception.world.priors import PriorTable, contact_offset
from dpa_perception.world.tracker import Measurements, Tracker, TrackerConfig

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"]
PERSON, BICYCLE, CAR, BUS, TRUCK = 0, 1, 2, 5, 7
TABLE = PriorTable.build(NAMES)
CAM_XY = np.array([0.0, -10.0])


def measure(camera: str, t_s: float, xy: np.ndarray, class_ids, heading: np.ndarray, *, scores=0.9,
            sigma: float = 0.2, rng: np.random.Generator | None = None, cam_xy=CAM_XY) -> Measurements:
    """Measurements of objects whose footprint centres are ``xy``: contact points on the near edge, plus noise."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(xy)
    ids = np.broadcast_to(np.asarray(class_ids, np.int64), (n,)).copy()
    ray = np.arctan2(xy[:, 1] - cam_xy[1], xy[:, 0] - cam_xy[0])
    _, dims, std, _ = TABLE.lookup(ids)
    off, _ = contact_offset(dims, std, ray, np.asarray(heading, np.float64), np.zeros(n))
    u = np.stack([np.cos(ray), np.sin(ray)], axis=1)
    noise = rng.normal(0.0, sigma, (n, 2)) if rng is not None else np.zeros((n, 2))
    a = ray - heading
    width = dims[:, 0] * np.abs(np.sin(a)) + dims[:, 1] * np.abs(np.cos(a))
    return Measurements(camera, round(t_s * 1e9), xy - off[:, None] * u + noise,
                        np.broadcast_to(np.eye(2) * sigma ** 2, (n, 2, 2)).copy(), ray, width,
                        np.broadcast_to(np.asarray(scores, np.float64), (n,)).copy(), ids, np.zeros((n, 4)))


def traffic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 objects at constant velocity: 4 lanes of 8 vehicles and 8 pedestrians on the sidewalks."""
    p0, vel, cls = [], [], []
    lanes = [(-5.25, -7.0), (-1.75, -11.0), (1.75, 9.0), (5.25, 13.0)]
    kinds = [CAR, CAR, TRUCK, CAR, BUS, CAR, CAR, TRUCK]
    for lane_x, vy in lanes:
        for j in range(8):
            p0.append((lane_x, 30.0 + 14.0 * j))
            vel.append((0.0, vy))
            cls.append(kinds[(j + int(vy)) % len(kinds)])
    for j in range(8):
        side = -1.0 if j % 2 else 1.0
        p0.append((side * 8.5, 15.0 + 9.0 * j))
        vel.append((0.0, 1.4 * side))
        cls.append(PERSON)
    return np.array(p0), np.array(vel), np.array(cls)


def test_forty_constant_velocity_objects_keep_one_id_each_and_converge():
    """10 Hz, 0.1 m noise, process noise matched to the constant-velocity truth (0.5 m/s^2).

    (With the default 2 m/s^2 the filter follows manoeuvres faster and its velocity RMS is ~0.35 m/s.)
    """
    rng = np.random.default_rng(1)
    p0, vel, cls = traffic()
    heading = np.arctan2(vel[:, 1], vel[:, 0])
    tr = Tracker(NAMES, TrackerConfig(accel_sigma=0.5))
    history, vel_err = [], []
    for k in range(21):
        t = 0.1 * k
        res = tr.step(measure("cam", t, p0 + vel * t, cls, heading, rng=rng, sigma=0.1))
        history.append(res.track_ids)
        if t >= 1.0 - 1e-9:
            by_id = {o.track_id: o for o in res.objects}
            assert len(by_id) == 40
            est = np.array([[by_id[i].vx, by_id[i].vy] for i in res.track_ids])
            vel_err.append(np.hypot(*(est - vel).T))
    ids = np.array(history[2:])  # confirmed from the third hit on
    assert np.all(ids > 0)
    assert np.all(ids == ids[0])  # no switches
    assert len(set(ids[0].tolist())) == 40
    err = np.array(vel_err)
    assert np.sqrt(np.mean(err ** 2, axis=1)).max() < 0.3
    assert err[-1].max() < 0.3
    live, confirmed = tr.counts()
    assert live == confirmed == 40


def test_low_score_second_pass_keeps_a_track_alive():
    def run(low: float) -> list[int]:
        tr = Tracker(NAMES, TrackerConfig(high_score=0.5, low_score=low, max_age_s=0.5))
        out = []
        for k in range(30):
            t = 0.1 * k
            score = 0.9 if k < 5 else 0.3  # occluded / in fog: the detector gets unsure
            res = tr.step(measure("cam", t, [[2.0, 20.0 + 8.0 * t]], CAR, [math.pi / 2], scores=score))
            out.append(int(res.track_ids[0]))
        return out

    with_second = run(0.1)
    assert with_second[2] > 0 and all(i == with_second[2] for i in with_second[2:])
    first_only = run(0.5)
    assert first_only[2] > 0
    assert first_only[-1] == 0  # lost: the low detections neither matched nor started a track


def test_person_and_bicycle_at_the_same_spot_stay_two_tracks():
    tr = Tracker(NAMES)
    for k in range(8):
        t = 0.1 * k
        xy = np.array([[7.5, 20.0 + 4.0 * t], [7.5, 20.0 + 4.0 * t]])
        res = tr.step(measure("cam", t, xy, [PERSON, BICYCLE], [math.pi / 2] * 2))
    a, b = res.track_ids.tolist()
    assert a > 0 and b > 0 and a != b
    names = {o.track_id: o.class_name for o in res.fused}
    assert names == {a: "person", b: "bicycle"}


def test_vehicle_classes_share_a_track_and_vote_on_the_class():
    tr = Tracker(NAMES)
    classes = [TRUCK, CAR, TRUCK, TRUCK, BUS, TRUCK, TRUCK, CAR]
    for k, c in enumerate(classes):
        res = tr.step(measure("cam", 0.1 * k, [[3.0, 40.0]], c, [math.pi / 2]))
    assert tr.counts() == (1, 1)
    (obj,) = res.fused
    assert obj.class_name == "truck" and obj.class_id == TRUCK
    assert obj.class_score == pytest.approx(0.9 * 5 / 8)
    assert obj.hits == 8


def test_two_cameras_observing_one_object_fuse_into_one_track():
    rng = np.random.default_rng(3)
    tr = Tracker(NAMES)
    cam_b = np.array([12.0, 60.0])  # across the road, looking back
    seen = {"a": set(), "b": set()}
    for k in range(20):
        t = 0.1 * k
        for cam, dt, cxy in (("a", 0.0, CAM_XY), ("b", 0.05, cam_b)):
            xy = np.array([[1.75, 20.0 + 10.0 * (t + dt)]])
            res = tr.step(measure(cam, t + dt, xy + np.array([0.15, 0.0]) * (cam == "b"), CAR, [math.pi / 2],
                                  rng=rng, sigma=0.1, cam_xy=cxy))
            seen[cam].update(int(i) for i in res.track_ids if i)
    assert tr.counts() == (1, 1)
    assert seen["a"] == seen["b"] and len(seen["a"]) == 1
    (obj,) = res.fused
    assert obj.hits == 40
    assert obj.vy == pytest.approx(10.0, abs=1.0)


def test_out_of_order_stamps_never_predict_backwards():
    tr = Tracker(NAMES)
    stamps = [0.0, 0.1, 0.2, 0.18, 0.3, 0.25, 0.4, 0.5, 0.45, 0.6]
    for t in stamps:
        res = tr.step(measure("cam" if t * 100 % 10 == 0 else "late", t, [[0.0, 30.0 + 5.0 * t]], CAR, [math.pi / 2]))
        assert tr.stamp.max() == round(max(s for s in stamps[: stamps.index(t) + 1]) * 1e9)
        assert np.all(np.linalg.eigvalsh(tr.P) > 0)
    assert tr.counts() == (1, 1)
    (obj,) = res.fused
    assert obj.vy == pytest.approx(5.0, abs=1.5)


def test_tentative_tracks_die_sooner_and_ids_are_never_reused():
    tr = Tracker(NAMES, TrackerConfig(max_age_s=0.9))
    tr.step(measure("cam", 0.0, [[0.0, 30.0]], CAR, [0.0]))  # one detection: a tentative track
    assert tr.counts() == (1, 0)
    tr.step(measure("cam", 0.31, np.zeros((0, 2)), CAR, []))
    assert tr.counts() == (0, 0)  # gone after max_age / 3
    for k in range(4):
        res = tr.step(measure("cam", 0.4 + 0.1 * k, [[0.0, 50.0]], CAR, [0.0]))
    first = int(res.track_ids[0])
    assert first > 1  # id 1 was the dead tentative track
    tr.step(measure("cam", 1.0, np.zeros((0, 2)), CAR, []))
    assert tr.counts() == (1, 1)  # a confirmed track survives a short gap
    tr.step(measure("cam", 1.65, np.zeros((0, 2)), CAR, []))
    assert tr.counts() == (0, 0)
    for k in range(3):
        res = tr.step(measure("cam", 1.7 + 0.1 * k, [[0.0, 50.0]], CAR, [0.0]))
    assert int(res.track_ids[0]) > first


def test_concurrent_cameras_from_worker_threads():
    p0, vel, cls = traffic()
    heading = np.arctan2(vel[:, 1], vel[:, 0])
    tr = Tracker(NAMES)
    errors: list[BaseException] = []

    def worker(cam: str, offset: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for k in range(60):
                t = 0.05 * k + offset
                tr.step(measure(cam, t, p0 + vel * t, cls, heading, rng=rng, sigma=0.1))
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"cam{i}", 0.01 * i, i)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    n = len(tr.ids)
    assert all(len(getattr(tr, a)) == n for a in ("X", "P", "stamp", "hits", "confirmed", "group", "cls", "dims"))
    assert len(set(tr.ids.tolist())) == n
    assert tr.counts()[1] == 40  # the three views fused into one track per object

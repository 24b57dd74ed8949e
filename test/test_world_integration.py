"""World-frame output end to end, without ROS: the runtime builds the world stage for the cameras with a
geometry, the pipeline tracks and aligns track ids with the 2D output, and dpa-replay writes the
objects topics, tracks.jsonl, the bird's-eye view and the videos of a small demo bag.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from engine_cache import demo_engine_dir

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.types import BatchResult, Detections, StageTiming
from dpa_perception.runtime import Runtime, assemble, load_parameter_files, runtime_config
from dpa_perception.world.geometry import CameraGeometry

CAM0 = "/rsu/cam0/image_raw/compressed"
CAM1 = "/rsu/cam1/image_raw"
CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
SCORE_THRESHOLD = 0.3  # the parameter default: the 2D output's threshold
TRACK_LOW = 0.1  # track_low_score below score_threshold: what the engine decodes down to with tracking on
TRACK_HIGH = 0.6

# what the fake detector "sees" in every frame: (x1, y1, x2, y2, score, class); a car that starts a track,
# a person between score_threshold and track_high_score (published, never starts a track), a car only the
# tracker's second pass gets (between track_low_score and score_threshold) and one below everything
CANDIDATES = np.array([
    [290.0, 240.0, 350.0, 300.0, 0.9, 2],
    [100.0, 190.0, 140.0, 240.0, 0.35, 0],
    [450.0, 170.0, 490.0, 200.0, 0.2, 2],
    [520.0, 200.0, 560.0, 230.0, 0.05, 2],
])  # fmt: skip


def _homography() -> list[float]:
    """Pixel -> ground of a 640x360 pinhole 6 m above the origin, looking north (+y), pitched 15 degrees down."""
    from scipy.spatial.transform import Rotation

    p = math.radians(15.0)
    R = np.column_stack([[1.0, 0.0, 0.0], [0.0, -math.sin(p), -math.cos(p)], [0.0, math.cos(p), -math.sin(p)]])
    q = Rotation.from_matrix(R).as_quat()  # x, y, z, w
    K = [500.0, 0.0, 320.0, 0.0, 500.0, 180.0, 0.0, 0.0, 1.0]
    geo = CameraGeometry.from_intrinsics(K, [], [0.0, 0.0, 6.0, *q])
    assert geo.homography is not None
    H = geo.homography / geo.homography[2, 2]
    return [float(v) for v in H.ravel()]


H0 = _homography()


@dataclass
class _Spec:
    class_names: tuple[str, ...] = CLASSES


class DecodingFakeEngine:
    """What assemble and the pipeline use of a DualModeEngine; returns CANDIDATES decoded at its
    ``decode.score_threshold`` (as the real engine's post-processing does), in no time."""

    backend = "onnxruntime"

    def __init__(self, engine_dir: Path):
        self.engine_dir = str(engine_dir)
        self.decode = DecodeConfig()
        self.spec = _Spec()
        self.thresholds_seen: list[float] = []
        self.closed = False

    def supports(self, input_shape: str) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "engine_dir": self.engine_dir}

    def close(self) -> None:
        self.closed = True

    def infer(self, frames: Sequence[np.ndarray], mode: str, input_shape: str = "square", scale: float = 1.0) -> BatchResult:
        thr = self.decode.score_threshold
        self.thresholds_seen.append(thr)
        keep = CANDIDATES[CANDIDATES[:, 4] >= thr]
        dets = [Detections(keep[:, :4].astype(np.float32), keep[:, 4].astype(np.float32), keep[:, 5].astype(np.int64))
                for _ in frames]  # fmt: skip
        return BatchResult(dets, mode, StageTiming(0.1, 0.2, 0.1))  # type: ignore[arg-type]


def _values(engine_dir: Path, **extra: Any) -> dict[str, Any]:
    return {"engine_dir": str(engine_dir), "camera_topics": [CAM0, CAM1], "cameras.rsu_cam0.homography": H0,
            "cameras.rsu_cam0.image_size": [640, 360], "track_low_score": TRACK_LOW, "track_high_score": TRACK_HIGH,
            **extra}  # fmt: skip


def _assemble(tmp_path: Path, **extra: Any) -> tuple[Runtime, DecodingFakeEngine, list[int]]:
    engine = DecodingFakeEngine(tmp_path)
    clock = [T0]
    rt = assemble(_values(tmp_path, **extra), clock_ns=lambda: clock[0], engine=engine)  # type: ignore[arg-type]
    return rt, engine, clock


def _run_frames(rt: Runtime, clock: list[int], n: int) -> list[Any]:
    """``n`` frames per camera, 10 Hz, each pair run in one inline round (as the fast replay does)."""
    frame = np.full((360, 640, 3), 110, np.uint8)
    results = []
    for _ in range(n):
        for cam in (CAM0, CAM1):
            rt.pipeline.submit(cam, frame, clock[0])
        clock[0] += 5 * MS
        results += rt.pipeline.step(force=True)
        clock[0] += 95 * MS
    return results


# ---------------------------------------------------------------- the runtime


def test_runtime_config_tracks_only_the_camera_with_a_geometry(tmp_path: Path) -> None:
    cfg = runtime_config(_values(tmp_path))
    assert cfg.tracked_cameras == (CAM0,)
    assert cfg.decode.score_threshold == pytest.approx(min(SCORE_THRESHOLD, TRACK_LOW))
    assert cfg.publish_threshold == pytest.approx(SCORE_THRESHOLD)
    low = runtime_config(_values(tmp_path, score_threshold=0.05))  # below track_low_score: the lower one
    assert low.decode.score_threshold == pytest.approx(0.05) and low.publish_threshold == pytest.approx(0.05)
    off = runtime_config(_values(tmp_path, tracking=False))
    assert off.tracked_cameras == () and off.decode.score_threshold == pytest.approx(SCORE_THRESHOLD)
    none = runtime_config({"engine_dir": str(tmp_path), "camera_topics": [CAM0, CAM1]})
    assert none.tracked_cameras == () and none.decode.score_threshold == pytest.approx(SCORE_THRESHOLD)


def test_assembled_runtime_tracks_and_aligns_ids_with_the_2d_output(tmp_path: Path) -> None:
    rt, engine, clock = _assemble(tmp_path)
    try:
        assert rt.world is not None and rt.config.tracked_cameras == (CAM0,)
        assert rt.world.has_camera(CAM0) and not rt.world.has_camera(CAM1)
        assert engine.decode.score_threshold == pytest.approx(TRACK_LOW)  # decoded down for the tracker
        assert rt.pipeline.publish_threshold == pytest.approx(SCORE_THRESHOLD)
        results = _run_frames(rt, clock, 6)
        assert engine.thresholds_seen and all(t == pytest.approx(TRACK_LOW) for t in engine.thresholds_seen)
        proc = [r for r in results if r.status == "processed"]
        assert {r.camera for r in proc} == {CAM0, CAM1} and len(proc) == 12, [(r.status, r.reason) for r in results]
        for r in proc:
            # the 2D output keeps score_threshold: the car and the person, not the second-pass car
            assert r.detections.scores.tolist() == pytest.approx([0.9, 0.35])
            assert r.image_hw == (360, 640)
            assert "world" in r.timing_ms and r.timing_ms["world"] >= 0.0
        cam0 = [r for r in proc if r.camera == CAM0]
        for r in [r for r in proc if r.camera == CAM1]:
            assert r.world is None and r.track_ids is None
        for i, r in enumerate(cam0):
            assert r.world is not None and r.world.camera == CAM0 and r.world.stamp_ns == r.stamp_ns
            assert len(r.world.track_ids) == 3  # one per decoded detection (>= track_low_score)
            assert r.track_ids is not None and len(r.track_ids) == len(r.detections) == 2
            assert r.track_ids == r.world.track_ids[:2]  # aligned: the published ones, in order
            assert r.world.track_ids[2] == 0 and r.track_ids[1] == 0  # low scores never start a track
            if i < P.default("track_confirm_hits") - 1:  # confirmed after track_confirm_hits detections
                assert r.track_ids == [0, 0] and r.world.objects == []
            else:
                assert r.track_ids[0] >= 1
                assert [o.track_id for o in r.world.objects] == [r.track_ids[0]]
                assert [o.track_id for o in r.world.fused] == [r.track_ids[0]]
                car = r.world.objects[0]
                assert car.class_name == "car" and car.detection_score == pytest.approx(0.9)
                assert 5.0 < car.y < 25.0 and abs(car.x) < 3.0  # on the ground ahead of the camera
        assert len({r.track_ids[0] for r in cam0[P.default("track_confirm_hits") - 1:]}) == 1  # one id for the car
        stats = rt.world.stats()
        assert stats["cameras"][CAM0]["frames"] == 6 and stats["cameras"][CAM0]["detections"] == 18
        assert stats["tracks_confirmed"] == 1
    finally:
        rt.close()


def test_live_world_parameters_reach_the_stage_and_refusals_change_nothing(tmp_path: Path) -> None:
    rt, engine, _clock = _assemble(tmp_path)
    try:
        assert rt.world is not None
        assert rt.apply_live({"track_gate_m": 2.0}) == {"track_gate_m": 2.0}
        assert rt.world.config.track_gate_m == 2.0 and rt.world.tracker.config.gate_m == 2.0
        assert rt.values["track_gate_m"] == 2.0
        rt.apply_live({"track_low_score": 0.05})  # the decode threshold follows the tracker's low score
        assert engine.decode.score_threshold == pytest.approx(0.05) and rt.world.config.track_low_score == 0.05
        assert rt.pipeline.publish_threshold == pytest.approx(SCORE_THRESHOLD)
        rt.apply_live({"score_threshold": 0.4})  # the 2D threshold moves, the decode one stays the lower
        assert rt.pipeline.publish_threshold == pytest.approx(0.4)
        assert engine.decode.score_threshold == pytest.approx(0.05)
        before = (engine.decode, rt.world.config, rt.world.tracker.config, rt.pipeline.publish_threshold,
                  rt.pipeline.config, dict(rt.values))  # fmt: skip
        for bad in ({"track_low_score": 0.7},  # above track_high_score (TRACK_HIGH)
                    {"track_high_score": 0.01},  # below track_low_score (0.05)
                    {"score_threshold": 0.2, "track_gate_m": 1.0, "track_low_score": 0.9},
                    {"track_gate_m": 0.0}):  # fmt: skip
            with pytest.raises(ConfigError) as exc:
                rt.apply_live(bad)
            assert "\n" not in str(exc.value)
            after = (engine.decode, rt.world.config, rt.world.tracker.config, rt.pipeline.publish_threshold,
                     rt.pipeline.config, dict(rt.values))  # fmt: skip
            assert after == before, bad
        assert "track_low_score" in _refusal(rt, {"track_low_score": 0.7})
    finally:
        rt.close()


def _refusal(rt: Runtime, changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        rt.apply_live(changes)
    return str(exc.value)


def test_tracking_off_builds_no_world_stage(tmp_path: Path) -> None:
    rt, engine, clock = _assemble(tmp_path, tracking=False)
    try:
        assert rt.world is None and rt.config.tracked_cameras == ()
        assert engine.decode.score_threshold == pytest.approx(SCORE_THRESHOLD)
        proc = [r for r in _run_frames(rt, clock, 3) if r.status == "processed"]
        assert len(proc) == 6
        assert all(r.world is None and r.track_ids is None for r in proc)
        assert all(r.detections.scores.tolist() == pytest.approx([0.9, 0.35]) for r in proc)
        rt.apply_live({"track_low_score": 0.05})  # no tracker: the decode threshold stays score_threshold
        assert engine.decode.score_threshold == pytest.approx(SCORE_THRESHOLD)
    finally:
        rt.close()


# ---------------------------------------------------------------- parameters


def test_camera_parameter_of_an_unknown_camera_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        runtime_config({**_values(tmp_path), "cameras.rsu_cam7.homography": H0})
    msg = str(exc.value)
    assert "\n" not in msg and "cameras.rsu_cam7.homography" in msg and "rsu_cam0" in msg
    params = tmp_path / "cams.yaml"  # the same from a parameter file (nested, as ROS 2 reads it)
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "engine_dir": str(tmp_path), "camera_topics": [CAM0], "cameras": {"rsu_cam9": {"homography": H0}}}}}))
    values = load_parameter_files([params])
    assert values["cameras.rsu_cam9.homography"] == H0
    with pytest.raises(ConfigError, match=r"cameras\.rsu_cam9\.homography") as exc2:
        runtime_config(values)
    assert "\n" not in str(exc2.value)


def test_dpa_replay_set_accepts_camera_parameters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dpa_perception.tools.replay import main as replay_main
    from dpa_perception.tools.replay import parser, replay_values

    text = "[" + ", ".join(repr(v) for v in H0) + "]"
    a = parser().parse_args(["bag", "--out", "o", "--engine", str(tmp_path), "--set", f"camera_topics=[{CAM0}, {CAM1}]",
                             "--set", f"cameras.rsu_cam0.homography={text}"])  # fmt: skip
    values = replay_values(a)
    assert values["cameras.rsu_cam0.homography"] == pytest.approx(H0)
    cfg = runtime_config(values)
    low = min(SCORE_THRESHOLD, P.default("track_low_score"))
    assert cfg.tracked_cameras == (CAM0,) and cfg.decode.score_threshold == pytest.approx(low)
    # a typo in the camera key: refused before the bag is opened, one line, exit status 2
    rc = replay_main(["no_such_bag", "--out", str(tmp_path / "out"), "--engine", str(tmp_path),
                      "--set", f"camera_topics=[{CAM0}]", "--set", f"cameras.rsu_camO.homography={text}"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("dpa-replay: error:") and "rsu_camO" in err[0], err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- dpa-replay on the demo bag


@dataclass
class Replayed:
    bag: Path
    out: Path
    video: Path
    summary: dict[str, Any]
    frames: list[dict[str, Any]]
    tracks: list[dict[str, Any]]
    input_stamps: dict[str, list[int]]
    class_names: tuple[str, ...]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    """A 2-camera, 1.5 s, 6 fps demo bag; cam0 calibrated with dpa-calibrate, cam1 left 2D only; replayed fast."""
    from rosbags.highlevel import AnyReader

    from dpa_perception.demo.make_bag import make_bag
    from dpa_perception.replay.run import run_replay
    from dpa_perception.tools.calibrate import main as calibrate_main

    tmp = tmp_path_factory.mktemp("world_replay")
    engine_dir = demo_engine_dir(tmp)
    bag = tmp / "demo"
    info = make_bag(bag, cameras=2, seconds=1.5, fps=6.0, seed=1, progress=False)
    cams = tmp / "cameras.yaml"
    assert calibrate_main([info["points"], "--out", str(cams), "--camera", CAM0]) == 0
    node = tmp / "node.yaml"  # the node's own file after the calibration's: its camera_topics win
    node.write_text(yaml.safe_dump({"/**": {"ros__parameters": {  # a generous budget: no frame shed on a slow machine
        "engine_dir": str(engine_dir), "camera_topics": [CAM0, CAM1], "latency_budget_ms": 2000.0}}}))
    values = load_parameter_files([cams, node])
    assert len(values["cameras.rsu_cam0.homography"]) == 9 and "cameras.rsu_cam1.homography" not in values
    out, video = tmp / "out", tmp / "video"
    summary = run_replay([bag], values, out, pace="fast", progress=False, video_dir=video, log=lambda _line: None)
    stamps: dict[str, list[int]] = {}
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic in (CAM0, CAM1)]
        for c, _, raw in reader.messages(connections=conns):
            msg: Any = reader.deserialize(raw, c.msgtype)
            s = msg.header.stamp
            stamps.setdefault(c.topic, []).append(int(s.sec) * 1_000_000_000 + int(s.nanosec))
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    tracks = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    from dpa_perception.inference.engine import DualModeEngine

    probe = DualModeEngine(engine_dir)
    try:
        names = tuple(probe.spec.class_names)
    finally:
        probe.close()
    return Replayed(bag, out, video, summary, frames, tracks, stamps, names)


def _processed(r: Replayed, topic: str) -> list[int]:
    return sorted(f["stamp_ns"] for f in r.frames if f["topic"] == topic and f["status"] == "processed")


def test_replay_ends_complete_with_a_world_summary(replayed: Replayed) -> None:
    r = replayed
    assert r.summary["ended"] == "complete"
    assert {t: len(s) for t, s in r.input_stamps.items()} == {CAM0: 9, CAM1: 9}
    for topic in (CAM0, CAM1):
        assert len(_processed(r, topic)) >= 6  # fast pace and a generous budget: (nearly) every frame runs
    on_disk = json.loads((r.out / "summary.json").read_text())
    w = on_disk["world"]
    assert w == r.summary["world"]
    cam_records = [rec for rec in r.tracks if rec["camera"]]
    assert w["tracks"] == len({o["track_id"] for rec in cam_records for o in rec["objects"]}) >= 1
    assert w["objects_published"] == sum(len(rec["objects"]) for rec in cam_records) >= 1
    assert set(w["dropped"]) == {"horizon_dropped", "roi_dropped", "range_dropped"}
    stage = w["world_stage"]
    assert set(stage["cameras"]) == {CAM0}  # cam1 has no geometry
    assert stage["cameras"][CAM0]["frames"] == len(_processed(r, CAM0))
    assert set(w["videos"]) == {CAM0, CAM1}
    for f in r.frames:
        if f["status"] == "processed":
            assert "world" in f["timing_ms"]


def test_tracks_jsonl_has_the_documented_format(replayed: Replayed) -> None:
    from dataclasses import fields

    from dpa_perception.world.objects import WorldObject

    r = replayed
    object_keys = {f.name for f in fields(WorldObject)}
    assert r.tracks, "tracks.jsonl is empty"
    for rec in r.tracks:
        assert set(rec) == {"topic", "camera", "stamp_ns", "mode", "objects"}
        assert rec["topic"] in ("/rsu/cam0/objects", "/objects")
        assert rec["camera"] == (CAM0 if rec["topic"] == "/rsu/cam0/objects" else "")
        assert rec["mode"] in ("int8", "high")
        for o in rec["objects"]:
            assert set(o) == object_keys
            WorldObject.from_dict(o)  # round trip
            assert o["track_id"] >= 1 and o["confirmed"] is True and o["stamp_ns"] == rec["stamp_ns"]
            assert o["class_name"] == r.class_names[o["class_id"]]
            assert len(o["position_cov"]) == len(o["velocity_cov"]) == 4
            if rec["camera"]:
                assert o["camera"] == CAM0 and o["box"] is not None and len(o["box"]) == 4
    stamps = [rec["stamp_ns"] for rec in r.tracks]
    assert stamps == sorted(stamps)
    cam = sorted(rec["stamp_ns"] for rec in r.tracks if rec["topic"] == "/rsu/cam0/objects")
    fused = sorted(rec["stamp_ns"] for rec in r.tracks if rec["topic"] == "/objects")
    assert cam == fused == _processed(r, CAM0)  # one of each per processed frame of the tracked camera
    assert sum(len(rec["objects"]) for rec in r.tracks if rec["camera"]) > 0


def test_birdseye_png_is_written(replayed: Replayed) -> None:
    import cv2

    png = replayed.out / "birdseye.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # drawn, not blank


def test_output_bag_objects_topics_are_readable_and_stamped_like_the_input(replayed: Replayed) -> None:
    from rosbags.highlevel import AnyReader

    from dpa_perception.bags.objects import objects_topics, read_objects

    r = replayed
    bag = r.out / "detections"
    assert objects_topics(bag) == ["/objects", "/rsu/cam0/objects"]  # no /rsu/cam1/objects: no geometry
    objs = read_objects(bag)
    cam0 = objs["/rsu/cam0/objects"]
    assert [m.stamp_ns for m in cam0] == _processed(r, CAM0)
    assert set(_processed(r, CAM0)) <= set(r.input_stamps[CAM0])  # the recorded header stamps
    assert sorted(f["stamp_ns"] for f in r.frames if f["topic"] == CAM0) == sorted(r.input_stamps[CAM0])
    assert [m.stamp_ns for m in objs["/objects"]] == _processed(r, CAM0)
    assert all(m.frame_id == "map" for ms in objs.values() for m in ms)
    by_stamp = {rec["stamp_ns"]: rec for rec in r.tracks if rec["topic"] == "/rsu/cam0/objects"}
    for m in cam0:  # the bag and tracks.jsonl carry the same objects
        rec = by_stamp[m.stamp_ns]
        assert [o.id for o in m.objects] == [str(o["track_id"]) for o in rec["objects"]]
        for bo, jo in zip(m.objects, rec["objects"]):
            assert (bo.x, bo.y) == pytest.approx((jo["x"], jo["y"]))
            assert bo.class_id == str(jo["class_id"]) and bo.score == pytest.approx(jo["class_score"])
            assert math.cos(bo.yaw - jo["heading"]) == pytest.approx(1.0, abs=1e-6)
            assert bo.size == pytest.approx((jo["length"], jo["width"], jo["height"]))
    assert any(m.objects for m in cam0)
    # the bag describes itself: AnyReader deserialises it from the embedded definitions alone
    seen: dict[str, list[Any]] = {}
    types: dict[str, str] = {}
    with AnyReader([bag]) as reader:
        for c, _, raw in reader.messages():
            seen.setdefault(c.topic, []).append(reader.deserialize(raw, c.msgtype))
            types[c.topic] = c.msgtype
    assert types["/rsu/cam0/objects"] == types["/objects"] == "vision_msgs/msg/Detection3DArray"
    assert types["/label_info"] == "vision_msgs/msg/LabelInfo"
    assert types["/rsu/cam0/detections"] == types["/rsu/cam1/detections"] == "vision_msgs/msg/Detection2DArray"
    (info,) = seen["/label_info"]
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(r.class_names))
    assert info.threshold == pytest.approx(SCORE_THRESHOLD)
    first = next(m for m in seen["/rsu/cam0/objects"] if len(m.detections))
    cov = np.asarray(first.detections[0].results[0].pose.covariance)
    assert cov.shape == (36,) and cov[0] > 0 and cov[7] > 0 and cov[35] >= 0
    for topic in ("/rsu/cam0/detections", "/rsu/cam1/detections"):
        cam = CAM0 if "cam0" in topic else CAM1
        got = [int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec) for m in seen[topic]]
        assert got == _processed(r, cam)


def test_detection2d_ids_are_the_track_ids(replayed: Replayed) -> None:
    from rosbags.highlevel import AnyReader

    r = replayed
    tracked = {rec["stamp_ns"]: rec for rec in r.tracks if rec["topic"] == "/rsu/cam0/objects"}
    ids_2d: dict[str, list[tuple[int, list[str], list[float]]]] = {}
    with AnyReader([r.out / "detections"]) as reader:
        conns = [c for c in reader.connections if c.topic.endswith("/detections")]
        for c, _, raw in reader.messages(connections=conns):
            m: Any = reader.deserialize(raw, c.msgtype)
            stamp = int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec)
            ids_2d.setdefault(c.topic, []).append((stamp, [d.id for d in m.detections],
                                                   [float(d.results[0].hypothesis.score) for d in m.detections]))
    cam1 = ids_2d["/rsu/cam1/detections"]
    assert sum(len(ids) for _, ids, _ in cam1) > 0 and all(i == "" for _, ids, _ in cam1 for i in ids)
    non_empty = 0
    for stamp, ids, scores in ids_2d["/rsu/cam0/detections"]:
        assert all(s >= SCORE_THRESHOLD - 1e-6 for s in scores)  # the 2D output keeps score_threshold
        got = [i for i in ids if i]
        non_empty += len(got)
        rec = tracked[stamp]
        # every confirmed-track detection published in 2D carries its id, and only those
        expected = {str(o["track_id"]) for o in rec["objects"] if o["detection_score"] >= SCORE_THRESHOLD}
        assert set(got) == expected, stamp
        assert all(int(i) >= 1 for i in got)
    assert non_empty > 0


def test_video_has_one_readable_mp4_per_camera(replayed: Replayed) -> None:
    import cv2

    r = replayed
    files = sorted(p.name for p in r.video.iterdir())
    assert files == ["rsu_cam0_image_raw_compressed.mp4", "rsu_cam1_image_raw.mp4"]
    assert {Path(p).name for p in r.summary["world"]["videos"].values()} == set(files)
    for name, topic in zip(files, (CAM0, CAM1)):
        cap = cv2.VideoCapture(str(r.video / name))
        try:
            assert cap.isOpened(), name
            n, shape = 0, None
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                n, shape = n + 1, img.shape
        finally:
            cap.release()
        assert n == len(_processed(r, topic)) and shape == (360, 640, 3), (name, n, shape)


def test_a_camera_frame_never_gives_one_track_id_to_two_detections(replayed: Replayed) -> None:
    """A track is one object, and a camera sees an object once per frame: within one camera frame every
    published object (tracks.jsonl, ``<camera ns>/objects``) and every 2D detection has its own track id."""
    from rosbags.highlevel import AnyReader

    r = replayed
    for rec in r.tracks:
        ids = [o["track_id"] for o in rec["objects"]]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        assert not dup, (rec["topic"], rec["stamp_ns"], [(o["track_id"], o["class_name"], o["box"]) for o in rec["objects"]
                                                         if o["track_id"] in dup])
    with AnyReader([r.out / "detections"]) as reader:
        conns = [c for c in reader.connections if c.topic == "/rsu/cam0/detections"]
        for c, _, raw in reader.messages(connections=conns):
            arr: Any = reader.deserialize(raw, c.msgtype)
            got = [d.id for d in arr.detections if d.id]
            assert len(got) == len(set(got)), got


def test_diagnostics_report_the_world_stage_and_cameras_waiting_for_a_geometry(tmp_path: Path) -> None:
    rt, _engine, clock = _assemble(tmp_path)
    try:
        _run_frames(rt, clock, 3)
        (world,) = [s for s in rt.status(clock[0], active=True) if s.name.endswith(": world")]
        assert world.level == 0 and world.value(f"{CAM0} frames") == "3" and world.value("tracks_live") == "1"
        assert world.value(f"{CAM0} dropped") == "horizon 0, range 0, roi 0"
    finally:
        rt.close()
    # intrinsics from CameraInfo still to come: tracked, but no geometry yet -> WARN naming the camera
    rt, _engine, clock = _assemble(tmp_path, **{"cameras.rsu_cam1.camera_info_topic": "/rsu/cam1/camera_info",
                                                "cameras.rsu_cam1.pose": [0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 1.0]})
    try:
        assert rt.config.tracked_cameras == (CAM0, CAM1)
        (world,) = [s for s in rt.status(clock[0], active=True) if s.name.endswith(": world")]
        assert world.level == 1 and CAM1 in world.message and "\n" not in world.message
    finally:
        rt.close()

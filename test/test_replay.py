"""dpa-replay over the shared rosbags (fast pace, real engine): outputs, weather, forced modes, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dpa_perception.bags.reader import iter_images
from dpa_perception.core.errors import BagError
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.topics import detection_topic
from dpa_perception.demo.weather import parse_weather
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.run import run_replay
from dpa_perception.tools.replay import main

ROADSIDE = "uadetrac_roadside_compressed_sqlite3"
TOPIC = "/roadside_cam/image_raw/compressed"
FRAME_KEYS = {"topic", "stamp_ns", "status", "mode", "reason", "e2e_ms", "visibility", "detections"}
NS = 1_000_000_000


def read_frames(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def processed(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["status"] == "processed"]


def read_bag(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(log time, message)], decoded with the definitions stored in the bag only."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    out["__types__"] = [(0, types)]
    return out


def write_bag(path: Path, topic: str, msgtype: str, msgs: list[tuple[int, Any]], mcap: bool = True) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if mcap else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conn = w.add_connection(topic, msgtype, typestore=ts)
        for t, msg in msgs:
            w.write(conn, t, ts.serialize_cdr(msg, msgtype))
    return path


def compressed_msg(stamp_ns: int, data: bytes, frame_id: str = "cam_optical") -> Any:
    from rosbags.typesys import Stores, get_typestore

    T = get_typestore(Stores.ROS2_HUMBLE).types
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS), frame_id=frame_id)
    return T["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=np.frombuffer(data, np.uint8))


@pytest.fixture(scope="module")
def roadside(testdata: Path) -> Path:
    return testdata / "bags" / ROADSIDE


@pytest.fixture(scope="module")
def input_frames(roadside: Path) -> list[tuple[str, int, str]]:
    return [(m.topic, m.stamp_ns, m.frame_id) for m in iter_images([roadside])]


@pytest.fixture(scope="module")
def auto_run(roadside: Path, yolox_engine_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay_auto")
    rc = main([str(roadside), "--engine", str(yolox_engine_dir), "--out", str(out), "--pace", "fast", "--no-progress"])
    assert rc == 0
    return out


def replay(engine: DualModeEngine, bag: Path, out: Path, **kw: Any) -> dict[str, Any]:
    values = {"engine_dir": str(engine.engine_dir), "precision_mode": kw.pop("mode", "auto")}
    return run_replay([bag], values, out, pace="fast", progress=False, engine=engine, **kw)


# ---------------------------------------------------------------------------- the roadside bag, auto


def test_summary(auto_run: Path) -> None:
    s = json.loads((auto_run / "summary.json").read_text())
    for key in ("frames_in", "frames_processed", "frames_dropped", "deadline_misses", "latency_ms",
                "stage_latency_ms", "frames_per_mode", "switches", "detections_per_class", "visibility"):
        assert key in s, key
    assert s["frames_in"] == 42
    assert s["frames_processed"] + s["frames_dropped"] + s["frames_rejected"] == 42
    assert s["frames_processed"] >= 40, s["drop_reasons"]
    assert s["frames_rejected"] == 0
    assert set(s["latency_ms"]) == {"p50", "p95", "p99"}
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] <= s["latency_ms"]["p99"]
    assert set(s["stage_latency_ms"]) == {"queue_wait", "decode", "visibility", "preprocess", "inference", "postprocess", "world"}
    assert all(set(v) == {"p50", "p95", "p99"} for v in s["stage_latency_ms"].values())
    assert s["stage_latency_ms"]["inference"]["p50"] > 0
    assert set(s["frames_per_mode"]) == {"int8", "high"}
    assert sum(s["frames_per_mode"].values()) == s["frames_processed"]
    assert isinstance(s["switches"], int) and s["switches"] >= 0
    assert s["detections_per_class"].get("car", 0) > 100
    assert set(s["visibility"]) >= {"mean", "max", "labels"}
    assert s["visibility"]["mean"] < 0.5, "the roadside bag is clear daylight"
    assert s["deadline_misses"] >= 0 and s["topics"] == [TOPIC]


def test_frames_jsonl_has_one_line_per_input_frame(auto_run: Path, input_frames: list[tuple[str, int, str]],
                                                   yolox_engine_dir: Path) -> None:
    frames = read_frames(auto_run)
    assert len(frames) == 42
    assert sorted((f["topic"], f["stamp_ns"]) for f in frames) == sorted((t, s) for t, s, _ in input_frames)
    for f in frames:
        assert FRAME_KEYS <= set(f), f
        assert f["status"] in ("processed", "dropped")
        if f["status"] == "processed":
            assert f["mode"] in ("int8", "high")
            assert f["reason"] in ("clear", "visibility", "warming_up", "budget", "int8_does_not_pay")
            assert f["e2e_ms"] > 0
            assert 0.0 <= f["visibility"]["score"] <= 1.0 and isinstance(f["visibility"]["label"], str)
            assert isinstance(f["detections"], int) and f["detections"] >= 0
    # the first frames are clear daylight: int8 where the build measured INT8 paying, else high throughout
    if Manifest.load(yolox_engine_dir).int8_verdict()[0] in (None, "pays"):
        assert [f["mode"] for f in processed(frames)[:10]] == ["int8"] * 10
    else:
        assert {(f["mode"], f["reason"]) for f in processed(frames)} == {("high", "int8_does_not_pay")}
    assert sum(f["detections"] for f in frames) > 300


def test_report_png(auto_run: Path) -> None:
    png = auto_run / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300


def test_detections_bag(auto_run: Path, input_frames: list[tuple[str, int, str]]) -> None:
    det_topic = detection_topic(TOPIC)
    assert det_topic == "/roadside_cam/detections"
    bag = read_bag(auto_run / "detections")
    types = bag.pop("__types__")[0][1]
    assert types == {det_topic: "vision_msgs/msg/Detection2DArray", "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
                     "/label_info": "vision_msgs/msg/LabelInfo"}
    frames = read_frames(auto_run)
    proc = {f["stamp_ns"]: f for f in processed(frames)}
    dets = bag[det_topic]
    assert len(dets) == len(proc)
    inputs = {s: fid for _, s, fid in input_frames}
    seen = set()
    for _, msg in dets:
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        assert stamp in proc, stamp
        assert msg.header.frame_id == inputs[stamp] == "roadside_cam_optical"
        assert len(msg.detections) == proc[stamp]["detections"]
        for d in msg.detections:
            assert d.header.frame_id == "roadside_cam_optical"
            assert d.bbox.size_x > 0 and d.bbox.size_y > 0
            assert 0 <= d.bbox.center.position.x <= 960 and 0 <= d.bbox.center.position.y <= 540
            assert d.results[0].hypothesis.class_id.isdigit() and 0 < d.results[0].hypothesis.score <= 1
        seen.add(stamp)
    assert seen == set(proc)


def test_diagnostics_about_once_per_bag_second(auto_run: Path, input_frames: list[tuple[str, int, str]]) -> None:
    diags = read_bag(auto_run / "detections")["/diagnostics"]
    span_s = (input_frames[-1][1] - input_frames[0][1]) / NS  # 8.2 s
    assert span_s - 1 <= len(diags) <= span_s + 2, len(diags)
    times = [t for t, _ in diags]
    assert times == sorted(times)
    gaps = np.diff(times[:-1]) / NS
    assert np.allclose(gaps, 1.0), gaps
    names = {s.name for _, m in diags for s in m.status}
    assert {"dpa_perception: latency", "dpa_perception: precision", "dpa_perception: visibility",
            "dpa_perception: engine", f"dpa_perception: camera {TOPIC}"} <= names
    last = diags[-1][1]
    cam = next(s for s in last.status if s.name == f"dpa_perception: camera {TOPIC}")
    assert dict((kv.key, kv.value) for kv in cam.values)["received"] == "42"


# ---------------------------------------------------------------------------- weather and modes


def test_fog_ramp_moves_auto_from_int8_to_high(warm_yolox_engine: DualModeEngine, roadside: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_yolox_engine, "int8_pays", True)  # about visibility; the speed verdict: test_governor
    s = replay(warm_yolox_engine, roadside, tmp_path, weather=parse_weather("fog-ramp"))
    proc = processed(read_frames(tmp_path))
    assert len(proc) >= 40
    q = len(proc) // 4
    first = sum(f["mode"] == "int8" for f in proc[:q]) / q
    last = sum(f["mode"] == "high" for f in proc[-q:]) / q
    assert first >= 0.9 and last >= 0.9, (first, last, [(f["mode"], f["visibility"]["score"]) for f in proc])
    assert s["weather"] == "fog-ramp"
    assert s["visibility"]["max"] > s["visibility"]["mean"] > 0.3


def test_forced_high_mode(warm_yolox_engine: DualModeEngine, roadside: Path, tmp_path: Path) -> None:
    s = replay(warm_yolox_engine, roadside, tmp_path, mode="high")
    proc = processed(read_frames(tmp_path))
    assert len(proc) >= 40
    assert {(f["mode"], f["reason"]) for f in proc} == {("high", "forced")}
    assert s["frames_per_mode"] == {"int8": 0, "high": len(proc)} and s["switches"] == 0
    assert s["precision_mode"] == "high"


def test_cli_forced_int8_mode(roadside: Path, yolox_engine_dir: Path, tmp_path: Path) -> None:
    rc = main([str(roadside), "--engine", str(yolox_engine_dir), "--out", str(tmp_path), "--pace", "fast",
               "--no-progress", "--mode", "int8", "--weather", "fog:0.9"])
    assert rc == 0
    proc = processed(read_frames(tmp_path))
    assert len(proc) >= 40
    assert {(f["mode"], f["reason"]) for f in proc} == {("int8", "forced")}
    assert min(f["visibility"]["score"] for f in proc) > 0.5  # heavy fog, still int8


# ---------------------------------------------------------------------------- other bags


def test_tiny_bag_from_real_rosbag2(warm_yolox_engine: DualModeEngine, testdata: Path, tmp_path: Path) -> None:
    bag = testdata / "bags" / "ros2bag_tools_images"
    s = replay(warm_yolox_engine, bag, tmp_path)
    frames = read_frames(tmp_path)
    assert len(frames) == 3 == s["frames_in"]
    assert all(f["topic"] == "/image" for f in frames)
    assert all(f["status"] in ("processed", "rejected", "dropped") for f in frames)


def test_corrupt_jpeg_frame_is_rejected_others_processed(warm_yolox_engine: DualModeEngine, testdata: Path,
                                                         tmp_path: Path) -> None:
    jpeg = (testdata / "images" / "uadetrac_MVI_20011_img00001.jpg").read_bytes()
    t0 = 1_700_000_000 * NS
    stamps = [t0 + i * 200_000_000 for i in range(4)]
    payloads = [jpeg, jpeg, jpeg[: len(jpeg) // 2], jpeg]
    bag = write_bag(tmp_path / "corrupt_mcap", "/cam/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                    [(t, compressed_msg(t, p)) for t, p in zip(stamps, payloads)])
    s = replay(warm_yolox_engine, bag, tmp_path / "out")
    frames = {f["stamp_ns"]: f for f in read_frames(tmp_path / "out")}
    assert sorted(frames) == stamps
    bad = frames[stamps[2]]
    assert bad["status"] == "rejected" and bad["mode"] is None
    assert "truncated" in bad["reason"].lower() or "jpeg" in bad["reason"].lower()
    assert [frames[t]["status"] for t in stamps if t != stamps[2]] == ["processed"] * 3
    assert s["frames_rejected"] == 1 and s["frames_processed"] == 3
    cam = s["per_camera"]["/cam/image_raw/compressed"]
    assert cam["input_errors"] == 1 and "truncated" in cam["last_error"].lower()
    dets = read_bag(tmp_path / "out" / "detections")["/cam/detections"]
    assert len(dets) == 3


def test_sqlite3_bag_written_by_rosbags(warm_yolox_engine: DualModeEngine, testdata: Path, tmp_path: Path) -> None:
    jpeg = (testdata / "images" / "rtts_fog_SJZ_Bing_492.png").read_bytes()
    ok, enc = cv2.imencode(".jpg", cv2.imread(str(testdata / "images" / "rtts_fog_SJZ_Bing_492.png")))
    assert ok and jpeg
    t0 = 1_700_000_000 * NS
    msgs = [(t0 + i * 100_000_000, compressed_msg(t0 + i * 100_000_000, enc.tobytes(), "fog_cam")) for i in range(3)]
    bag = write_bag(tmp_path / "fog_sqlite3", "/fog/image_raw/compressed", "sensor_msgs/msg/CompressedImage", msgs,
                    mcap=False)
    s = replay(warm_yolox_engine, bag, tmp_path / "out")
    assert s["frames_processed"] == 3
    dets = read_bag(tmp_path / "out" / "detections")["/fog/detections"]
    assert [m.header.frame_id for _, m in dets] == ["fog_cam"] * 3


# ---------------------------------------------------------------------------- errors


def test_unknown_topic_lists_the_bag_topics(warm_yolox_engine: DualModeEngine, roadside: Path, tmp_path: Path) -> None:
    with pytest.raises(BagError) as exc:
        replay(warm_yolox_engine, roadside, tmp_path, topics=["/front/image_raw"])
    assert "/front/image_raw" in str(exc.value) and TOPIC in str(exc.value)


def test_cli_unknown_topic_exits_2(roadside: Path, yolox_engine_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([str(roadside), "--engine", str(yolox_engine_dir), "--out", str(tmp_path / "o"), "--pace", "fast",
               "--no-progress", "--topics", "/front/image_raw"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "/front/image_raw" in err and TOPIC in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cli_missing_bag_exits_2(yolox_engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([str(tmp_path / "no_such_bag"), "--engine", str(yolox_engine_dir), "--out", str(tmp_path / "o"),
               "--pace", "fast", "--no-progress"])
    assert rc == 2
    assert "no_such_bag" in capsys.readouterr().err


def test_cli_bag_without_image_topics_exits_2(yolox_engine_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from rosbags.typesys import Stores, get_typestore

    String = get_typestore(Stores.ROS2_HUMBLE).types["std_msgs/msg/String"]
    bag = write_bag(tmp_path / "strings_mcap", "/chatter", "std_msgs/msg/String",
                    [(NS * (i + 1), String(data=f"hello {i}")) for i in range(3)])
    rc = main([str(bag), "--engine", str(yolox_engine_dir), "--out", str(tmp_path / "o"), "--pace", "fast",
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "dpa-replay: error:" in err
    assert "no " in err.lower() and "image topic" in err.lower(), err

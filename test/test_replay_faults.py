"""Replay robustness on hostile bags (issue 12, item 7): clocks, types, corrupt messages and frames.

Every run here asserts the accounting invariant: per camera, frames in = processed + dropped +
rejected + failed, and one frames.jsonl line per image message of the bags.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from replay_bags import COMPRESSED, IMAGE, JPEG_IMAGE, NS, T0, jpeg_bag, jpeg_msg, raw_msg, set_metadata_start, write

from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.run import run_replay
from dpa_perception.replay.timeline import BagScan, Timeline, _collapse, _place

BAGS = "bags"
ROADSIDE = "uadetrac_roadside_compressed_sqlite3"
TINY = "ros2bag_tools_images"  # sim time: metadata and messages at 0 .. 2 s
CAM = "/cam/image_raw/compressed"


@pytest.fixture(scope="module")
def jpeg(testdata: Path) -> bytes:
    return (testdata / "images" / JPEG_IMAGE).read_bytes()


def replay(engine: DualModeEngine, bags: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
    values = {"engine_dir": str(engine.engine_dir), "precision_mode": "auto"}
    kw.setdefault("pace", "fast")
    return run_replay(bags, values, out, progress=False, engine=engine, log=lambda line: None, **kw)


def frames(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def diagnostics(out: Path) -> list[int]:
    from rosbags.highlevel import AnyReader

    with AnyReader([out / "detections"]) as r:
        return [t for c, t, _ in r.messages() if c.topic == "/diagnostics"]


def assert_accounted(s: dict[str, Any], out: Path, messages: int) -> None:
    fr = frames(out)
    assert len(fr) == s["frames_in"] == messages
    assert s["frames_processed"] + s["frames_dropped"] + s["frames_rejected"] + s["frames_failed"] == messages
    for cam, c in s["frames_per_camera"].items():
        assert c["in"] == c["processed"] + c["dropped"] + c["rejected"] + c["failed"], (cam, c)
    assert (out / "report.png").is_file() and (out / "summary.json").is_file()


# ---------------------------------------------------------------------------- one timeline


def scan(name: str, topics: set[str], times_s: list[float]) -> BagScan:
    t = np.array([int(x * NS) for x in times_s], np.int64)
    return BagScan(Path(name), topics, t, int(t[0]), int(t[-1]))


def test_timeline_merges_simultaneous_cameras_and_chains_recordings_of_one_camera() -> None:
    a = scan("a", {"/c1"}, [0, 1, 2])
    b = scan("b", {"/c2"}, [0.5, 1.5])  # another camera recorded at the same time: merged
    c = scan("c", {"/c1"}, [1, 2, 3])  # the same camera again (a second sim-time bag): after a
    d = scan("d", {"/c1"}, [1e9, 1e9 + 1])  # decades later: the gap collapses to 1 s
    tl = Timeline([a, b, c, d])
    _place(tl.scans, NS)
    assert (a.shift_ns, b.shift_ns) == (0, 0)
    assert c.shift_ns == 2 * NS  # starts 1 s after a's end (2 s)
    _collapse(tl, 10 * NS, NS)
    played = [tl.played(i, int(t)) / NS for i, s in enumerate(tl.scans) for t in s.times]
    assert played == [0, 1, 2, 0.5, 1.5, 3, 4, 5, 6, 7]
    assert tl.first_ns == 0 and tl.last_ns == 7 * NS
    assert len(tl.gaps) == 1 and tl.gaps[0]["gap_s"] > 1e8


def test_timeline_never_overlaps_two_recordings_on_one_topic() -> None:
    a = scan("a", {"/c1", "/c2"}, [0, 10])
    b = scan("b", {"/c1"}, [0, 10])  # after a on /c1
    c = scan("c", {"/c2"}, [2, 5])  # overlaps a on /c2 (not b): after a, merged with b
    _place([a, b, c], NS)
    assert (a.shift_ns, b.shift_ns, c.shift_ns) == (0, 11 * NS, 9 * NS)


def test_bags_years_apart_play_back_to_back(warm_yolox_engine: DualModeEngine, testdata: Path, tmp_path: Path) -> None:
    """The roadside bag (2020) and a sim-time bag (1970), of different message types (a KeyError before)."""
    bags = [testdata / BAGS / ROADSIDE, testdata / BAGS / TINY]
    t = time.perf_counter()
    s = replay(warm_yolox_engine, bags, tmp_path / "out")
    wall = time.perf_counter() - t
    assert wall < 20, wall
    assert s["ended"] == "complete"
    assert_accounted(s, tmp_path / "out", 45)
    tl = s["timeline"]
    assert len(tl["gaps_collapsed"]) == 1 and tl["gaps_collapsed"][0]["gap_s"] > 1e9
    assert tl["played_span_s"] < 12  # 2 s + 1 s + 8.2 s, not 50 years
    assert any("collapsed" in w for w in tl["warnings"])
    diags = diagnostics(tmp_path / "out")
    assert len(diags) <= tl["played_span_s"] + 2, len(diags)  # one per played second, not per second of the gap
    assert s["frames_per_camera"]["/roadside_cam/image_raw/compressed"]["processed"] >= 40
    play = [f["play_ns"] for f in frames(tmp_path / "out")]
    assert play == sorted(play) and (play[-1] - play[0]) / NS < 12


def test_metadata_start_zero_is_detected_and_ignored_realtime(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                             tmp_path: Path) -> None:
    bag = jpeg_bag(tmp_path / "zero_start", jpeg, n=12, hz=6.0)  # 1.83 s of frames in 2023
    set_metadata_start(bag, 0)
    t = time.perf_counter()
    s = replay(warm_yolox_engine, [bag], tmp_path / "out", pace="realtime")
    wall = time.perf_counter() - t
    span = 11 / 6.0
    assert wall < 2 * span + 5, wall  # no sleeping from 1970 (+5 s: outputs written, a loaded CI machine)
    assert s["ended"] == "complete"
    assert_accounted(s, tmp_path / "out", 12)
    warnings = s["timeline"]["warnings"]
    assert any("metadata.yaml" in w and "messages' own times" in w for w in warnings), warnings
    assert s["timeline"]["bags"][0]["metadata_start_ns"] == 0
    assert len(diagnostics(tmp_path / "out")) <= 4
    assert s["frames_processed"] >= 8 and s["frames_rejected"] == 0


def test_one_camera_recorded_as_image_and_compressed_in_two_bags(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                                 tmp_path: Path) -> None:
    import cv2

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    a = jpeg_bag(tmp_path / "a", jpeg, topic="/cam", n=5)
    b = write(tmp_path / "b", [("/cam", IMAGE, T0 + i * NS // 10, raw_msg(T0 + i * NS // 10, img)) for i in range(5)])
    s = replay(warm_yolox_engine, [a, b], tmp_path / "out")
    assert s["ended"] == "complete"
    assert_accounted(s, tmp_path / "out", 10)
    assert s["frames_rejected"] == s["frames_failed"] == 0 and s["frames_processed"] >= 8  # both types decode
    assert {f["status"] for f in frames(tmp_path / "out")[5:]} <= {"processed", "dropped"}
    assert s["timeline"]["bags"][1]["shift_s"] > 0  # same camera, same times: played after the first bag


# ---------------------------------------------------------------------------- corrupt messages and frames


def test_corrupt_cdr_messages_are_rejected_on_their_camera(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                           tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    items: list[tuple[str, str, int, Any]] = []
    for i in range(12):
        t = T0 + i * NS // 10
        items.append((CAM, COMPRESSED, t, jpeg_msg(t, jpeg)))
        items.append(("/other/image_raw/compressed", COMPRESSED, t + 1, jpeg_msg(t, jpeg)))
    from rosbags.typesys import Stores, get_typestore

    whole = bytes(get_typestore(Stores.ROS2_HUMBLE).serialize_cdr(jpeg_msg(T0, jpeg), COMPRESSED))
    bad = [b"", b"\x00\x01\x00\x00", rng.integers(0, 256, 64, dtype=np.uint8).tobytes(),
           b"\x00\x01\x00\x00" + b"\xff" * 40, whole[:30], whole[: len(whole) // 2]]  # fmt: skip
    for k, raw in enumerate(bad):
        items.append((CAM, COMPRESSED, T0 + k * NS // 10 + 50_000_000, raw))
    bag = write(tmp_path / "corrupt_cdr", sorted(items, key=lambda x: x[2]))
    s = replay(warm_yolox_engine, [bag], tmp_path / "out")
    assert s["ended"] == "complete"
    assert_accounted(s, tmp_path / "out", 30)
    cam = s["frames_per_camera"][CAM]
    assert cam["rejected"] == 6 and cam["processed"] + cam["dropped"] == 12
    assert s["frames_per_camera"]["/other/image_raw/compressed"]["rejected"] == 0
    rejected = [f for f in frames(tmp_path / "out") if f["status"] == "rejected"]
    assert all(f["topic"] == CAM and "corrupt" in f["reason"] for f in rejected), rejected
    assert s["per_camera"][CAM]["input_errors"] == 6 and "corrupt" in s["per_camera"][CAM]["last_error"]


def test_strip_frames_are_rejected_on_their_camera_only(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                       tmp_path: Path) -> None:
    """20000x1, 1x20000 and 4000x1 frames between good ones, next to a second, healthy camera."""
    import cv2

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    strips = [np.zeros((1, 20000, 3), np.uint8), np.zeros((20000, 1, 3), np.uint8), np.zeros((1, 4000, 3), np.uint8)]
    items: list[tuple[str, str, int, Any]] = []
    for i in range(10):
        t = T0 + i * NS // 5
        items.append(("/raw", IMAGE, t, raw_msg(t, img)))
        items.append((CAM, COMPRESSED, t + 1000, jpeg_msg(t + 1000, jpeg)))
        if i % 3 == 1:
            items.append(("/raw", IMAGE, t + NS // 10, raw_msg(t + NS // 10, strips[i // 3])))
    bag = write(tmp_path / "strips", items)
    s = replay(warm_yolox_engine, [bag], tmp_path / "out")
    assert s["ended"] == "complete"
    assert_accounted(s, tmp_path / "out", 23)
    strip_stamps = {t for _, kind, t, m in items if kind == IMAGE and m.width * m.height in (20000, 4000)}
    rec = {f["stamp_ns"]: f for f in frames(tmp_path / "out") if f["topic"] == "/raw"}
    assert {t for t, f in rec.items() if f["status"] == "rejected"} == strip_stamps
    assert s["frames_per_camera"]["/raw"]["rejected"] == 3 and s["per_camera"]["/raw"]["input_errors"] == 3
    assert s["frames_per_camera"]["/raw"]["processed"] >= 7  # of 10 (a few may go stale on a loaded machine)
    assert s["frames_per_camera"][CAM]["processed"] >= 7 and s["frames_per_camera"][CAM]["rejected"] == 0
    assert s["frames_failed"] == 0


def test_mono16_bag_processes_nothing(warm_yolox_engine: DualModeEngine, tmp_path: Path) -> None:
    img = np.full((48, 64), 1000, np.uint16)
    bag = write(tmp_path / "mono16", [("/depth", IMAGE, T0 + i * NS // 10, raw_msg(T0 + i * NS // 10, img, "mono16"))
                                      for i in range(5)])  # fmt: skip
    s = replay(warm_yolox_engine, [bag], tmp_path / "out")
    assert s["ended"] == "nothing_processed"
    assert_accounted(s, tmp_path / "out", 5)
    assert s["frames_rejected"] == 5 and "mono16" in next(iter(s["reject_reasons"]))


def test_corrupt_bag_realtime_ends_within_twice_its_duration(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                             tmp_path: Path) -> None:
    """Corrupt messages, a metadata start of 0 and a second bag 14 years later, at realtime pace."""
    items: list[tuple[str, str, int, Any]] = [(CAM, COMPRESSED, T0 + i * NS // 5, jpeg_msg(T0 + i * NS // 5, jpeg))
                                              for i in range(8)]  # fmt: skip
    items += [(CAM, COMPRESSED, T0 + i * NS // 5 + 1000, b"\x00\x01\x00\x00garbage") for i in range(0, 8, 2)]
    items += [(CAM, COMPRESSED, T0 + i * NS // 5 + 2000, jpeg_msg(0, jpeg[: len(jpeg) // 3])) for i in range(1, 8, 3)]
    a = write(tmp_path / "a", sorted(items, key=lambda x: x[2]))
    set_metadata_start(a, 0)
    b = jpeg_bag(tmp_path / "b", jpeg, n=8, hz=5.0, t0=T0 + 14 * 365 * 86400 * NS)  # 2037 (int32 header seconds)
    t = time.perf_counter()
    s = replay(warm_yolox_engine, [a, b], tmp_path / "out", pace="realtime")
    wall = time.perf_counter() - t
    played = s["timeline"]["played_span_s"]
    assert played < 4.0, played  # 1.4 s + 1 s + 1.4 s
    assert wall < 2 * played + 5, (wall, played)  # +5 s: outputs written after the last frame, a loaded machine
    assert_accounted(s, tmp_path / "out", 23)
    assert s["frames_rejected"] == 7 and s["ended"] == "complete"


def test_a_batch_that_raises_leaves_its_frames_failed_not_lost(warm_yolox_engine: DualModeEngine, jpeg: bytes,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dpa_perception.core.pipeline import Pipeline

    real = Pipeline.step
    calls = {"n": 0}

    def flaky(self: Pipeline, force: bool = False) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            with self._lock:  # take the waiting frames, as a batch that fails half-way would
                for cam in self._cams.values():
                    cam.pending = None
            raise RuntimeError("injected batch failure")
        return real(self, force)

    monkeypatch.setattr(Pipeline, "step", flaky)
    bag = jpeg_bag(tmp_path / "bag", jpeg, n=8)
    s = replay(warm_yolox_engine, [bag], tmp_path / "out")
    assert_accounted(s, tmp_path / "out", 8)
    failed = [f for f in frames(tmp_path / "out") if f["status"] == "failed"]
    assert len(failed) == s["frames_failed"] == 1
    assert "injected batch failure" in failed[0]["reason"]
    assert s["frames_processed"] + s["frames_dropped"] == 7 and s["ended"] == "complete"

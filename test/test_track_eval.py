"""Tracking metrics of dpa-eval --tracks on synthetic tracks with known answers, and once on a real demo bag."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dpa_perception.demo import evaluate, track_eval
from dpa_perception.demo.track_eval import COCO_NAMES, GtFrame, TrackLine, evaluate_tracks
from dpa_perception.world.objects import WorldObject

CAM = "/rsu/cam0/image_raw/compressed"
GT_TOPIC = "/rsu/cam0/ground_truth/objects"
OUT = "/rsu/cam0/objects"
T0 = 1_700_000_000_000_000_000
DT = 100_000_000  # 10 fps


def _obj(tid: int, x: float, y: float, *, vx: float = 0.0, vy: float = 0.0, age: float = 2.0,
         confirmed: bool = True, name: str = "car", stamp: int = T0) -> WorldObject:
    return WorldObject(track_id=tid, stamp_ns=stamp, camera=CAM, class_id=2, class_name=name, class_score=0.9, x=x, y=y,
                       z=0.0, position_cov=(0.1, 0.0, 0.0, 0.1), vx=vx, vy=vy, velocity_cov=(0.1, 0.0, 0.0, 0.1),
                       heading=math.atan2(vy, vx) if vx or vy else 0.0, heading_std=0.1, length=4.5, width=1.8,
                       height=1.5, age_s=age, hits=10, confirmed=confirmed, existence=0.9)


def _world(n: int = 20, speeds=((0.0, 5.0), (0.0, -8.0)), starts=((-2.0, 10.0), (2.0, 60.0))):
    """Ground truth of objects moving at constant velocity, one GT frame per 100 ms."""
    frames = {}
    for i in range(n):
        stamp = T0 + i * DT
        xy = np.array([(sx + vx * i * 0.1, sy + vy * i * 0.1) for (sx, sy), (vx, vy) in zip(starts, speeds)])
        frames[stamp] = GtFrame(stamp, [str(k) for k in range(len(starts))], xy, ["car"] * len(starts))
    gt = {GT_TOPIC: frames}
    track_eval._velocities(gt)
    return gt, speeds


def _perfect_lines(gt, speeds, *, mode: str = "int8", offset=(0.0, 0.0), ids=None):
    lines = []
    for i, (stamp, f) in enumerate(sorted(gt[GT_TOPIC].items())):
        objs = []
        for k, ((x, y), (vx, vy)) in enumerate(zip(f.xy, speeds)):
            tid = ids(i, k) if ids else k + 1
            objs.append(_obj(tid, x + offset[0], y + offset[1], vx=vx, vy=vy, age=0.1 * i, stamp=stamp))
        lines.append(TrackLine(OUT, CAM, stamp, mode, tuple(objs)))
    return lines


def test_perfect_tracks_score_one() -> None:
    gt, speeds = _world()
    res = evaluate_tracks(_perfect_lines(gt, speeds), gt, {CAM: (0.0, 0.0)}, [(T0, "clear")])
    m = res["topics"][OUT]["all"]
    assert m["mota"] == 1.0 and m["idf1"] == 1.0 and m["num_switches"] == 0
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["num_objects"] == 40 and m["num_frames"] == 20
    assert m["velocity_error_mps"]["median"] == pytest.approx(0.0, abs=1e-6)
    # ages 0.0 .. 1.9 s: only the frames with tracks older than 1 s count for the velocity
    assert m["velocity_error_mps"]["n"] == 2 * 9
    assert res["topics"]["cameras"]["all"]["mota"] == 1.0
    assert res["hota"] is None and "HOTA" in res["hota_note"]


def test_one_identity_switch_is_counted() -> None:
    gt, speeds = _world()
    lines = _perfect_lines(gt, speeds, ids=lambda i, k: 7 if (k == 1 and i >= 10) else k + 1)
    m = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0)}, [])["topics"][OUT]["all"]
    assert m["num_switches"] == 1
    assert m["mota"] == pytest.approx(1 - 1 / 40)
    assert m["idf1"] == pytest.approx(30 / 40)  # track 2 holds object 1 for 10 of 20 frames, 7 for the other 10
    assert m["precision"] == 1.0 and m["recall"] == 1.0


def test_position_error_bands_and_the_match_distance() -> None:
    stamps = [T0 + i * DT for i in range(4)]
    starts = ((0.0, 10.0), (0.0, 40.0), (0.0, 70.0))
    gt = {GT_TOPIC: {s: GtFrame(s, ["0", "1", "2"], np.array(starts), ["car"] * 3) for s in stamps}}
    track_eval._velocities(gt)
    lines = [TrackLine(OUT, CAM, s, "high", (_obj(1, 0.1, 10.0), _obj(2, 0.0, 40.5), _obj(3, 1.0, 70.0),
                                              _obj(4, 30.0, 30.0))) for s in stamps]
    m = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0)}, [])["topics"][OUT]["all"]
    pe = m["position_error_m"]
    assert pe["0-25"]["median"] == pytest.approx(0.1) and pe["0-25"]["n"] == 4
    assert pe["25-50"]["median"] == pytest.approx(0.5) and pe["50+"]["p90"] == pytest.approx(1.0)
    assert m["num_false_positives"] == 4 and m["precision"] == pytest.approx(0.75) and m["recall"] == 1.0
    assert m["motp"] == pytest.approx((0.1 + 0.5 + 1.0) / 3, abs=1e-4)
    assert m["velocity_error_mps"]["median"] == pytest.approx(0.0)  # all still, tracks at rest
    # 3 m off is beyond the 2.5 m gate: a miss and a false positive, not a match
    far = [TrackLine(OUT, CAM, s, "high", (_obj(1, 3.0, 10.0),)) for s in stamps]
    m = evaluate_tracks(far, gt, {CAM: (0.0, 0.0)}, [])["topics"][OUT]["all"]
    assert m["num_matches"] == 0 and m["num_misses"] == 12 and m["num_false_positives"] == 4
    m = evaluate_tracks(far, gt, {CAM: (0.0, 0.0)}, [], max_distance=3.5)["topics"][OUT]["all"]
    assert m["num_matches"] == 4


def test_unconfirmed_tracks_and_class_awareness() -> None:
    gt, _speeds = _world(n=5)
    lines = [TrackLine(OUT, CAM, s, "int8", (_obj(1, *f.xy[0], confirmed=False), _obj(2, *f.xy[1], name="truck")))
             for s, f in sorted(gt[GT_TOPIC].items())]
    m = evaluate_tracks(lines, gt, {}, [])["topics"][OUT]["all"]
    assert m["num_matches"] == 5 and m["num_misses"] == 5 and m["num_false_positives"] == 0
    assert m["position_error_m"]["0-25"]["n"] == 0  # no camera position: no band
    m = evaluate_tracks(lines, gt, {}, [], class_aware=True)["topics"][OUT]["all"]
    assert m["num_matches"] == 0 and m["num_false_positives"] == 5


def test_weather_and_mode_breakdowns_select_frames() -> None:
    gt, speeds = _world()
    lines = _perfect_lines(gt, speeds)
    lines = [TrackLine(ln.topic, ln.camera, ln.stamp_ns, "high" if i % 4 == 0 else "int8", ln.objects)
             for i, ln in enumerate(lines)]
    weather = [(T0 - 1, "clear"), (T0 + 5 * DT, "fog")]
    b = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0)}, weather)["topics"][OUT]
    assert b["by_weather"]["clear"]["num_frames"] == 5 and b["by_weather"]["fog"]["num_frames"] == 15
    assert b["by_mode"]["high"]["num_frames"] == 5 and b["by_mode"]["int8"]["num_frames"] == 15
    assert b["by_mode"]["high"]["mota"] == 1.0
    table = track_eval.markdown_table({"topics": {OUT: b}})
    assert "weather fog" in table and "mode high" in table


def test_fused_output_is_compared_with_the_union_of_the_cameras() -> None:
    gt, _speeds = _world(n=6)
    # a second camera sees only object 1, 3 ms later
    other = {s + 3_000_000: GtFrame(s + 3_000_000, ["1", "9"], np.array([f.xy[1], (5.0, 5.0)]), ["car", "car"])
             for s, f in gt[GT_TOPIC].items()}
    gt["/rsu/cam1/ground_truth/objects"] = other
    lines = [TrackLine("objects", "", s, "int8", (_obj(1, *f.xy[0]), _obj(2, *f.xy[1]), _obj(3, 5.0, 5.0)))
             for s, f in sorted(gt[GT_TOPIC].items())]
    res = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0), "/rsu/cam1/image_raw": (4.0, 0.0)}, [])
    m = res["topics"]["objects"]["all"]
    assert m["mota"] == 1.0 and m["num_objects"] == 18 and m["num_unique_objects"] == 3
    assert "cameras" not in res["topics"]  # no per-camera output


def test_tracks_file_errors_are_one_line(tmp_path: Path) -> None:
    from dpa_perception.core.errors import ConfigError

    bad = tmp_path / "tracks.jsonl"
    bad.write_text('{"topic": "objects", "camera": "", "stamp_ns": 1, "mode": "int8", "objects": []}\n{"topic": 1}\n')
    with pytest.raises(ConfigError, match="line 2") as e:
        track_eval.load_tracks(bad)
    assert "\n" not in str(e.value)
    bad.write_text("")
    with pytest.raises(ConfigError, match="no tracks records"):
        track_eval.load_tracks(bad)


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dpa_perception.demo.make_bag import make_bag

    out = tmp_path_factory.mktemp("track_eval") / "demo"
    make_bag(out, cameras=2, seconds=1.0, fps=5.0, seed=3, progress=False)
    return out


def test_ground_truth_as_tracks_scores_one_through_the_cli(demo_bag: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    from dpa_perception.bags.objects import read_objects

    gt = read_objects(demo_bag)
    replay = tmp_path / "replay"
    replay.mkdir()
    with (replay / "tracks.jsonl").open("w") as f:
        for k, cam in enumerate(("/rsu/cam0/image_raw/compressed", "/rsu/cam1/image_raw")):
            for m in gt[f"/rsu/cam{k}/ground_truth/objects"]:
                objs = [_obj(int(o.id) + 1, o.x, o.y, stamp=m.stamp_ns, name=COCO_NAMES[o.class_id]).to_dict()
                        for o in m.objects]
                f.write(json.dumps({"topic": f"/rsu/cam{k}/objects", "camera": cam, "stamp_ns": m.stamp_ns,
                                    "mode": "int8", "objects": objs}) + "\n")
    out_json = tmp_path / "eval.json"
    assert evaluate.main(["--tracks", str(replay), "--bag", str(demo_bag), "--json", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert res["points"].endswith("demo_points.yaml")
    for topic in ("/rsu/cam0/objects", "/rsu/cam1/objects", "cameras"):
        m = res["topics"][topic]["all"]
        assert m["mota"] == 1.0 and m["idf1"] == 1.0 and m["num_switches"] == 0
        assert m["num_frames"] == (10 if topic == "cameras" else 5)
    assert list(res["topics"]["cameras"]["by_weather"]) == ["clear"]
    assert "| /rsu/cam0/objects | all | 1.000 | 1.000 | 0 |" in capsys.readouterr().out


def test_cli_mode_errors_are_one_line(demo_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = ([["--tracks", str(tmp_path)], "needs --bag"],
             [["--tracks", str(tmp_path), "--bag", str(demo_bag)], "no tracks.jsonl"],
             [["--tracks", str(tmp_path), "--engine", str(tmp_path)], "either --engine"],
             [[], "either --engine"],
             [["--engine", str(tmp_path), "--bag", str(demo_bag)], "--bag only with --tracks"],
             [["--tracks", str(tmp_path), "--bag", str(demo_bag), "--frames", "3"], "--frames only with --engine"],
             [["--tracks", str(tmp_path), "--bag", str(demo_bag), "--max-distance", "nan"], "--max-distance"])
    for argv, message in cases:
        capsys.readouterr()
        assert evaluate.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dpa-eval: error: ") and message in err[0], (argv, err)


def test_a_cyclist_is_matched_within_class_groups_so_its_person_and_bicycle_never_swap() -> None:
    """A rider and its bicycle share one footprint: a class-agnostic match would swap them at will."""
    stamps = [T0 + i * DT for i in range(10)]
    xy = np.array([(3.0, 20.0), (3.0, 20.0)])
    gt = {GT_TOPIC: {s: GtFrame(s, ["5", "6"], xy, ["person", "bicycle"]) for s in stamps}}
    lines = []
    for i, s in enumerate(stamps):
        person, bike = _obj(1, 3.05, 20.0, name="person", stamp=s), _obj(2, 2.95, 20.0, name="bicycle", stamp=s)
        # the bicycle track sits nearer the person's truth every other frame; the order flips too
        objs = (person, bike) if i % 2 else (_obj(2, 3.0, 20.0, name="bicycle", stamp=s), person)
        if i in (3, 4):  # the person's detection is missed: only the bicycle track is there
            objs = tuple(o for o in objs if o.class_name == "bicycle")
        lines.append(TrackLine(OUT, CAM, s, "int8", objs))
    m = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0)}, [])["topics"][OUT]["all"]
    assert m["num_switches"] == 0 and m["idf1"] == pytest.approx(18 / 19, abs=1e-4)
    assert m["num_misses"] == 2 and m["num_false_positives"] == 0
    exact = evaluate_tracks(lines, gt, {CAM: (0.0, 0.0)}, [], class_aware=True)["topics"][OUT]["all"]
    assert exact["mota"] == pytest.approx(0.9) and exact["num_switches"] == 0  # 2 misses of 20

"""replay.birdseye: the bird's-eye PNG of tracks.jsonl records and the cameras' fields of view."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpa_perception.replay.birdseye import DPI, FIG_SIZE_IN, collect_tracks, select_records, write_birdseye
from dpa_perception.world.objects import WorldObject

NAMES = ("person", "bicycle", "car")
FOVS = {
    "/rsu/cam0": (np.array([[0.0, 0.0], [40.0, -15.0], [40.0, 15.0]]), (0.0, 0.0)),
    "/rsu/cam1": ([[60.0, 0.0], [20.0, 20.0], [20.0, -20.0]], None),
    "/rsu/cam2": (None, (-5.0, 3.0)),  # sees no ground: its position only
}


def obj(track_id: int, stamp_ns: int, x: float, y: float, class_id: int = 2, camera: str = "/rsu/cam0") -> dict[str, Any]:
    return WorldObject(
        track_id=track_id, stamp_ns=stamp_ns, camera=camera, class_id=class_id, class_name=NAMES[class_id],
        class_score=0.9, x=x, y=y, z=0.0, position_cov=(0.1, 0.0, 0.0, 0.1), vx=1.0, vy=0.0,
        velocity_cov=(0.2, 0.0, 0.0, 0.2), heading=0.0, heading_std=0.1, length=4.5, width=1.8, height=1.5,
        age_s=1.0, hits=3, confirmed=True, existence=0.9,
    ).to_dict()  # fmt: skip


def record(stamp_ns: int, objects: list[dict[str, Any]], camera: str = "") -> dict[str, Any]:
    topic = f"{camera}/objects" if camera else "objects"
    return {"topic": topic, "camera": camera, "stamp_ns": stamp_ns, "mode": "int8", "objects": objects}


def image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def expected_size() -> tuple[int, int]:
    return round(FIG_SIZE_IN[1] * DPI), round(FIG_SIZE_IN[0] * DPI)


def test_fused_records_preferred_and_tracks_collected() -> None:
    recs = [record(1, [obj(1, 1, 0.0, 0.0)], "/rsu/cam0"), record(2, [obj(5, 2, 1.0, 1.0), obj(0, 2, 9.0, 9.0)])]
    assert select_records(recs) == [recs[1]]
    tracks = collect_tracks(select_records(recs))
    assert list(tracks) == [5]  # track id 0 (untracked) is left out
    per_cam = [record(2, [obj(1, 2, 1.0, 0.0)], "/rsu/cam1"), record(1, [obj(1, 1, 0.0, 0.0)], "/rsu/cam0"),
               record(3, [obj(1, 3, 2.0, 0.0)], "/rsu/cam0")]  # fmt: skip
    tracks = collect_tracks(select_records(per_cam))
    assert set(tracks) == {("/rsu/cam0", 1), ("/rsu/cam1", 1)}  # one id, two cameras: two tracks
    assert tracks[("/rsu/cam0", 1)].xs == [0.0, 2.0]  # in stamp order
    assert math.isclose(tracks[("/rsu/cam0", 1)].length(), 2.0)


def test_png_with_tracks(tmp_path: Path) -> None:
    recs = []
    for k in range(50):  # a car driving east, a person walking north, one short track
        t = k * 100_000_000
        objs = [obj(1, t, 5.0 + 0.5 * k, 0.0), obj(2, t, 20.0, -10.0 + 0.3 * k, class_id=0)]
        if k < 3:
            objs.append(obj(3, t, 30.0, 5.0, class_id=1))
        recs.append(record(t, objs))
    out = tmp_path / "birdseye.png"
    write_birdseye(out, recs, FOVS, NAMES, title="test replay")
    img = image(out)
    assert img.shape[:2] == expected_size()
    assert out.stat().st_size > 20_000
    non_white = np.any(img < 240, axis=2).mean()
    assert 0.02 < non_white < 0.9
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    assert (hsv[:, :, 1] > 100).sum() > 500  # coloured tracks and fields of view, not only axes


def test_no_records_still_writes_a_plot(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    write_birdseye(empty, [], {})
    img = image(empty)
    assert img.shape[:2] == expected_size()
    assert np.any(img < 200)  # axes and the "no tracks" text
    only_fov = tmp_path / "fov.png"
    write_birdseye(only_fov, [record(1, [])], FOVS, title="nothing seen")
    assert image(only_fov).shape[:2] == expected_size()
    assert not np.array_equal(image(only_fov), img)


def test_thousands_of_records_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    start = rng.uniform(-50, 50, size=(300, 2))
    vel = rng.uniform(-2, 2, size=(300, 2))
    templates = [obj(0, 0, 0.0, 0.0, class_id=c) for c in range(3)]
    recs = []
    for k in range(5000):
        ids = (np.arange(30) + k // 50) % 300  # 30 objects a record, tracks coming and going
        xy = start[ids] + vel[ids] * k * 0.01
        objs = [{**templates[int(i) % 3], "track_id": int(i) + 1, "stamp_ns": k, "x": float(x), "y": float(y)}
                for i, (x, y) in zip(ids, xy)]  # fmt: skip
        recs.append(record(k * 50_000_000, objs))
    out = tmp_path / "big.png"
    t0 = time.perf_counter()
    write_birdseye(out, recs, FOVS, NAMES)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert image(out).shape[:2] == expected_size()

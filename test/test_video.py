"""replay.video: one annotated MP4 per camera, annotated JPEGs, and ``dpa-detect --annotate``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core.drawing import class_color, draw_detections
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.types import Detections
from dpa_perception.replay.video import AnnotatedVideo, output_folder, safe_name, write_annotated_image
from dpa_perception.tools import detect

NAMES = ("person", "bicycle", "car")


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64))


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def test_safe_name() -> None:
    assert safe_name("/rsu/cam0") == "rsu_cam0"
    assert safe_name("/rsu/cam 1/image_raw") == "rsu_cam_1_image_raw"
    assert safe_name("../..") == "camera"
    assert safe_name("") == "camera"


def test_one_video_per_camera_with_every_frame(tmp_path: Path) -> None:
    out = tmp_path / "videos"  # created on the first frame
    rng = np.random.default_rng(1)
    with AnnotatedVideo(out, fps=10) as video:
        for k in range(12):
            base = rng.integers(0, 60, size=(240, 320, 3), dtype=np.uint8)
            d = dets((40 + k, 60, 160 + k, 200, 0.8, 2))
            video.add("/rsu/cam0", base, d, NAMES, [7], header=f"cam0  int8  t={k / 10:.1f} s")
            if k % 2 == 0:  # a second camera, at another size, whose later frames change size
                size = (360, 480) if k == 0 else (720, 960)
                video.add("/rsu/cam1", np.zeros((*size, 3), np.uint8), d, NAMES)
        assert video.frame_counts == {"/rsu/cam0": 12, "/rsu/cam1": 6}
    paths = video.close()  # a second close is harmless
    assert paths == {"/rsu/cam0": out / "rsu_cam0.mp4", "/rsu/cam1": out / "rsu_cam1.mp4"}
    frames, fps = read_video(paths["/rsu/cam0"])
    assert len(frames) == 12 and frames[0].shape == (240, 320, 3)
    assert fps == pytest.approx(10, abs=0.01)
    cap = cv2.VideoCapture(str(paths["/rsu/cam0"]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    frames1, _ = read_video(paths["/rsu/cam1"])
    assert len(frames1) == 6 and all(f.shape == (360, 480, 3) for f in frames1)  # the first frame's size
    f = frames[0].astype(np.int16)  # the header band (dark, white text) and the box survive the codec
    assert f[:10, :, :].mean() < 60 and f[:14].max() > 150
    color = draw_detections(np.zeros((240, 320, 3), np.uint8), dets((40, 60, 160, 200, 0.8, 2)))[200, 100]
    assert tuple(color) == class_color(2)
    edge, inside = f[200, 80:120].mean(axis=0), f[150, 80:120].mean(axis=0)  # box bottom edge vs its inside
    assert np.linalg.norm(edge - color) < 0.4 * np.linalg.norm(inside - color)  # mp4v blurs a 1-px line
    with pytest.raises(RuntimeError):
        video.add("/rsu/cam0", np.zeros((240, 320, 3), np.uint8))


def test_two_topics_with_one_stem_keep_apart(tmp_path: Path) -> None:
    video = AnnotatedVideo(tmp_path, fps=5)
    for topic in ("/a/b", "/a_b"):
        video.add(topic, np.zeros((64, 64, 3), np.uint8))
    paths = video.close()
    assert {p.name for p in paths.values()} == {"a_b.mp4", "a_b_2.mp4"}
    with pytest.raises(ConfigError):
        AnnotatedVideo(tmp_path, fps=0)


def test_write_annotated_image(tmp_path: Path) -> None:
    frame = np.full((200, 300, 3), 100, np.uint8)
    path = write_annotated_image(tmp_path / "ann", "frame 1", frame, dets((10, 40, 100, 150, 0.9, 0)), NAMES,
                                 header="cam0 high")  # fmt: skip
    assert path == tmp_path / "ann" / "frame_1.jpg"
    img = cv2.imread(str(path))
    assert img is not None and img.shape == frame.shape
    assert np.abs(img.astype(np.int16) - frame).max() > 100  # something drawn
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        output_folder(tmp_path / "file")


def test_detect_annotate_writes_one_jpeg_per_image(yolox_engine_dir: Path, testdata: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    images = [testdata / "images" / "dog.jpg", testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"]
    out = tmp_path / "annotated" / "deep"
    rc = detect.main([*map(str, images), "--engine", str(yolox_engine_dir), "--mode", "int8", "--annotate", str(out)])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["annotated"]) for line in lines] == [out / "dog.jpg", out / "uadetrac_MVI_20011_img00001.jpg"]
    for src, line in zip(images, lines):
        assert line["detections"], src  # both images have objects the model finds
        orig = cv2.imread(str(src))
        img = cv2.imread(line["annotated"])
        assert img is not None and img.shape == orig.shape
        x1, _y1, x2, y2 = (round(v) for v in line["detections"][0]["box_xyxy"])
        diff = np.abs(img.astype(np.int16) - orig).max(axis=2)
        assert diff[min(y2, orig.shape[0] - 1), x1:x2].mean() > 40  # the box edge drawn
        assert img[:6].mean() < 60  # the dark header band
    assert sorted(p.name for p in out.iterdir()) == ["dog.jpg", "uadetrac_MVI_20011_img00001.jpg"]


def test_detect_annotate_refuses_a_file(yolox_engine_dir: Path, testdata: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    target = tmp_path / "taken"
    target.write_text("not a folder")
    rc = detect.main([str(testdata / "images" / "dog.jpg"), "--engine", str(yolox_engine_dir), "--annotate", str(target)])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before any image ran
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dpa-detect: error: --annotate") and "not a folder" in err[0]
    assert target.read_text() == "not a folder"

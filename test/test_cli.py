"""The command-line tools, called in-process: output format, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from engine_cache import demo_engine_dir

from dpa_perception.tools import bench, build, detect

IMAGES = ["dog.jpg", "kitti_000008.png", "uadetrac_MVI_20011_img00001.jpg"]
DETECTION_KEYS = {"class_id", "class_name", "score", "box_xyxy"}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:"), lines[0]
    return lines[0]


# ---------------------------------------------------------------- dpa-detect


@pytest.mark.parametrize("shape", ["square", "rect"])
def test_detect_prints_one_json_line_per_image(yolox_engine_dir: Path, testdata: Path, capsys: pytest.CaptureFixture,
                                               shape: str) -> None:  # fmt: skip
    paths = [testdata / "images" / n for n in IMAGES]
    rc = detect.main([*map(str, paths), "--engine", str(yolox_engine_dir), "--input-shape", shape])
    out, err = capsys.readouterr()
    assert rc == 0, err
    records = _json_lines(out)
    assert len(records) == len(paths)
    for path, rec in zip(paths, records):
        assert {"image", "width", "height", "mode", "detections", "timing_ms"} <= set(rec)
        assert rec["image"] == str(path)
        h, w = cv2.imread(str(path)).shape[:2]
        assert (rec["width"], rec["height"]) == (w, h)
        assert rec["mode"] == "high"
        assert isinstance(rec["timing_ms"], dict) and rec["timing_ms"]
        assert rec["detections"], f"{path.name}: nothing found"
        for d in rec["detections"]:
            assert set(d) == DETECTION_KEYS
            assert 0.3 <= d["score"] <= 1.0
            x1, y1, x2, y2 = d["box_xyxy"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, (path.name, d)
    # dog.jpg shows a dog, a bicycle and a pickup truck (testdata README)
    names = {d["class_name"] for d in records[0]["detections"]}
    assert {"dog", "bicycle"} <= names and names & {"truck", "car"}


def test_detect_int8_mode_and_options(yolox_engine_dir: Path, testdata: Path, capsys: pytest.CaptureFixture) -> None:
    img = str(testdata / "images" / "dog.jpg")
    rc = detect.main([img, "--engine", str(yolox_engine_dir), "--mode", "int8", "--score-threshold", "0.5",
                      "--class-agnostic"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    (rec,) = _json_lines(out)
    assert rec["mode"] == "int8"
    assert rec["detections"] and all(d["score"] >= 0.5 for d in rec["detections"])


def test_detect_missing_image_reports_and_continues(yolox_engine_dir: Path, testdata: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    missing = tmp_path / "no_such_frame.jpg"
    good = testdata / "images" / "dog.jpg"
    rc = detect.main([str(missing), str(good), "--engine", str(yolox_engine_dir)])
    out, err = capsys.readouterr()
    assert rc != 0
    line = _one_error_line(err, "dpa-detect")
    assert "no_such_frame.jpg" in line
    records = _json_lines(out)
    assert [r["image"] for r in records] == [str(good)]


def test_detect_undecodable_image(yolox_engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"not a png at all" * 10)
    rc = detect.main([str(bad), "--engine", str(yolox_engine_dir)])
    out, err = capsys.readouterr()
    assert rc != 0
    assert "garbage.png" in _one_error_line(err, "dpa-detect")
    assert out.strip() == ""


def test_detect_missing_engine(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = detect.main([str(testdata / "images" / "dog.jpg"), "--engine", str(tmp_path / "nonexistent")])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "nonexistent" in _one_error_line(err, "dpa-detect")
    assert out.strip() == ""


def test_detect_bad_option_value(yolox_engine_dir: Path, testdata: Path, capsys: pytest.CaptureFixture) -> None:
    rc = detect.main([str(testdata / "images" / "dog.jpg"), "--engine", str(yolox_engine_dir),
                      "--score-threshold", "7"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    assert "score_threshold" in _one_error_line(err, "dpa-detect")


# ---------------------------------------------------------------- dpa-bench


@pytest.mark.parametrize("shape", ["square", "rect"])
def test_bench_last_line_is_json(yolox_engine_dir: Path, capsys: pytest.CaptureFixture, shape: str) -> None:
    rc = bench.main(["--engine", str(yolox_engine_dir), "--runs", "3", "--input-shape", shape])
    out, err = capsys.readouterr()
    assert rc == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert {"high_ms", "int8_ms", "ratio"} <= set(last)
    assert last["high_ms"] > 0 and last["int8_ms"] > 0
    assert last["ratio"] == pytest.approx(last["high_ms"] / last["int8_ms"], rel=0.01)
    assert last["input_shape"] == shape


def test_bench_on_images_with_batch(yolox_engine_dir: Path, testdata: Path, capsys: pytest.CaptureFixture) -> None:
    rc = bench.main(["--engine", str(yolox_engine_dir), "--runs", "2", "--batch", "2",
                     "--images", str(testdata / "images" / "dog.jpg")])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["batch"] == 2


def test_bench_missing_engine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = bench.main(["--engine", str(tmp_path / "none"), "--runs", "1"])
    _, err = capsys.readouterr()
    assert rc == 2
    _one_error_line(err, "dpa-bench")


# ---------------------------------------------------------------- dpa-build


def test_build_missing_model(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = build.main([str(tmp_path / "missing_model.onnx"), "--calib", str(testdata / "images"),
                     "--out", str(tmp_path / "eng"), "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    assert "missing_model.onnx" in _one_error_line(err, "dpa-build")
    assert not (tmp_path / "eng").exists()


def test_build_calib_without_images(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    calib = tmp_path / "empty"
    calib.mkdir()
    rc = build.main([str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(calib),
                     "--out", str(tmp_path / "eng"), "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    assert "no images" in err.splitlines()[-1]
    assert not (tmp_path / "eng").exists()


def test_build_existing_out(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "eng"
    out_dir.mkdir()
    rc = build.main([str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(testdata / "images"),
                     "--out", str(out_dir), "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    assert "--force" in _one_error_line(err, "dpa-build")


def test_build_malformed_description(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "det.onnx"
    model.write_bytes((testdata / "models" / "yolox_nano.onnx").read_bytes())
    model.with_suffix(".yaml").write_text("family: yolox\nscale: bright\n")
    rc = build.main([str(model), "--calib", str(testdata / "images"), "--out", str(tmp_path / "eng"), "--no-progress"])
    _, err = capsys.readouterr()
    assert rc == 2
    assert "det.yaml" in _one_error_line(err, "dpa-build")
    assert not (tmp_path / "eng").exists()


def test_build_missing_calib(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = build.main([str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(tmp_path / "no_such_calib"),
                     "--out", str(tmp_path / "eng"), "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    assert "no_such_calib" in err.splitlines()[-1] and err.splitlines()[-1].startswith("dpa-build: error:")
    assert not (tmp_path / "eng").exists()


def test_build_tensorrt_forwards_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dpa-build --backend tensorrt on a built folder hands every TensorRT option to the TensorRT builder."""
    seen: list[tuple[Path, dict]] = []
    monkeypatch.setattr(build, "run_tensorrt_build", lambda d, a, log: seen.append((d, vars(a))))
    out = tmp_path / "eng"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    rc = build.main(["m.onnx", "--calib", "c", "--out", str(out), "--backend", "tensorrt", "--placement",
                     "int8=dla:0,high=gpu", "--no-gpu-fallback", "--max-batch", "4", "--opt-batch", "2",
                     "--workspace-mib", "512", "--timing-cache", str(tmp_path / "t.cache")])  # fmt: skip
    assert rc == 0
    ((engine_dir, a),) = seen
    assert engine_dir == out
    assert (a["placement"], a["no_gpu_fallback"], a["max_batch"], a["opt_batch"], a["workspace_mib"],
            a["timing_cache"]) == ("int8=dla:0,high=gpu", True, 4, 2, 512, tmp_path / "t.cache")  # fmt: skip


def test_build_tensorrt_bad_placement_fails_first(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A malformed --placement is one error line before any ONNX work starts."""
    monkeypatch.setattr(build, "build", lambda *a, **k: pytest.fail("the build started"))
    rc = build.main([str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(testdata / "images"),
                     "--out", str(tmp_path / "eng"), "--backend", "tensorrt", "--placement", "int8=toaster"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 2
    _one_error_line(err, "dpa-build")
    assert not (tmp_path / "eng").exists()


# ---------------------------------------------------------------- option errors before any work (issue 12)


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--batch=-2"], ["--runs", "0"], ["--images", "<empty>"],
                                  ["--images", "<missing>"], ["--threads=-1"]])  # fmt: skip
def test_bench_bad_options_are_one_line(yolox_engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        argv: list[str]) -> None:  # fmt: skip
    (tmp_path / "empty").mkdir()
    argv = [{"<empty>": str(tmp_path / "empty"), "<missing>": str(tmp_path / "none")}.get(a, a) for a in argv]
    rc = bench.main(["--engine", str(yolox_engine_dir), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    line = _one_error_line(err, "dpa-bench")
    assert argv[0].split("=")[0] in line


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_eval_refuses_engines_that_are_not_the_demo_detectors(yolox_engine_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from dpa_perception.demo import evaluate

    before = _snapshot(yolox_engine_dir)
    rc = evaluate.main(["--engine", str(yolox_engine_dir), "--frames", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "not built from the demo detector" in _one_error_line(err, "dpa-eval")
    assert _snapshot(yolox_engine_dir) == before  # and nothing written into it


def test_eval_on_the_demo_engine_missing_or_modified(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    from dpa_perception.demo import evaluate

    demo = demo_engine_dir(tmp_path)
    before = _snapshot(demo)
    out_json = tmp_path / "eval.json"
    assert evaluate.main(["--engine", str(demo), "--frames", "1", "--json", str(out_json)]) == 0
    out, _ = capsys.readouterr()
    assert "| high |" in out and json.loads(out_json.read_text())["frames_per_condition"] == 1
    assert _snapshot(demo) == before  # dpa-eval never writes into the engine folder
    for argv, message in ((["--json", str(demo / "eval.json")], "inside the engine folder"),
                          (["--frames", "0"], "--frames"), (["--json", str(tmp_path)], "is a folder")):  # fmt: skip
        assert evaluate.main(["--engine", str(demo), *argv]) == 2
        assert message in _one_error_line(capsys.readouterr().err, "dpa-eval")
    assert _snapshot(demo) == before
    modified = Path(shutil.copytree(demo, tmp_path / "modified"))
    with (modified / "high.onnx").open("ab") as f:
        f.write(b"\0")
    assert evaluate.main(["--engine", str(modified), "--frames", "1"]) == 2
    assert "sha256" in _one_error_line(capsys.readouterr().err, "dpa-eval")
    assert evaluate.main(["--engine", str(tmp_path / "no_engine"), "--frames", "1"]) == 2
    assert "not found" in _one_error_line(capsys.readouterr().err, "dpa-eval")


DEMO_BAG_REFUSALS = [("OUT.bag", [], "ROS 1 bag"), ("b", ["--cameras", "0"], "--cameras"),
                     ("b", ["--seconds", "nan"], "--seconds"),
                     ("b", ["--fps", "inf"], "--fps"), ("b", ["--seed=-1"], "--seed"),
                     ("b", ["--jpeg-quality", "101"], "--jpeg-quality"), ("b", ["--seconds", "0.01"], "no frame")]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "message"), DEMO_BAG_REFUSALS)
def test_demo_bag_refusals(tmp_path: Path, capsys: pytest.CaptureFixture, name: str, argv: list[str], message: str) -> None:
    from dpa_perception.demo import make_bag

    rc = make_bag.main([str(tmp_path / name), "--quiet", *argv])
    assert rc == 2
    assert message in _one_error_line(capsys.readouterr().err, "dpa-demo-bag")
    assert not (tmp_path / name).exists()


def test_build_bad_tensorrt_options_fail_first(testdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(build, "build", lambda *a, **k: pytest.fail("the build started"))
    for argv in (["--max-batch", "0"], ["--opt-batch", "9"], ["--workspace-mib", "0"], ["--timing-cache", str(tmp_path)]):
        rc = build.main([str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(testdata / "images"),
                         "--out", str(tmp_path / "eng"), *argv])  # fmt: skip
        assert rc == 2
        assert argv[0] in _one_error_line(capsys.readouterr().err, "dpa-build")

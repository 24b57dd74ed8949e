"""dpa-build's engine folder build (build/engine_dir.py): option errors, input errors and the atomic
output folder. The build wing's modules have their own files: test_build_calibration.py,
test_build_sensitivity.py, test_build_quantize.py, test_build_plan.py, test_metrics.py, test_model_spec.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from dpa_perception.build import prepare as prepare_mod
from dpa_perception.build.engine_dir import BuildOptions, build_engine_dir
from dpa_perception.core.errors import ConfigError, DpaError, ModelError

YOLOX = "yolox_nano.onnx"


def _quiet(_msg: str) -> None:
    pass


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


# ---------------------------------------------------------------- option and input errors


def test_calib_folder_without_images(testdata: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "notes.txt").write_text("no images here")
    out = tmp_path / "eng"
    with pytest.raises(ConfigError, match="calib"):
        build_engine_dir(testdata / "models" / YOLOX, calib, out, progress=False, log=_quiet)
    assert not out.exists()
    assert not _leftovers(tmp_path, "eng")


def test_existing_out_without_force(testdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "eng"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        build_engine_dir(testdata / "models" / YOLOX, testdata / "images", out, progress=False, log=_quiet)
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_options(testdata: Path, tmp_path: Path) -> None:
    model, images, out = testdata / "models" / YOLOX, testdata / "images", tmp_path / "eng"
    with pytest.raises(ConfigError):
        build_engine_dir(model, images, out, method="median", progress=False, log=_quiet)
    with pytest.raises(ConfigError):
        build_engine_dir(model, images, out, max_error=1.5, progress=False, log=_quiet)
    with pytest.raises(ConfigError, match="--plan"):
        build_engine_dir(model, images, out, plan="fastest", progress=False, log=_quiet)
    assert not out.exists()


@pytest.mark.parametrize(("option", "value", "flag"), [("calib_frames", 0, "--calib-frames"), ("bench_runs", 0, "--bench-runs"),
                                                  ("percentile", 150.0, "--percentile"), ("percentile", 0.0, "--percentile"),
                                                  ("max_kept_fraction", 1.5, "--max-kept-fraction")])  # fmt: skip
def test_option_ranges(testdata: Path, tmp_path: Path, option: str, value: float, flag: str) -> None:
    """Out-of-range numbers are refused before anything is read, naming the option."""
    out = tmp_path / "eng"
    with pytest.raises(ConfigError, match=flag):
        build_engine_dir(testdata / "models" / YOLOX, testdata / "images", out, progress=False, log=_quiet,
                         **{option: value})  # fmt: skip
    assert not out.exists()


def test_out_is_a_file(testdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "eng"
    out.write_text("not a folder")
    with pytest.raises(ConfigError, match="not a folder"):
        build_engine_dir(testdata / "models" / YOLOX, testdata / "images", out, force=True, progress=False, log=_quiet)
    assert out.read_text() == "not a folder"


def test_corrupt_model(testdata: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes((testdata / "models" / YOLOX).read_bytes()[:50_000])
    out = tmp_path / "eng"
    with pytest.raises(ModelError, match="broken.onnx"):
        build_engine_dir(bad, testdata / "images", out, progress=False, log=_quiet)
    assert not out.exists()
    assert not _leftovers(tmp_path, "eng")


def _one_image_calib(testdata: Path, tmp_path: Path) -> Path:
    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(testdata / "images" / "dog.jpg", calib / "dog.jpg")
    return calib


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_failed_build_leaves_nothing(testdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     exc_type: type[BaseException]) -> None:  # fmt: skip
    """A step failing after the build started (temp folder made, high.onnx written) cleans up."""
    seen: list[Path] = []

    def fail(path: Path, *args: object, **kwargs: object) -> tuple[bool, bool]:
        assert path.is_file()  # the high-precision file was already written into the temp folder
        seen.append(path)
        raise exc_type("simulated failure")

    monkeypatch.setattr(prepare_mod, "verify_dynamic", fail)
    calib = _one_image_calib(testdata, tmp_path)
    out = tmp_path / "engines" / "eng"
    with pytest.raises(exc_type, match="simulated"):
        build_engine_dir(testdata / "models" / YOLOX, calib, out, progress=False, log=_quiet)
    assert seen and seen[0].parent.name.startswith(".eng.")
    assert not seen[0].parent.exists()
    assert not out.exists()
    assert not _leftovers(out.parent, "eng")


def test_unrunnable_model_fails_cleanly(testdata: Path, tmp_path: Path) -> None:
    """A model whose layout is fine but that ONNX Runtime cannot run fails mid-build, leaving nothing."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])
    out_vi = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3549, 85])
    model = helper.make_model(helper.make_graph([], "g", [inp], [out_vi]), opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "hollow.onnx"
    onnx.save(model, str(path))
    calib = _one_image_calib(testdata, tmp_path)
    out = tmp_path / "eng"
    with pytest.raises(DpaError, match="hollow|high.onnx"):
        build_engine_dir(path, calib, out, progress=False, log=_quiet)
    assert not out.exists()
    assert not _leftovers(tmp_path, "eng")


def test_failed_forced_rebuild_keeps_old_folder(testdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(prepare_mod, "verify_dynamic", fail)
    calib = _one_image_calib(testdata, tmp_path)
    out = tmp_path / "eng"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError):
        build_engine_dir(testdata / "models" / YOLOX, calib, out, force=True, progress=False, log=_quiet)
    assert (out / "manifest.json").read_text() == "{}"
    assert not _leftovers(tmp_path, "eng")


def test_build_options_keywords(testdata: Path, tmp_path: Path) -> None:
    """build_engine_dir takes BuildOptions field names as keywords, over an options object."""
    model, images, out = testdata / "models" / YOLOX, testdata / "images", tmp_path / "eng"
    with pytest.raises(ConfigError, match="--plan"):
        build_engine_dir(model, images, out, BuildOptions(plan="fastest"), progress=False, log=_quiet)
    with pytest.raises(ConfigError, match="--max-error"):
        build_engine_dir(model, images, out, BuildOptions(plan="prefix"), max_error=-0.1, log=_quiet)
    with pytest.raises(TypeError):
        build_engine_dir(model, images, out, no_such_option=1, log=_quiet)
    assert not out.exists()


def test_cli_defaults_are_build_options_defaults() -> None:
    """dpa-build's argparse defaults come from BuildOptions (one source of truth)."""
    from dpa_perception.tools.build import make_parser, options_from

    a = make_parser().parse_args(["m.onnx", "--calib", "c", "--out", "o"])
    assert options_from(a) == BuildOptions()
    a = make_parser().parse_args(["m.onnx", "--calib", "c", "--out", "o", "--calibration", "entropy", "--plan", "prefix",
                                  "--max-error", "0.1", "--calib-frames", "8", "--topics", "/a", "/b", "--force",
                                  "--no-progress"])  # fmt: skip
    assert options_from(a) == BuildOptions(method="entropy", plan="prefix", max_error=0.1, calib_frames=8,
                                           topics=["/a", "/b"], force=True, progress=False)  # fmt: skip

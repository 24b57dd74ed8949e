"""dpa-build: option errors, atomic output folder, calibration frame loading, and the
sensitivity / quantization helpers the builder relies on."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dpa_perception.build import prepare as prepare_mod
from dpa_perception.build import sensitivity as sens
from dpa_perception.build.calibration import load_frames, split_holdout
from dpa_perception.build.engine_dir import BuildOptions, build_engine_dir
from dpa_perception.build.quantize import make_dynamic, quantize_variant, upgrade_opset
from dpa_perception.core.errors import ConfigError, DpaError, ModelError

YOLOX = "yolox_nano.onnx"


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def yolox_model(testdata: Path) -> onnx.ModelProto:
    return onnx.load(str(testdata / "models" / YOLOX))


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


# ---------------------------------------------------------------- calibration frames


def test_load_frames_from_folder(testdata: Path) -> None:
    frames = load_frames(testdata / "images", limit=32)
    assert len(frames) == 6
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    few = load_frames(testdata / "images", limit=3)
    assert len(few) == 3


def test_split_holdout_small_and_large() -> None:
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(6)]
    calib, held, _ = split_holdout(small)
    assert len(calib) == 6 and len(held) == 18
    np.testing.assert_array_equal(held[0], small[0][:, ::-1])  # mirrored copy
    large = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(12)]
    calib, held, _ = split_holdout(large)
    assert len(held) == 3 and len(calib) == 9
    assert all(h is large[i] for h, i in zip(held, (0, 4, 8)))


# ---------------------------------------------------------------- sensitivity helpers


def test_smallest_sufficient_bisection() -> None:
    calls: list[int] = []

    def error_of(k: int) -> float:
        calls.append(k)
        return 1.0 / (k + 1)  # falls monotonically; <= 0.1 from k = 9 on

    k, seen = sens.smallest_sufficient(100, error_of, 0.1)
    assert k == 9
    assert seen[9] <= 0.1 < seen.get(8, 1.0)
    assert 8 in seen  # bisection had to look just below the answer to know it
    assert len(calls) == len(set(calls))  # each k evaluated once
    assert len(calls) <= math.ceil(math.log2(100)) + 2


def test_smallest_sufficient_edges() -> None:
    k, seen = sens.smallest_sufficient(50, lambda k: 0.01, 0.05)
    assert k == 0 and list(seen) == [0]
    k, seen = sens.smallest_sufficient(50, lambda k: 0.5, 0.05)
    assert k == 50 and set(seen) == {0, 50}
    k, _ = sens.smallest_sufficient(50, lambda k: 0.5 if k < 50 else 0.0, 0.05)
    assert k == 50


def test_output_tail_on_real_model(yolox_model: onnx.ModelProto) -> None:
    tail = sens.output_tail(yolox_model)
    final = next(n for n in yolox_model.graph.node if yolox_model.graph.output[0].name in n.output)
    assert final.op_type == "Transpose"
    assert final.name in tail
    by_name = {n.name: n for n in yolox_model.graph.node}
    assert all(by_name[n].op_type != "Conv" for n in tail)
    # nothing in the tail feeds a Conv: follow each tail node's outputs forward
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in yolox_model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    for name in tail:
        stack, seen = list(by_name[name].output), set()
        while stack:
            t = stack.pop()
            for c in consumers.get(t, []):
                assert c.op_type != "Conv", f"{name} reaches {c.name}"
                if c.name not in seen:
                    seen.add(c.name)
                    stack.extend(c.output)
    # the backbone is not in the tail, and the tail is not in the quantizable set
    assert not any(n.startswith("/backbone/") for n in tail)
    assert not tail & set(sens.quantizable_nodes(yolox_model))


def test_conv_units_on_real_model(yolox_model: onnx.ModelProto) -> None:
    units = sens.conv_units(yolox_model)
    convs = [n for n in yolox_model.graph.node if n.op_type == "Conv"]
    assert [u.name for u in units] == [n.name for n in convs]
    by_name = {n.name: n for n in yolox_model.graph.node}
    stem = next(u for u in units if u.name == "/backbone/backbone/stem/conv/conv/Conv")
    assert [by_name[n].op_type for n in stem.nodes] == ["Conv", "Sigmoid", "Mul"]
    # every Conv followed by SiLU (x * sigmoid(x)) is grouped with both nodes
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in yolox_model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    silu = 0
    for u, conv in zip(units, convs):
        after = consumers.get(conv.output[0], [])
        sig = [c for c in after if c.op_type == "Sigmoid"]
        mul = [c for c in after if c.op_type == "Mul"]
        if sig and mul and sig[0].output[0] in mul[0].input:
            silu += 1
            assert {sig[0].name, mul[0].name} <= set(u.nodes), u.name
        assert u.nodes[0] == conv.name
    assert silu > 80
    dw = [u for u in units if u.depthwise]
    assert dw and all(next(a.i for a in by_name[u.name].attribute if a.name == "group") > 1 for u in dw)


def test_rank_puts_nan_last() -> None:
    units = [sens.Unit("a", 0, ["a"], False, 0.1), sens.Unit("b", 1, ["b"], False),
             sens.Unit("c", 2, ["c"], False, 0.5)]  # fmt: skip
    assert [u.name for u in sens.rank(units)] == ["c", "a", "b"]


def test_score_error() -> None:
    ref = np.array([[0.0, 0.5, 0.9, 0.01]])
    test = np.array([[0.0, 0.4, 0.9, 0.02]])
    assert sens.score_error(ref, test) == pytest.approx((0.1 + 0.0) / 2)
    assert sens.score_error(ref[:, [0, 3]], test[:, [0, 3]]) == 0.0


# ---------------------------------------------------------------- quantization helpers


def test_upgrade_opset_and_make_dynamic(yolox_model: onnx.ModelProto) -> None:
    up = upgrade_opset(yolox_model)
    assert next(o.version for o in up.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert upgrade_opset(up) is up
    dyn = make_dynamic(up, spatial=True)
    dims = dyn.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"] and dims[1].dim_value == 3
    out_dims = dyn.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_param  # anchors follow the canvas
    fixed_hw = make_dynamic(up, spatial=False)
    assert [d.dim_value for d in fixed_hw.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 416, 416]
    # the original is untouched
    assert yolox_model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_quantize_variant_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        quantize_variant(tmp_path / "a.onnx", tmp_path / "b.onnx", target="gpu", nodes_to_quantize=["x"],
                         calibration_cache=tmp_path / "c.json", reader=None)  # fmt: skip
    with pytest.raises(ConfigError):
        quantize_variant(tmp_path / "a.onnx", tmp_path / "b.onnx", target="cpu", nodes_to_quantize=[],
                         calibration_cache=tmp_path / "c.json", reader=None)  # fmt: skip

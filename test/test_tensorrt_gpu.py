"""TensorRT on a real GPU: build both engines, run them, compare with ONNX Runtime.

Skipped (with the reason) where TensorRT or a CUDA device is missing; runs unchanged on a Jetson
(JetPack 6 / TensorRT 10.x) or an x86 dGPU box. The build folder comes from $DPA_ENGINE_DIR (a
folder written by ``dpa-build``; its TensorRT engines are rebuilt into a temporary copy) or is
built here with ``dpa-build`` on ../shared/testdata/models/yolox_nano.onnx.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpa_perception.backends.base import Placement
from dpa_perception.core.errors import BackendError, DpaError
from dpa_perception.core.manifest import Manifest

pytestmark = pytest.mark.gpu

GPU = Placement("gpu")
MAX_BATCH = 4
IMAGES = ("dog.jpg", "uadetrac_MVI_20011_img00001.jpg", "kitti_000008.png", "rtts_fog_SJZ_Bing_492.png")


def _require_tensorrt_and_cuda():
    pytest.importorskip("tensorrt", reason="TensorRT Python package not installed")
    from dpa_perception.backends.tensorrt.features import import_tensorrt
    from dpa_perception.backends.tensorrt.probe import current_compute_capability

    try:
        trt = import_tensorrt()  # a stub-only 'tensorrt' namespace imports but has no Builder
    except BackendError as exc:
        pytest.skip(f"TensorRT not usable: {exc}")
    if current_compute_capability() is None:
        pytest.skip("no CUDA device answered (cuda-python, libcuda, torch, nvidia-smi)")
    try:
        from dpa_perception.backends.tensorrt.memory import select_device_memory

        select_device_memory().close()
    except BackendError as exc:
        pytest.skip(str(exc))
    return trt


@pytest.fixture(scope="module")
def trt():
    return _require_tensorrt_and_cuda()


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, testdata) -> Path:
    """A dpa-build folder (ONNX variants + manifest) in a temporary directory."""
    out = tmp_path_factory.mktemp("trt") / "engines"
    given = os.environ.get("DPA_ENGINE_DIR")
    if given:
        shutil.copytree(given, out, ignore=shutil.ignore_patterns("*.engine", "timing.cache"))
        return out
    cmd = [sys.executable, "-c", "import sys; from dpa_perception.tools.build import main; sys.exit(main())",
           str(testdata / "models" / "yolox_nano.onnx"), "--calib", str(testdata / "images"),
           "--out", str(out), "--bench-runs", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"dpa-build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def built(trt, onnx_dir) -> tuple[Path, Manifest]:
    from dpa_perception.backends.tensorrt.builder import build_tensorrt_engines

    manifest = Manifest.load(onnx_dir, verify=False)
    section = build_tensorrt_engines(
        onnx_dir, manifest, placements={"int8": GPU, "high": GPU}, max_batch=MAX_BATCH, opt_batch=2,
        workspace_mib=1024, timing_cache=onnx_dir / "timing.cache", log=print,
    )  # fmt: skip
    manifest.tensorrt = section
    manifest.write(onnx_dir)
    return onnx_dir, manifest


def _need_dynamic_batch(manifest: Manifest) -> None:
    if not manifest.model.dynamic_batch:
        pytest.skip("the model's batch is static: its engines are batch-1 only")


def _batch(testdata: Path, hw: tuple[int, int], n: int) -> np.ndarray:
    """YOLOX pre-processing: BGR 0..255, resized keeping aspect, pasted top-left on 114."""
    import cv2

    frames = []
    for name in (IMAGES * 2)[:n]:
        img = cv2.imread(str(testdata / "images" / name))
        r = min(hw[0] / img.shape[0], hw[1] / img.shape[1])
        small = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((hw[0], hw[1], 3), 114, np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small
        frames.append(canvas.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(frames).astype(np.float32))


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _scores(out: np.ndarray) -> np.ndarray:
    """YOLOX: obj * cls per anchor (N, anchors, classes)."""
    return out[..., 4:5] * out[..., 5:]


def test_tensorrt_gpu_both_variants_match_onnxruntime(built, testdata):
    from dpa_perception.backends.tensorrt.session import load_tensorrt_session

    engine_dir, manifest = built
    _need_dynamic_batch(manifest)
    hw = manifest.model.input_hw
    x = _batch(testdata, hw, MAX_BATCH)
    # high (FP16) against the FP32 original; int8 against ONNX Runtime on the very same Q/DQ file
    for variant, ref_file, tol in (("high", "high.onnx", 0.03), ("int8", "int8_trt.onnx", 0.08)):
        sess = load_tensorrt_session(engine_dir, manifest, variant, GPU, max_batch=MAX_BATCH)
        try:
            got = sess.run(x)
            ref = _ort(manifest.variant_path(engine_dir, ref_file.removesuffix(".onnx")), x)
            assert got.shape == ref.shape and got.dtype == np.float32
            sg, sr = _scores(got), _scores(ref)
            err = np.abs(sg - sr).max()
            assert err < tol, f"{variant}: max score difference {err:.4f} vs ONNX Runtime"
            for b in range(x.shape[0]):  # the strongest anchor agrees per image
                assert np.argmax(sg[b].max(1)) == np.argmax(sr[b].max(1)) or sr[b].max() < 0.3
            d = sess.describe()
            assert d["backend"] == "tensorrt" and d["variant"] == variant and d["placement"] == "gpu"
        finally:
            sess.close()


def test_tensorrt_gpu_batch_sizes_rect_shapes_and_limits(built, testdata):
    from dpa_perception.backends.tensorrt.session import load_tensorrt_session

    engine_dir, manifest = built
    _need_dynamic_batch(manifest)
    hw = manifest.model.input_hw
    sess = load_tensorrt_session(engine_dir, manifest, "high", GPU, max_batch=MAX_BATCH)
    try:
        x = _batch(testdata, hw, MAX_BATCH)
        full = sess.run(x)
        for n in (1, 3, MAX_BATCH, 1):
            part = sess.run(x[:n])
            assert part.shape[0] == n
            np.testing.assert_allclose(part, full[:n], atol=0.05, rtol=0.02)
        if manifest.model.dynamic_hw:
            rect = _batch(testdata, (hw[0] // 2 // 32 * 32 or 32, hw[1]), 2)
            out = sess.run(rect)
            assert out.shape[0] == 2 and out.shape[1] < full.shape[1]
        with pytest.raises(BackendError, match="exceeds the engine's maximum batch"):
            sess.run(np.zeros((MAX_BATCH + 1, 3) + hw, np.float32))
    finally:
        sess.close()


def test_tensorrt_gpu_refuses_foreign_or_corrupt_engines(built, tmp_path):
    from dpa_perception.backends.tensorrt.session import load_tensorrt_session

    engine_dir, manifest = built
    _need_dynamic_batch(manifest)
    copy = tmp_path / "copy"
    shutil.copytree(engine_dir, copy)
    m = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "copy")
    assert m.tensorrt is not None and manifest.tensorrt is not None
    entry = m.tensorrt["engines"]["high"]
    entry["key"]["trt_version"] = "0.0.1"
    from dpa_perception.backends.tensorrt.key import EngineKey

    entry["digest"] = EngineKey.from_dict(entry["key"]).digest()
    with pytest.raises(BackendError, match=r"was built for TensorRT 0\.0\.1 on compute capability"):
        load_tensorrt_session(copy, m, "high", GPU, max_batch=MAX_BATCH)
    with (copy / manifest.tensorrt["engines"]["int8"]["file"]).open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 64)
    with pytest.raises(BackendError, match="corrupt or was replaced"):
        load_tensorrt_session(copy, manifest, "int8", GPU, max_batch=MAX_BATCH)
    with pytest.raises(BackendError, match="input shapes"):
        load_tensorrt_session(engine_dir, manifest, "high", GPU, max_batch=MAX_BATCH * 4)


def test_tensorrt_gpu_dla_placement_reports_layers(trt, onnx_dir, tmp_path, testdata):
    from dpa_perception.backends.tensorrt.builder import build_tensorrt_engines
    from dpa_perception.backends.tensorrt.session import load_tensorrt_session, runtime_logger

    if int(trt.Builder(runtime_logger(trt)).num_DLA_cores) < 1:
        pytest.skip("no DLA on this machine (Jetson AGX Orin has two)")
    d = tmp_path / "dla"
    shutil.copytree(onnx_dir, d, ignore=shutil.ignore_patterns("*.engine"))
    manifest = Manifest.load(d, verify=False)
    manifest.tensorrt = None
    dla = Placement("dla", 0, True)
    try:
        section = build_tensorrt_engines(
            d, manifest, placements={"int8": dla, "high": GPU}, max_batch=2, opt_batch=None,
            workspace_mib=1024, timing_cache=None, log=print,
        )  # fmt: skip
    except DpaError as exc:
        pytest.fail(f"DLA build failed: {exc}")
    rep = section["engines"]["int8"]["layers"]
    assert rep["network_layers"] == rep["on_dla"] + rep["on_gpu"]
    print("int8 on dla:0:", {k: rep[k] for k in ("on_dla", "on_gpu", "fell_back_count")})
    manifest.tensorrt = section
    sess = load_tensorrt_session(d, manifest, "int8", dla, max_batch=2)
    try:
        x = _batch(testdata, manifest.model.input_hw, 1)
        out = sess.run(x)  # padded to the static batch of 2, one row back
        assert out.shape[0] == 1 and np.isfinite(out).all()
    finally:
        sess.close()

"""CPU tests of the TensorRT session: the loader's refusals, buffer shapes and padding, and the run
path on a fake engine with fake device memory (no TensorRT, no GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trt_fakes import DLA0, GPU, MACHINE, FakeMemory, FakeTRT, build, fake_session, make_build_dir

from dpa_perception.backends.tensorrt.probe import MachineInfo
from dpa_perception.backends.tensorrt.profiles import make_profile, run_batch_size
from dpa_perception.backends.tensorrt.session import engine_input_shape, load_tensorrt_session, nbytes_of, pad_batch
from dpa_perception.core.errors import BackendError
from dpa_perception.core.manifest import Manifest


@pytest.fixture()
def build_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    return make_build_dir(tmp_path)


def test_trt_session_buffer_shapes_and_padding():
    dyn = make_profile([416, 416], max_batch=8, dynamic_hw=True)
    assert engine_input_shape((3, 3, 256, 416), dyn) == (3, 3, 256, 416)
    dla = make_profile([416, 416], max_batch=4, placement=DLA0)
    assert engine_input_shape((1, 3, 416, 416), dla) == (4, 3, 416, 416)
    assert run_batch_size(dla, 3) == 4 and run_batch_size(dyn, 3) == 3
    with pytest.raises(BackendError, match="exceeds the engine's maximum batch 4"):
        engine_input_shape((5, 3, 416, 416), dla)
    with pytest.raises(BackendError, match="outside the engine profile"):
        engine_input_shape((1, 3, 256, 416), dla)
    with pytest.raises(BackendError, match="rank-4"):
        engine_input_shape((3, 416, 416), dyn)
    assert nbytes_of((4, 3549, 85), 4) == 4 * 3549 * 85 * 4
    with pytest.raises(BackendError, match="not fully known"):
        nbytes_of((4, -1, 85), 4)
    b = np.ones((2, 3, 4, 4), np.float32)
    padded = pad_batch(b, 4)
    assert padded.shape == (4, 3, 4, 4) and padded[:2].all() and not padded[2:].any()
    assert pad_batch(b, 2) is b


def test_tensorrt_loader_refuses_engines_from_another_machine(build_dir):
    engine_dir, manifest = build_dir
    with pytest.raises(BackendError, match="has no TensorRT engines: build them with `dpa-build"):
        load_tensorrt_session(engine_dir, manifest, "high", GPU, max_batch=4,
                              trt_module=FakeTRT(), machine=MACHINE, memory=object())
    section, _ = build(FakeTRT("10.3.0"), engine_dir, manifest, {})
    manifest.tensorrt = section
    with pytest.raises(BackendError) as exc:
        load_tensorrt_session(engine_dir, manifest, "high", GPU, max_batch=4, trt_module=FakeTRT("11.0.1"),
                              machine=MachineInfo("11.0.1", "9.0"), memory=object())
    msg = str(exc.value)
    assert "was built for TensorRT 10.3.0 on compute capability 8.7, this machine has TensorRT 11.0.1 on 9.0" in msg
    assert "rebuild with `dpa-build" in msg
    with pytest.raises(BackendError, match=r"placement: engine built for gpu, dla:0 was asked for"):
        load_tensorrt_session(engine_dir, manifest, "int8", DLA0, max_batch=4, trt_module=FakeTRT(),
                              machine=MACHINE, memory=object())
    with pytest.raises(BackendError, match="input shapes"):
        load_tensorrt_session(engine_dir, manifest, "int8", GPU, max_batch=16, trt_module=FakeTRT(),
                              machine=MACHINE, memory=object())


def test_trt_session_runs_caches_buffers_and_pads_static_batches():
    prof = make_profile([8, 8], max_batch=4, dynamic_hw=False)
    sess, ctx, mem = fake_session(prof, GPU)
    assert sess.input_name == "images" and sess.describe()["layers_on_gpu"] == 3
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    y = sess.run(x)
    assert y.shape == (2, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], x.reshape(2, -1).sum(1))
    allocs = mem.allocs
    y2 = sess.run(x + 1)  # same shape: no new buffers, no new input shape
    assert mem.allocs == allocs and ctx.shape_calls == 1
    assert not np.shares_memory(y, y2) and y[0, 0] != y2[0, 0]
    sess.run(x[:1])  # new batch size: one more buffer set
    assert mem.allocs == allocs + 2 and mem.syncs == 3
    sess.close()
    sess.close()
    with pytest.raises(BackendError, match="closed"):
        sess.run(x)
    # DLA engines are static: 1 frame runs padded to the built batch, 1 row comes back
    dsess, dctx, _ = fake_session(make_profile([8, 8], max_batch=4, placement=DLA0), DLA0)
    out = dsess.run(x[:1])
    assert out.shape == (1, 2) and out[0, 1] == 4 and dctx.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(out[0, 0], x[0].sum())


def test_trt_session_refuses_io_types_without_numpy_equivalent():
    def nptype(t):  # what tensorrt.nptype does for BF16 / FP8 / INT4
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    with pytest.raises(BackendError, match="no numpy equivalent"):
        fake_session(make_profile([8, 8], max_batch=4), GPU, nptype=nptype)


def test_trt_session_checks_the_engine_profile_against_its_key():
    prof = make_profile([8, 8], max_batch=4)
    same = lambda name, i: [prof.min, prof.opt, prof.max]  # noqa: E731
    sess, _, _ = fake_session(prof, GPU, get_tensor_profile_shape=same)
    assert sess.run(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 2)
    other = lambda name, i: [(1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)]  # noqa: E731
    with pytest.raises(BackendError, match=r"input profile \[1, 3, 8, 8\] .. \[2, 3, 8, 8\].*rebuild"):
        fake_session(prof, GPU, get_tensor_profile_shape=other)


def test_tensorrt_sessions_share_one_runtime_logger(build_dir, monkeypatch):
    from dpa_perception.backends.tensorrt import session as tensorrt_backend

    engine_dir, manifest = build_dir
    manifest.tensorrt, _ = build(FakeTRT("10.3.0"), engine_dir, manifest, {})
    monkeypatch.setattr(tensorrt_backend, "TensorRTSession", lambda **kw: kw)  # stop after deserializing
    trt = FakeTRT("10.3.0")
    for variant in ("int8", "high"):
        got = load_tensorrt_session(engine_dir, manifest, variant, GPU, max_batch=4, trt_module=trt,
                                    machine=MachineInfo("10.3.0", "8.7"), memory=FakeMemory())
        assert got["engine"].record["source"] in ("int8_trt.onnx", "high.onnx")
    # TensorRT keeps the first logger for the process: every Runtime gets that same one
    assert len(trt.runtime_loggers) == 2 and trt.runtime_loggers[0] is trt.runtime_loggers[1]
    assert tensorrt_backend.runtime_logger(trt) is trt.runtime_loggers[0]


def test_tensorrt_backend_imports_without_tensorrt_or_cuda():
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None; "
        "sys.modules['cuda'] = None\n"
        "import dpa_perception.backends.tensorrt.session as b, dpa_perception.backends.tensorrt.builder as t\n"
        "import pkgutil, importlib, dpa_perception.backends.tensorrt as pkg\n"
        "for m in pkgutil.iter_modules(pkg.__path__):\n    importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "assert 'onnx' not in sys.modules, 'the TensorRT package imports onnx at module level'\n"
        "from dpa_perception.core.errors import BackendError\n"
        "try:\n    b.select_device_memory()\nexcept BackendError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused: TensorRT sessions need GPU memory from cuda-python" in out.stdout

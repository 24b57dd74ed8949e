"""CPU tests of the TensorRT build of an engine folder with fake TensorRT 10 / 11 modules: keyed
engines, the manifest section, timing caches, refusals, the CLI and ``dpa-build --backend tensorrt``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from trt_fakes import DLA0, GPU, MACHINE, FakeTRT, build, fake_trt_namespace, make_build_dir, sha

from dpa_perception.backends.tensorrt.fp16 import FP16_ONNX_NAME
from dpa_perception.backends.tensorrt.key import EngineKey, check_engine_entry, expected_key
from dpa_perception.core.errors import BackendError, ConfigError
from dpa_perception.core.manifest import Manifest


@pytest.fixture()
def build_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    return make_build_dir(tmp_path)


def test_tensorrt10_build_writes_keyed_engines_and_manifest_section(build_dir):
    engine_dir, manifest = build_dir
    trt = FakeTRT("10.3.0", num_dla=2)
    section, msgs = build(trt, engine_dir, manifest, {"int8": DLA0, "high": GPU})
    assert section["trt_version"] == "10.3.0" and not section["strongly_typed"]
    assert section["timing_cache"] == "timing.cache" and (engine_dir / "timing.cache").is_file()
    e8, eh = section["engines"]["int8"], section["engines"]["high"]
    for e in (e8, eh):
        f = engine_dir / e["file"]
        assert f.is_file() and sha(f) == e["sha256"] and e["file"].endswith(f"_{e['digest']}.engine")
        assert EngineKey.from_dict(e["key"]).digest() == e["digest"]
    assert [b["source"] for b in trt.builds] == ["int8_trt.onnx", "high.onnx"]
    b8, bh = trt.builds
    assert b8["flags"] == ["INT8", "FP16", "GPU_FALLBACK"] and (b8["device"], b8["dla_core"]) == ("DLA", 0)
    assert b8["profile"] == ["images", [4, 3, 32, 32], [4, 3, 32, 32], [4, 3, 32, 32]]  # static on DLA
    assert bh["flags"] == ["FP16"] and bh["device"] == "GPU" and bh["network_flags"] == 0
    assert bh["profile"] == ["images", [1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]]
    assert bh["cache_entries_before"] == 1  # one timing cache shared by both builds
    assert e8["precision"] == "int8+fp16" and e8["placement"] == "dla:0" and e8["gpu_fallback"] is True
    assert e8["layers"]["fell_back"] == ["/backbone/Resize", "/head/Concat"]
    assert (e8["layers"]["on_dla"], e8["layers"]["on_gpu"], e8["layers"]["engine_dla_layers"]) == (1, 2, 1)
    assert eh["layers"]["on_dla"] == 0 and eh["gpu_fallback"] is None
    assert not list(engine_dir.glob("*.tmp")) and not (engine_dir / FP16_ONNX_NAME).exists()
    assert any("1 layers on DLA, 2 on GPU" in m for m in msgs)
    # the manifest section survives JSON and the loader's checks accept both engines
    manifest.tensorrt = json.loads(json.dumps(section))
    for variant, place in (("int8", DLA0), ("high", GPU)):
        want = expected_key(manifest, variant, place, max_batch=4, machine=MACHINE,
                            features_trt=fake_trt_namespace("10.3.0"))
        check_engine_entry(engine_dir, manifest.tensorrt["engines"][variant], want, rebuild_hint="x")
    # second build reuses the saved timing cache and replaces the stale engines
    old = {e["file"] for e in section["engines"].values()}
    trt2 = FakeTRT("10.3.0")
    section2, _msgs2 = build(trt2, engine_dir, manifest, {"int8": GPU, "high": GPU}, max_batch=8)
    assert trt2.builds[0]["cache_entries_before"] == 2
    new = {e["file"] for e in section2["engines"].values()}
    assert new.isdisjoint(old)
    assert {p.name for p in engine_dir.glob("*.engine")} == new


def test_tensorrt11_build_uses_fp16_typed_onnx_and_no_precision_flags(build_dir):
    from onnx import TensorProto

    engine_dir, manifest = build_dir
    trt = FakeTRT("11.0.1", num_dla=0)
    section, _ = build(trt, engine_dir, manifest, {}, timing_cache=None)
    b8, bh = trt.builds
    assert b8["flags"] == [] and bh["flags"] == []
    assert b8["network_flags"] == bh["network_flags"] == 1 << 0  # STRONGLY_TYPED is 0 in TRT 11
    assert bh["source"] == FP16_ONNX_NAME and TensorProto.FLOAT16 in bh["dtypes"]
    assert TensorProto.FLOAT16 not in b8["dtypes"]
    eh = section["engines"]["high"]
    assert eh["built_from"]["file"] == FP16_ONNX_NAME
    assert eh["key"]["source_sha256"] == manifest.variants["high"].sha256
    assert section["engines"]["int8"]["precision"] == "int8+fp32" and section["strongly_typed"]
    assert section["timing_cache"] is None


def test_tensorrt_failed_build_leaves_previous_engines_untouched(build_dir):
    engine_dir, manifest = build_dir
    _section, _ = build(FakeTRT("10.3.0"), engine_dir, manifest, {})
    before = sorted(p.name for p in engine_dir.iterdir())
    with pytest.raises(BackendError, match="failed to build the high engine.*out of tactics"):
        build(FakeTRT("10.3.0", fail_onnx="high.onnx"), engine_dir, manifest, {}, max_batch=2)
    assert sorted(p.name for p in engine_dir.iterdir()) == before
    with pytest.raises(ConfigError, match="no DLA cores"):
        build(FakeTRT("10.3.0", num_dla=0), engine_dir, manifest, {"int8": DLA0})


def test_tensorrt_build_refuses_corrupt_source_onnx(build_dir):
    from dpa_perception.core.errors import ManifestError

    engine_dir, manifest = build_dir
    (engine_dir / "int8_trt.onnx").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match="int8_trt.onnx: sha256"):
        build(FakeTRT("10.3.0"), engine_dir, manifest, {})


def test_tensorrt_build_replaces_foreign_or_corrupt_timing_cache(build_dir):
    engine_dir, manifest = build_dir
    cache_file = engine_dir / "timing.cache"
    for stale, said in ((b"foreign cache of TensorRT 8.6", "another TensorRT version or GPU"),
                        (b"\x00garbage", "is unreadable")):
        cache_file.write_bytes(stale)
        trt = FakeTRT("10.3.0")
        _section, msgs = build(trt, engine_dir, manifest, {})
        assert any(said in m for m in msgs), msgs
        assert trt.builds[0]["cache_entries_before"] == 0
        # the saved cache is this machine's: both builds' entries, not the stale bytes
        assert json.loads(cache_file.read_bytes()) == ["int8_trt.onnx", "high.onnx"]


def test_tensorrt_static_batch_model_gets_batch1_engines(build_dir):
    engine_dir, manifest = build_dir
    manifest.model = dataclasses.replace(manifest.model, dynamic_batch=False)  # dpa-build could not make the batch symbolic
    trt = FakeTRT("10.3.0", num_dla=2)
    section, msgs = build(trt, engine_dir, manifest, {"int8": DLA0, "high": GPU}, max_batch=4, opt_batch=2)
    assert any("batch dimension is static" in m for m in msgs)
    assert section["max_batch"] == section["opt_batch"] == 1
    assert [b["profile"][3] for b in trt.builds] == [[1, 3, 32, 32], [1, 3, 32, 32]]
    manifest.tensorrt = json.loads(json.dumps(section))
    # the node (max_batch 4, frames run one by one for such a model) accepts the batch-1 engines
    for variant, place in (("int8", DLA0), ("high", GPU)):
        want = expected_key(manifest, variant, place, max_batch=4, machine=MACHINE,
                            features_trt=fake_trt_namespace("10.3.0"))
        check_engine_entry(engine_dir, manifest.tensorrt["engines"][variant], want, rebuild_hint="x")


def test_tensorrt_build_logger_never_raises_into_tensorrt():
    from dpa_perception.backends.tensorrt.engine_build import make_logger

    trt = FakeTRT()
    sink: list[str] = []

    def broken(_msg):
        raise BrokenPipeError("stderr closed")

    logger = make_logger(trt, broken, sink)
    sev = trt.ILogger.Severity
    logger.log(sev.ERROR, "Error Code 4: boom")  # must not raise
    logger.log(sev.VERBOSE, "tactic timing noise")
    logger.log(sev.INFO, "layer x is not supported on DLA, falling back to GPU")
    assert sink == ["Error Code 4: boom", "layer x is not supported on DLA, falling back to GPU"]


def test_tensorrt_cli_builds_and_records_the_section(build_dir, monkeypatch, capsys):
    from dpa_perception.backends.tensorrt import builder as tensorrt_build

    engine_dir, manifest = build_dir
    manifest.write(engine_dir)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT("10.3.0", num_dla=2))
    monkeypatch.setattr(tensorrt_build, "probe_machine", lambda trt: MACHINE)
    rc = tensorrt_build.main([str(engine_dir), "--placement", "int8=dla:1", "--max-batch", "2"])
    assert rc == 0
    written = json.loads((engine_dir / "manifest.json").read_text())
    e8 = written["tensorrt"]["engines"]["int8"]
    assert e8["placement"] == "dla:1" and e8["key"]["profile"]["max"] == [2, 3, 32, 32]
    assert (engine_dir / "timing.cache").is_file()
    assert "int8: int8_" in capsys.readouterr().err
    assert tensorrt_build.main([str(engine_dir), "--placement", "int8=dla:7"]) == 2
    assert "dpa-build: error: placement 'dla:7'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The TensorRT options: one definition (add_tensorrt_args), one runner (run_tensorrt_build),
# forwarded whole by dpa-build --backend tensorrt
# --------------------------------------------------------------------------------------------


def _tensorrt_parser():
    import argparse

    from dpa_perception.backends.tensorrt.builder import add_tensorrt_args

    p = argparse.ArgumentParser()
    add_tensorrt_args(p)
    return p


def test_tensorrt_args_defaults(monkeypatch):
    monkeypatch.delenv("DPA_TRT_MAX_BATCH", raising=False)
    a = _tensorrt_parser().parse_args([])
    assert (a.placement, a.no_gpu_fallback, a.max_batch, a.opt_batch, a.workspace_mib, a.timing_cache) == (
        "int8=gpu,high=gpu", False, 8, None, 1024, None)
    monkeypatch.setenv("DPA_TRT_MAX_BATCH", "3")
    assert _tensorrt_parser().parse_args([]).max_batch == 3
    monkeypatch.setenv("DPA_TRT_MAX_BATCH", "many")
    with pytest.raises(SystemExit):
        _tensorrt_parser().parse_args([])
    assert _tensorrt_parser().parse_args(["--max-batch", "4"]).max_batch == 4


class _Recorder:
    """Stands in for build_tensorrt_engines: records what it was asked to build."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, engine_dir, manifest, **kw):
        self.calls.append({"engine_dir": engine_dir, "manifest": manifest, **kw})
        return {"format_version": 1, "engines": {}}


ALL_OPTIONS = ["--placement", "int8=dla:1,high=gpu", "--no-gpu-fallback", "--max-batch", "2", "--opt-batch", "1",
               "--workspace-mib", "64", "--timing-cache"]


def _check_forwarded(call: dict, engine_dir: Path, cache: Path) -> None:
    from dpa_perception.backends.base import Placement

    assert Path(call["engine_dir"]) == engine_dir
    assert call["placements"] == {"int8": Placement("dla", 1, False), "high": Placement("gpu", -1, False)}
    assert (call["max_batch"], call["opt_batch"], call["workspace_mib"]) == (2, 1, 64)
    assert Path(call["timing_cache"]) == cache


def test_run_tensorrt_build_forwards_every_option_and_records_the_section(build_dir, monkeypatch):
    from dpa_perception.backends.tensorrt import builder

    engine_dir, manifest = build_dir
    manifest.write(engine_dir)
    rec = _Recorder()
    monkeypatch.setattr(builder, "build_tensorrt_engines", rec)
    cache = engine_dir.parent / "shared.cache"
    args = _tensorrt_parser().parse_args([*ALL_OPTIONS, str(cache)])
    lines: list[str] = []
    got = builder.run_tensorrt_build(engine_dir, args, lines.append)
    _check_forwarded(rec.calls[0], engine_dir, cache)
    assert got.tensorrt == {"format_version": 1, "engines": {}}
    assert Manifest.load(engine_dir).tensorrt == got.tensorrt
    # without --timing-cache the cache lives in the folder
    builder.run_tensorrt_build(engine_dir, _tensorrt_parser().parse_args([]), lines.append)
    assert Path(rec.calls[1]["timing_cache"]) == engine_dir / "timing.cache"


def test_dpa_build_backend_tensorrt_forwards_every_option(build_dir, monkeypatch):
    from dpa_perception.backends.tensorrt import builder
    from dpa_perception.tools import build as dpa_build

    engine_dir, manifest = build_dir
    manifest.write(engine_dir)  # an existing folder: dpa-build builds only its TensorRT engines
    rec = _Recorder()
    monkeypatch.setattr(builder, "build_tensorrt_engines", rec)
    cache = engine_dir.parent / "shared.cache"
    rc = dpa_build.main([str(engine_dir / "model.onnx"), "--calib", str(engine_dir), "--out", str(engine_dir),
                         "--backend", "tensorrt", *ALL_OPTIONS, str(cache)])
    assert rc == 0 and len(rec.calls) == 1
    _check_forwarded(rec.calls[0], engine_dir, cache)


def test_dpa_build_backend_tensorrt_builds_with_placement_and_max_batch(build_dir, monkeypatch, capsys):
    from dpa_perception.backends.tensorrt import builder
    from dpa_perception.tools import build as dpa_build

    engine_dir, manifest = build_dir
    manifest.write(engine_dir)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT("10.3.0", num_dla=2))
    monkeypatch.setattr(builder, "probe_machine", lambda trt: MACHINE)
    rc = dpa_build.main([str(engine_dir / "model.onnx"), "--calib", str(engine_dir), "--out", str(engine_dir),
                         "--backend", "tensorrt", "--placement", "int8=dla:1", "--max-batch", "2"])
    assert rc == 0
    e8 = Manifest.load(engine_dir).tensorrt["engines"]["int8"]
    assert e8["placement"] == "dla:1" and e8["key"]["profile"]["max"] == [2, 3, 32, 32]

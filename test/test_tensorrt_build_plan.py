"""CPU tests of every TensorRT decision: build plans (TensorRT 10 vs 11), placements, profiles,
FP16 conversion, the build orchestration and the session's run path, with fake ``tensorrt``
modules (no TensorRT, no GPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.builder import (
    FP16_ONNX_NAME,
    build_tensorrt_engines,
    convert_onnx_to_fp16,
    parse_dla_fallback_messages,
    placement_report,
    summarize_inspector_json,
)
from dpa_perception.backends.tensorrt.key import (
    EngineKey,
    MachineInfo,
    ShapeProfile,
    check_engine_entry,
    detect_features,
    make_profile,
    parse_placement_plan,
    plan_variant,
    rect_shape,
    run_batch_size,
    validate_placements,
)
from dpa_perception.backends.tensorrt.session import (
    TensorRTSession,
    engine_input_shape,
    expected_key,
    load_tensorrt_session,
    nbytes_of,
    pad_batch,
)
from dpa_perception.core.errors import BackendError, ConfigError
from dpa_perception.core.manifest import Manifest

GPU = Placement("gpu")
DLA0 = Placement("dla", 0, True)
MACHINE = MachineInfo("10.3.0", "8.7")

# --------------------------------------------------------------------------------------------
# Fake tensorrt modules
# --------------------------------------------------------------------------------------------


def _flags_ns(names: list[str], start: int = 0) -> SimpleNamespace:
    return SimpleNamespace(**{n: i for i, n in enumerate(names, start)})


def fake_trt_namespace(version: str) -> SimpleNamespace:
    """Only the enums that feature detection reads: TRT 10 has precision flags, TRT 11 not."""
    trt10 = version.startswith("10.")
    bf = ["GPU_FALLBACK", "REFIT", "DEBUG"] + (["FP16", "INT8", "BF16"] if trt10 else [])
    nf = ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if trt10 else ["STRONGLY_TYPED"]
    return SimpleNamespace(
        __version__=version,
        BuilderFlag=_flags_ns(bf),
        NetworkDefinitionCreationFlag=_flags_ns(nf),
    )


class FakeTRT(types.ModuleType):
    """Enough of the TensorRT Python API for build_tensorrt_engines and the session.

    ``fail_variant``: the build of the network parsed from that ONNX name returns None.
    """

    def __init__(self, version: str = "10.3.0", num_dla: int = 2, fail_onnx: str | None = None):
        super().__init__("tensorrt")
        ns = fake_trt_namespace(version)
        self.__version__ = version
        self.BuilderFlag = ns.BuilderFlag
        self.NetworkDefinitionCreationFlag = ns.NetworkDefinitionCreationFlag
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.ProfilingVerbosity = SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="NAMES")
        self.DeviceType = SimpleNamespace(GPU="GPU", DLA="DLA")
        self.LayerInformationFormat = SimpleNamespace(JSON="JSON", ONELINE="ONELINE")
        self.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT", NONE="NONE")
        self.DataType = SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
        self.num_dla = num_dla
        self.fail_onnx = fail_onnx
        self.builds: list[dict] = []
        self.runtime_loggers: list = []
        trt = self

        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        class ILogger:
            def __init__(self):
                pass

        ILogger.Severity = Severity
        self.ILogger = ILogger

        class Logger(ILogger):
            WARNING = Severity.WARNING

            def __init__(self, sev=None):
                super().__init__()

            def log(self, severity, msg):
                pass

        self.Logger = Logger

        class Cache:
            """A cache file starting with b"foreign" stands for one made by another TensorRT/GPU."""

            def __init__(self, data: bytes):
                self.foreign = data.startswith(b"foreign")
                self.entries = [] if self.foreign or not data else json.loads(data.decode())

            def serialize(self):
                return json.dumps(self.entries).encode()

        class Layer:
            def __init__(self, name):
                self.name = name

        class Network:
            def __init__(self, flags):
                self.flags = flags
                self.inputs: list = []
                self.layers = [Layer(n) for n in ("/stem/Conv", "/backbone/Resize", "/head/Concat")]
                self.source = ""

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

            @property
            def num_layers(self):
                return len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                import onnx

                m = onnx.load(path)
                i = m.graph.input[0]
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
                self.network.inputs.append(SimpleNamespace(name=i.name, shape=dims))
                self.network.source = Path(path).name
                self.network.dtypes = sorted({t.data_type for t in m.graph.initializer})
                return True

            num_errors = 0

        class Profile:
            def set_shape(self, name, mn, opt, mx):
                self.shape = (name, tuple(mn), tuple(opt), tuple(mx))

        class Config:
            def __init__(self):
                self.flags: list[str] = []
                self.profiles: list = []
                self.default_device_type = "GPU"
                self.DLA_core = -1
                self.cache = None

            def set_memory_pool_limit(self, pool, size):
                self.workspace = size

            def set_flag(self, flag):
                names = {v: k for k, v in vars(trt.BuilderFlag).items()}
                self.flags.append(names[flag])

            def create_timing_cache(self, data):
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                if cache.foreign and not ignore_mismatch:
                    return False
                self.cache = cache
                return True

            def add_optimization_profile(self, p):
                self.profiles.append(p)

            def can_run_on_DLA(self, layer):
                return layer.name != "/backbone/Resize"

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            @property
            def num_DLA_cores(self):
                return trt.num_dla

            def create_network(self, flags=0):
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if trt.fail_onnx and network.source == trt.fail_onnx:
                    self.logger.log(Severity.ERROR, "Error Code 4: out of tactics")
                    return None
                if config.default_device_type == "DLA":
                    self.logger.log(
                        Severity.WARNING,
                        "Default DLA is enabled but layer /head/Concat is not supported on DLA, "
                        "falling back to GPU.",
                    )
                record = {
                    "source": network.source,
                    "network_flags": network.flags,
                    "flags": config.flags,
                    "device": config.default_device_type,
                    "dla_core": config.DLA_core,
                    "profile": [list(s) if isinstance(s, tuple) else s for s in config.profiles[0].shape],
                    "cache_entries_before": len(config.cache.entries),
                    "dtypes": network.dtypes,
                }
                config.cache.entries.append(network.source)
                trt.builds.append(record)
                return json.dumps(record).encode()

        class Inspector:
            def __init__(self, device):
                self.device = device

            def get_engine_information(self, fmt):
                layers = [{"Name": "images to nvm", "LayerType": "Reformat"}]
                if self.device == "DLA":
                    layers.append({"Name": "{ForeignNode[/stem/Conv]}", "LayerType": "DLA"})
                layers.append({"Name": "/head/Concat", "LayerType": "Concat"})
                return json.dumps({"Layers": layers, "Bindings": ["images", "output"]})

        class Engine:
            def __init__(self, record):
                self.record = record

            def create_engine_inspector(self):
                return Inspector(self.record["device"])

        class Runtime:
            def __init__(self, logger):
                trt.runtime_loggers.append(logger)
                self.DLA_core = -1
                self.num_DLA_cores = trt.num_dla

            def deserialize_cuda_engine(self, data):
                return Engine(json.loads(bytes(data).decode()))

        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.Runtime = Runtime


def _tiny_onnx(path: Path, dynamic_hw: bool = True) -> None:
    """A 2-conv + Resize model with symbolic batch (and H, W): input 'images'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (6, 4, 1, 1)).astype(np.float32), "w2")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    h, w = ("h", "w") if dynamic_hw else (32, 32)
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Resize", ["a1", "", "scales"], ["r1"], mode="nearest"),
        helper.make_node("Conv", ["r1", "w2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [w1, w2, scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def build_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    _tiny_onnx(tmp_path / "high.onnx")
    _tiny_onnx(tmp_path / "int8_trt.onnx")
    (tmp_path / "int8.onnx").write_bytes((tmp_path / "int8_trt.onnx").read_bytes())
    spec = {"family": "yolox", "input_name": "images", "output_name": "output", "input_hw": [32, 32],
            "num_classes": 80, "num_anchors": 21}
    manifest = {
        "format_version": 1,
        "model": {
            "source": "tiny.onnx",
            "sha256": "d39bee73" * 8,
            "family": "yolox",
            "input_name": "images",
            "input_hw": [32, 32],
            "dynamic_batch": True,
            "dynamic_hw": True,
            "num_classes": 80,
            "spec": spec,
        },
        "variants": {
            v: {"file": f"{v}.onnx", "sha256": _sha(tmp_path / f"{v}.onnx")}
            for v in ("high", "int8", "int8_trt")
        },
    }
    return tmp_path, Manifest.from_dict(manifest, "test manifest")


def _build(trt, engine_dir, manifest, placements, **kw):
    msgs: list[str] = []
    args = {"max_batch": 4, "opt_batch": 2, "workspace_mib": 256, "timing_cache": engine_dir / "timing.cache"}
    args.update(kw)
    section = build_tensorrt_engines(
        engine_dir,
        manifest,
        placements=placements,
        log=msgs.append,
        trt_module=trt,
        machine=MachineInfo(trt.__version__, "8.7"),
        **args,
    )
    return section, msgs


# --------------------------------------------------------------------------------------------
# Build plans
# --------------------------------------------------------------------------------------------


def test_tensorrt10_plan_uses_weak_typing_precision_flags():
    f = detect_features(fake_trt_namespace("10.3.0"))
    assert f.weakly_typed and f.has_strongly_typed_flag
    int8 = plan_variant(f, "int8", GPU)
    high = plan_variant(f, "high", GPU)
    assert (int8.source, int8.builder_flags, int8.network_flags) == ("int8_trt", ("INT8", "FP16"), ())
    assert (int8.precision, int8.strongly_typed, int8.fp16_onnx) == ("int8+fp16", False, False)
    assert (high.source, high.builder_flags, high.precision, high.fp16_onnx) == ("high", ("FP16",), "fp16", False)


def test_tensorrt11_plan_is_strongly_typed_with_fp16_onnx():
    f = detect_features(fake_trt_namespace("11.0.1"))
    assert not f.weakly_typed
    int8 = plan_variant(f, "int8", GPU)
    high = plan_variant(f, "high", GPU)
    assert int8.builder_flags == () and int8.network_flags == ("STRONGLY_TYPED",)
    assert (int8.precision, int8.fp16_onnx) == ("int8+fp32", False)
    assert (high.precision, high.fp16_onnx, high.builder_flags) == ("fp16", True, ())
    # a later TensorRT without even the (ignored) STRONGLY_TYPED flag still plans a strong build
    bare = SimpleNamespace(__version__="12.0", BuilderFlag=SimpleNamespace(GPU_FALLBACK=0),
                           NetworkDefinitionCreationFlag=SimpleNamespace())
    p = plan_variant(detect_features(bare), "high", GPU)
    assert p.strongly_typed and p.network_flags == () and p.fp16_onnx


def test_trt_plan_decides_by_feature_not_version_string():
    # "10.x" that lacks INT8 (hypothetical trimmed build) must not get weak-typing flags
    ns = fake_trt_namespace("10.3.0")
    del ns.BuilderFlag.INT8
    assert plan_variant(detect_features(ns), "int8", GPU).builder_flags == ()
    # "11.x"-labelled module that still has the flags is treated as weakly typed
    ns11 = fake_trt_namespace("10.3.0")
    ns11.__version__ = "11.9.9"
    assert plan_variant(detect_features(ns11), "int8", GPU).builder_flags == ("INT8", "FP16")


def test_tensorrt_dla_plan_adds_gpu_fallback_only_when_asked_and_available():
    f = detect_features(fake_trt_namespace("10.3.0"))
    assert plan_variant(f, "int8", DLA0).builder_flags == ("INT8", "FP16", "GPU_FALLBACK")
    strict = Placement("dla", 1, gpu_fallback=False)
    assert plan_variant(f, "int8", strict).builder_flags == ("INT8", "FP16")
    ns = fake_trt_namespace("10.3.0")
    del ns.BuilderFlag.GPU_FALLBACK
    with pytest.raises(BackendError, match="no BuilderFlag.GPU_FALLBACK"):
        plan_variant(detect_features(ns), "int8", DLA0)
    with pytest.raises(ConfigError, match="cannot run TensorRT"):
        plan_variant(f, "high", Placement("cpu"))
    with pytest.raises(ConfigError, match="unknown TensorRT variant"):
        plan_variant(f, "fp8", GPU)


def test_tensorrt_placement_plan_parse_and_validate():
    plan = parse_placement_plan("int8=dla:0, high=gpu")
    assert plan == {"int8": Placement("dla", 0, True), "high": Placement("gpu", -1, True)}
    assert parse_placement_plan("high=dla:1")["int8"] == Placement("gpu")
    assert validate_placements(plan, num_dla_cores=2) == plan
    with pytest.raises(ConfigError, match="DLA cores 0 and 1 only"):
        parse_placement_plan("int8=dla:2")
    with pytest.raises(ConfigError, match="VARIANT=PLACEMENT"):
        parse_placement_plan("fp16=gpu")
    with pytest.raises(ConfigError, match="twice"):
        parse_placement_plan("int8=gpu,int8=dla:0")
    with pytest.raises(ConfigError, match="this machine has no DLA cores"):
        validate_placements(plan, num_dla_cores=0)  # x86 dGPU
    with pytest.raises(ConfigError, match=r"dla:1 but this machine has DLA cores 0\.\.0"):
        validate_placements({"high": Placement("dla", 1)}, num_dla_cores=1)
    with pytest.raises(ConfigError, match="cpu is not a TensorRT device"):
        validate_placements({"int8": Placement("cpu")}, num_dla_cores=2)


def test_tensorrt_profiles_for_batch_rect_and_dla():
    p = make_profile([416, 416], max_batch=8, opt_batch=4, dynamic_hw=True)
    assert p.min == (1, 3, 128, 128) and p.opt == (4, 3, 416, 416) and p.max == (8, 3, 416, 416)
    # every test image's rect letterbox shape lies inside the profile, so does the square one
    for hw in [(540, 960), (364, 500), (720, 1280), (375, 1242), (900, 1600), (576, 768), (416, 416)]:
        r = rect_shape(hw, (416, 416))
        assert max(r) == 416 and r[0] % 32 == 0 and r[1] % 32 == 0
        assert p.covers((1, 3) + r) and p.covers((8, 3) + r)
    assert rect_shape((375, 1242), (416, 416)) == (128, 416)
    assert not p.covers((9, 3, 416, 416)) and not p.covers((1, 3, 96, 416))
    fixed = make_profile([416, 416], max_batch=8, opt_batch=None)
    assert fixed.min == (1, 3, 416, 416) and fixed.opt == fixed.max == (8, 3, 416, 416)
    dla = make_profile([416, 416], max_batch=8, opt_batch=2, dynamic_hw=True, placement=DLA0)
    assert dla.is_static and dla.min == (8, 3, 416, 416)
    assert make_profile([640, 384], max_batch=1, dynamic_hw=True).min == (1, 3, 160, 96)
    with pytest.raises(ConfigError, match="opt_batch"):
        make_profile([416, 416], max_batch=4, opt_batch=8)
    with pytest.raises(ConfigError, match="batch dimension is static"):
        make_profile([416, 416], max_batch=4, dynamic_batch=False)


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


def test_tensorrt_inspector_summary_and_fallback_log_parsing():
    log = [
        "Default DLA is enabled but layer /head/Concat is not supported on DLA, falling back to GPU.",
        "DLA supports only 8 subgraphs per DLA core. Switching to GPU for layer /neck/Conv_7",
        "Default DLA is enabled but layer /head/Concat is not supported on DLA, falling back to GPU.",
        "something unrelated",
    ]
    assert parse_dla_fallback_messages(log) == ["/head/Concat", "/neck/Conv_7"]
    trt10 = json.dumps({"Layers": [{"Name": "a", "LayerType": "DLA"}, {"Name": "b", "LayerType": "CaskConvolution"}],
                        "Bindings": ["images", "output"]})
    trt11 = json.dumps({"Layers": ["a", "b", "c"], "I/O Tensors": [{"Name": "images"}]})
    assert summarize_inspector_json(trt10) == {"engine_layers": 2, "engine_dla_layers": 1}
    assert summarize_inspector_json(trt11) == {"engine_layers": 3, "engine_dla_layers": 0}
    assert summarize_inspector_json("not json")["engine_layers"] is None
    rep = placement_report(DLA0, ["a", "b", "c", "d"], ["b"], ["d", "x"])
    assert (rep["on_dla"], rep["on_gpu"], rep["fell_back"]) == (1, 3, ["b", "d", "x"])
    assert placement_report(GPU, ["a", "b"], [], [])["on_gpu"] == 2


# --------------------------------------------------------------------------------------------
# FP16-typed ONNX (the strongly typed high variant)
# --------------------------------------------------------------------------------------------


def test_tensorrt_fp16_onnx_conversion_tracks_fp32_output(testdata):
    import cv2
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    src = testdata / "models" / "yolox_nano.onnx"
    fp32 = onnx.load(str(src))
    fp16 = convert_onnx_to_fp16(fp32)
    io = [(v.name, v.type.tensor_type.elem_type) for v in list(fp16.graph.input) + list(fp16.graph.output)]
    assert io == [("images", TensorProto.FLOAT), ("output", TensorProto.FLOAT)]  # keep_io_types
    kinds = {t.data_type for t in fp16.graph.initializer}
    assert TensorProto.FLOAT16 in kinds
    for node in fp16.graph.node:  # Resize scales stay float32 as the ONNX spec requires
        if node.op_type == "Resize":
            const = next(n for n in fp16.graph.node if n.output and n.output[0] == node.input[2])
            assert const.attribute[0].t.data_type == TensorProto.FLOAT
    img = cv2.imread(str(testdata / "images" / "dog.jpg"))
    r = min(416 / img.shape[0], 416 / img.shape[1])
    canvas = np.full((416, 416, 3), 114, np.uint8)
    small = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)))
    canvas[: small.shape[0], : small.shape[1]] = small
    x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    ref = ort.InferenceSession(fp32.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    got = ort.InferenceSession(fp16.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    score_ref = ref[0, :, 4:5] * ref[0, :, 5:]
    score_got = got[0, :, 4:5] * got[0, :, 5:]
    assert np.abs(score_ref - score_got).max() < 0.02
    assert np.argmax(score_ref.max(1)) == np.argmax(score_got.max(1))


def test_tensorrt_fp16_conversion_refuses_graphs_it_cannot_type(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph([], "b", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(BackendError, match="ModelOpt AutoCast"):
        convert_onnx_to_fp16(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    del onnx


# --------------------------------------------------------------------------------------------
# Build orchestration with fake TensorRT 10 / 11
# --------------------------------------------------------------------------------------------


def test_tensorrt10_build_writes_keyed_engines_and_manifest_section(build_dir):
    engine_dir, manifest = build_dir
    trt = FakeTRT("10.3.0", num_dla=2)
    section, msgs = _build(trt, engine_dir, manifest, {"int8": DLA0, "high": GPU})
    assert section["trt_version"] == "10.3.0" and not section["strongly_typed"]
    assert section["timing_cache"] == "timing.cache" and (engine_dir / "timing.cache").is_file()
    e8, eh = section["engines"]["int8"], section["engines"]["high"]
    for e in (e8, eh):
        f = engine_dir / e["file"]
        assert f.is_file() and _sha(f) == e["sha256"] and e["file"].endswith(f"_{e['digest']}.engine")
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
    section2, _msgs2 = _build(trt2, engine_dir, manifest, {"int8": GPU, "high": GPU}, max_batch=8)
    assert trt2.builds[0]["cache_entries_before"] == 2
    new = {e["file"] for e in section2["engines"].values()}
    assert new.isdisjoint(old)
    assert {p.name for p in engine_dir.glob("*.engine")} == new


def test_tensorrt11_build_uses_fp16_typed_onnx_and_no_precision_flags(build_dir):
    from onnx import TensorProto

    engine_dir, manifest = build_dir
    trt = FakeTRT("11.0.1", num_dla=0)
    section, _ = _build(trt, engine_dir, manifest, {}, timing_cache=None)
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
    _section, _ = _build(FakeTRT("10.3.0"), engine_dir, manifest, {})
    before = sorted(p.name for p in engine_dir.iterdir())
    with pytest.raises(BackendError, match="failed to build the high engine.*out of tactics"):
        _build(FakeTRT("10.3.0", fail_onnx="high.onnx"), engine_dir, manifest, {}, max_batch=2)
    assert sorted(p.name for p in engine_dir.iterdir()) == before
    with pytest.raises(ConfigError, match="no DLA cores"):
        _build(FakeTRT("10.3.0", num_dla=0), engine_dir, manifest, {"int8": DLA0})


def test_tensorrt_build_refuses_corrupt_source_onnx(build_dir):
    from dpa_perception.core.errors import ManifestError

    engine_dir, manifest = build_dir
    (engine_dir / "int8_trt.onnx").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match="int8_trt.onnx: sha256"):
        _build(FakeTRT("10.3.0"), engine_dir, manifest, {})


# --------------------------------------------------------------------------------------------
# Loader refusals and the session run path (fake engine, fake device memory)
# --------------------------------------------------------------------------------------------


def test_tensorrt_loader_refuses_engines_from_another_machine(build_dir):
    engine_dir, manifest = build_dir
    with pytest.raises(BackendError, match="has no TensorRT engines: build them with `dpa-build"):
        load_tensorrt_session(engine_dir, manifest, "high", GPU, max_batch=4,
                              trt_module=FakeTRT(), machine=MACHINE, memory=object())
    section, _ = _build(FakeTRT("10.3.0"), engine_dir, manifest, {})
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


class _FakeMemory:
    name = "fake"

    def __init__(self):
        self.dev: dict[int, np.ndarray] = {}
        self.allocs = 0
        self.syncs = 0
        self.next = 4096

    def new_stream(self):
        return 7

    def alloc_device(self, nbytes):
        self.allocs += 1
        self.next += 4096 + nbytes
        self.dev[self.next] = np.zeros(nbytes, np.uint8)
        return self.next

    def alloc_host(self, nbytes):
        return np.zeros(nbytes, np.uint8)

    def h2d(self, dst, src, stream):
        assert stream == 7
        self.dev[dst][: src.nbytes] = src

    def d2h(self, dst, src, stream):
        dst[:] = self.dev[src][: dst.nbytes]

    def synchronize(self, stream):
        self.syncs += 1

    def free_device(self, ptr):
        del self.dev[ptr]

    def free_host(self, arr):
        pass

    def close(self):
        pass


class _FakeContext:
    """Output[b, 0] = sum of input[b]; Output[b, 1] = batch size the engine ran with."""

    def __init__(self, memory):
        self.memory = memory
        self.shape = None
        self.addr: dict[str, int] = {}
        self.shape_calls = 0

    def set_input_shape(self, name, shape):
        self.shape_calls += 1
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (self.shape[0], 2)

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        x = self.memory.dev[self.addr["images"]].view(np.float32).reshape(self.shape)
        out = np.stack([x.reshape(self.shape[0], -1).sum(1), np.full(self.shape[0], self.shape[0])], 1)
        self.memory.dev[self.addr["output"]][:] = out.astype(np.float32).view(np.uint8).reshape(-1)
        return True


def _fake_session(profile: ShapeProfile, placement: Placement, **engine_attrs):
    trt = FakeTRT()
    trt.nptype = lambda t: np.float32
    memory = _FakeMemory()
    ctx = _FakeContext(memory)
    engine = SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda i: ["images", "output"][i],
        get_tensor_mode=lambda n: "INPUT" if n == "images" else "OUTPUT",
        get_tensor_dtype=lambda n: "FLOAT",
        create_execution_context=lambda: ctx,
    )
    vars(engine).update(engine_attrs)
    if "nptype" in engine_attrs:
        trt.nptype = engine_attrs["nptype"]
    key = EngineKey("m", "s", "high", "fp16", "10.3.0", "8.7", placement.dla_core, "images", profile)
    sess = TensorRTSession(trt=trt, runtime=object(), engine=engine, placement=placement, key=key,
                           engine_path=Path("high_x.engine"), entry={"layers": {"on_dla": 0, "on_gpu": 3}},
                           memory=memory)
    return sess, ctx, memory


def test_trt_session_runs_caches_buffers_and_pads_static_batches():
    prof = make_profile([8, 8], max_batch=4, dynamic_hw=False)
    sess, ctx, mem = _fake_session(prof, GPU)
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
    dsess, dctx, _ = _fake_session(make_profile([8, 8], max_batch=4, placement=DLA0), DLA0)
    out = dsess.run(x[:1])
    assert out.shape == (1, 2) and out[0, 1] == 4 and dctx.shape == (4, 3, 8, 8)
    np.testing.assert_allclose(out[0, 0], x[0].sum())


def test_trt_session_refuses_io_types_without_numpy_equivalent():
    def nptype(t):  # what tensorrt.nptype does for BF16 / FP8 / INT4
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    with pytest.raises(BackendError, match="no numpy equivalent"):
        _fake_session(make_profile([8, 8], max_batch=4), GPU, nptype=nptype)


def test_trt_session_checks_the_engine_profile_against_its_key():
    prof = make_profile([8, 8], max_batch=4)
    same = lambda name, i: [prof.min, prof.opt, prof.max]  # noqa: E731
    sess, _, _ = _fake_session(prof, GPU, get_tensor_profile_shape=same)
    assert sess.run(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 2)
    other = lambda name, i: [(1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)]  # noqa: E731
    with pytest.raises(BackendError, match=r"input profile \[1, 3, 8, 8\] .. \[2, 3, 8, 8\].*rebuild"):
        _fake_session(prof, GPU, get_tensor_profile_shape=other)


def test_tensorrt_sessions_share_one_runtime_logger(build_dir, monkeypatch):
    from dpa_perception.backends.tensorrt import session as tensorrt_backend

    engine_dir, manifest = build_dir
    manifest.tensorrt, _ = _build(FakeTRT("10.3.0"), engine_dir, manifest, {})
    monkeypatch.setattr(tensorrt_backend, "TensorRTSession", lambda **kw: kw)  # stop after deserializing
    trt = FakeTRT("10.3.0")
    for variant in ("int8", "high"):
        got = load_tensorrt_session(engine_dir, manifest, variant, GPU, max_batch=4, trt_module=trt,
                                    machine=MachineInfo("10.3.0", "8.7"), memory=_FakeMemory())
        assert got["engine"].record["source"] in ("int8_trt.onnx", "high.onnx")
    # TensorRT keeps the first logger for the process: every Runtime gets that same one
    assert len(trt.runtime_loggers) == 2 and trt.runtime_loggers[0] is trt.runtime_loggers[1]
    assert tensorrt_backend.runtime_logger(trt) is trt.runtime_loggers[0]


def test_tensorrt_build_replaces_foreign_or_corrupt_timing_cache(build_dir):
    engine_dir, manifest = build_dir
    cache_file = engine_dir / "timing.cache"
    for stale, said in ((b"foreign cache of TensorRT 8.6", "another TensorRT version or GPU"),
                        (b"\x00garbage", "is unreadable")):
        cache_file.write_bytes(stale)
        trt = FakeTRT("10.3.0")
        _section, msgs = _build(trt, engine_dir, manifest, {})
        assert any(said in m for m in msgs), msgs
        assert trt.builds[0]["cache_entries_before"] == 0
        # the saved cache is this machine's: both builds' entries, not the stale bytes
        assert json.loads(cache_file.read_bytes()) == ["int8_trt.onnx", "high.onnx"]


def test_tensorrt_static_batch_model_gets_batch1_engines(build_dir):
    engine_dir, manifest = build_dir
    manifest.model = dataclasses.replace(manifest.model, dynamic_batch=False)  # dpa-build could not make the batch symbolic
    trt = FakeTRT("10.3.0", num_dla=2)
    section, msgs = _build(trt, engine_dir, manifest, {"int8": DLA0, "high": GPU}, max_batch=4, opt_batch=2)
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
    from dpa_perception.backends.tensorrt.builder import _make_logger

    trt = FakeTRT()
    sink: list[str] = []

    def broken(_msg):
        raise BrokenPipeError("stderr closed")

    logger = _make_logger(trt, broken, sink)
    sev = trt.ILogger.Severity
    logger.log(sev.ERROR, "Error Code 4: boom")  # must not raise
    logger.log(sev.VERBOSE, "tactic timing noise")
    logger.log(sev.INFO, "layer x is not supported on DLA, falling back to GPU")
    assert sink == ["Error Code 4: boom", "layer x is not supported on DLA, falling back to GPU"]


def test_tensorrt_backend_imports_without_tensorrt_or_cuda():
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None; "
        "sys.modules['cuda'] = None\n"
        "import dpa_perception.backends.tensorrt.session as b, dpa_perception.backends.tensorrt.builder as t\n"
        "from dpa_perception.core.errors import BackendError\n"
        "try:\n    b.select_device_memory()\nexcept BackendError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused: TensorRT sessions need GPU memory from cuda-python" in out.stdout


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

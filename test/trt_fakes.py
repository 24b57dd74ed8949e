"""Fake ``tensorrt`` modules, device memory and build folders for the CPU TensorRT tests.

:class:`FakeTRT` offers enough of the TensorRT Python API for ``build_tensorrt_engines`` and the
session: builds are recorded in ``trt.builds`` and "serialize" to the JSON of that record, which
``Runtime.deserialize_cuda_engine`` reads back.
"""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.builder import build_tensorrt_engines
from dpa_perception.backends.tensorrt.key import EngineKey
from dpa_perception.backends.tensorrt.probe import MachineInfo
from dpa_perception.backends.tensorrt.profiles import ShapeProfile
from dpa_perception.backends.tensorrt.session import TensorRTSession
from dpa_perception.core.manifest import Manifest

GPU = Placement("gpu")
DLA0 = Placement("dla", 0, True)
MACHINE = MachineInfo("10.3.0", "8.7")
LAYER_NAMES = ("/stem/Conv", "/backbone/Resize", "/head/Concat")


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


# --------------------------------------------------------------------------------------------
# The pieces of the fake module (each bound to its FakeTRT through a ``trt`` class attribute)
# --------------------------------------------------------------------------------------------


class Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self):
        pass


class Logger(ILogger):
    WARNING = Severity.WARNING

    def __init__(self, sev=None):
        super().__init__()

    def log(self, severity, msg):
        pass


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
        self.layers = [Layer(n) for n in LAYER_NAMES]
        self.source = ""
        self.dtypes: list[int] = []

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
    num_errors = 0

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


class Profile:
    def set_shape(self, name, mn, opt, mx):
        self.shape = (name, tuple(mn), tuple(opt), tuple(mx))


class Config:
    def __init__(self, trt):
        self.trt = trt
        self.flags: list[str] = []
        self.profiles: list = []
        self.default_device_type = "GPU"
        self.DLA_core = -1
        self.cache = None

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        names = {v: k for k, v in vars(self.trt.BuilderFlag).items()}
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
    trt: Any = None  # the FakeTRT this class is bound to

    def __init__(self, logger):
        self.logger = logger

    @property
    def num_DLA_cores(self):
        return self.trt.num_dla

    def create_network(self, flags=0):
        return Network(flags)

    def create_builder_config(self):
        return Config(self.trt)

    def create_optimization_profile(self):
        return Profile()

    def build_serialized_network(self, network, config):
        trt = self.trt
        if trt.fail_onnx and network.source == trt.fail_onnx:
            self.logger.log(Severity.ERROR, "Error Code 4: out of tactics")
            return None
        if config.default_device_type == "DLA":
            self.logger.log(
                Severity.WARNING,
                "Default DLA is enabled but layer /head/Concat is not supported on DLA, falling back to GPU.",
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
    trt: Any = None  # the FakeTRT this class is bound to

    def __init__(self, logger):
        self.trt.runtime_loggers.append(logger)
        self.DLA_core = -1
        self.num_DLA_cores = self.trt.num_dla

    def deserialize_cuda_engine(self, data):
        return Engine(json.loads(bytes(data).decode()))


def _bound(cls: type, trt: Any) -> type:
    """A subclass of ``cls`` that knows its fake module (TensorRT calls these with its own arguments)."""
    return type(cls.__name__, (cls,), {"trt": trt})


class FakeTRT(types.ModuleType):
    """Enough of the TensorRT Python API for build_tensorrt_engines and the session.

    ``fail_onnx``: the build of the network parsed from that ONNX name returns None.
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
        self.ILogger = ILogger
        self.Logger = Logger
        self.OnnxParser = OnnxParser
        self.Builder = _bound(Builder, self)
        self.Runtime = _bound(Runtime, self)


# --------------------------------------------------------------------------------------------
# A build folder with a tiny model
# --------------------------------------------------------------------------------------------


def tiny_onnx(path: Path, dynamic_hw: bool = True) -> None:
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


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


TINY_SPEC = {"family": "yolox", "input_name": "images", "output_name": "output", "input_hw": [32, 32],
             "num_classes": 80, "num_anchors": 21}


def make_build_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    """A dpa-build-like folder: high.onnx, int8.onnx, int8_trt.onnx and their manifest (not written)."""
    tiny_onnx(tmp_path / "high.onnx")
    tiny_onnx(tmp_path / "int8_trt.onnx")
    (tmp_path / "int8.onnx").write_bytes((tmp_path / "int8_trt.onnx").read_bytes())
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
            "spec": dict(TINY_SPEC),
        },
        "variants": {
            v: {"file": f"{v}.onnx", "sha256": sha(tmp_path / f"{v}.onnx")}
            for v in ("high", "int8", "int8_trt")
        },
    }
    return tmp_path, Manifest.from_dict(manifest, "test manifest")


def build(trt, engine_dir, manifest, placements, **kw):
    """build_tensorrt_engines with the fake module; returns (section, log lines)."""
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
# Device memory and an execution context for the session's run path
# --------------------------------------------------------------------------------------------


class FakeMemory:
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


class FakeContext:
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


def fake_session(profile: ShapeProfile, placement: Placement, **engine_attrs):
    """A TensorRTSession over a fake engine, context and memory; returns (session, context, memory)."""
    trt = FakeTRT()
    trt.nptype = lambda t: np.float32
    memory = FakeMemory()
    ctx = FakeContext(memory)
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

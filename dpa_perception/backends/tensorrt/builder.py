"""Build the TensorRT engines of an engine folder written by ``dpa-build``.

``build_tensorrt_engines`` is called by ``dpa-build --backend tensorrt`` and returns the manifest's
``"tensorrt"`` section. It runs on the target machine (Jetson or x86 dGPU): engines are tied to
the TensorRT version and the GPU they were built on, and to a DLA core.

Precision plan (decided by feature detection, see
:func:`dpa_perception.backends.tensorrt.key.plan_variant`):

* TensorRT 10.x: weakly typed networks. int8 <- ``int8_trt.onnx`` (explicit Q/DQ) with
  BuilderFlag.INT8 + FP16; high <- ``high.onnx`` with BuilderFlag.FP16.
* TensorRT 11.x: strongly typed only (no precision flags, no calibrators, no layer.precision).
  int8 <- the same Q/DQ ONNX (layers outside Q/DQ run in FP32, as typed in the ONNX); high <- an
  FP16-typed copy of ``high.onnx`` made by :func:`convert_onnx_to_fp16` (FP32 I/O kept), written
  next to the other files as ``high_fp16.onnx``. A user-made FP16 model (for example from ModelOpt
  AutoCast) can be put there instead and is used as it is (its sha256 is recorded).

Every engine is written to a temporary file and renamed only once all variants are built; the
file name carries the engine key digest (``high_3fa2c1d0b9e8.engine``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.key import (
    VARIANTS,
    EngineKey,
    MachineInfo,
    TrtFeatures,
    VariantPlan,
    detect_features,
    import_tensorrt,
    is_engine_file_name,
    make_profile,
    plan_variant,
    probe_machine,
    validate_placements,
)
from dpa_perception.core.errors import BackendError, ConfigError, ManifestError
from dpa_perception.core.manifest import Manifest, sha256_file, verify_file

SECTION_FORMAT_VERSION = 1
FP16_ONNX_NAME = "high_fp16.onnx"
MAX_LISTED_LAYERS = 200

LogFn = Callable[[str], None]

# --------------------------------------------------------------------------------------------
# FP16-typed ONNX for strongly typed TensorRT
# --------------------------------------------------------------------------------------------

# Inputs that the ONNX spec types as float32 whatever the data type is: they stay FP32.
_FP32_ONLY_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales
    "Upsample": frozenset({1}),  # scales
}
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})


def convert_onnx_to_fp16(model: Any, *, keep_io_types: bool = True) -> Any:
    """Return an FP16-typed copy of an FP32 ONNX model (``onnx.ModelProto``).

    Every FP32 initializer and Constant becomes FP16, Cast(to=FLOAT) becomes Cast(to=FLOAT16),
    except tensors that only feed inputs the ONNX spec fixes to float32 (Resize roi/scales,
    Upsample scales). With ``keep_io_types`` the graph inputs and outputs stay FP32 through Cast
    nodes, so the runtime feeds and reads float32 exactly as for the FP32 model. The result is
    type-checked with ONNX's strict shape inference; a graph this simple pass cannot type
    consistently raises :class:`BackendError` (convert it with ModelOpt AutoCast instead and put
    it in the build folder as ``high_fp16.onnx``).

    Why not onnxconverter-common: one more dependency on Jetson images for a pass this small, and
    its blocklist-based casts have to be checked anyway; ModelOpt AutoCast is the NVIDIA tool for
    models this pass refuses.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:
        if node.op_type in _SUBGRAPH_OPS:
            raise BackendError(
                f"FP16 conversion: node {node.name or node.op_type} has a subgraph ({node.op_type}); "
                "convert the model with ModelOpt AutoCast and save it as high_fp16.onnx"
            )

    # Where each tensor is consumed: (node, input index).
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, i))
    graph_outputs = {o.name for o in g.output}

    def fp32_only(name: str) -> bool:
        uses = consumers.get(name, [])
        return (
            bool(uses)
            and name not in graph_outputs
            and all(i in _FP32_ONLY_INPUTS.get(n.op_type, ()) for n, i in uses)
        )

    def fp32_uses(name: str) -> list[tuple[Any, int]]:
        return [(n, i) for n, i in consumers.get(name, []) if i in _FP32_ONLY_INPUTS.get(n.op_type, ())]

    def to_fp16(t: Any) -> Any:
        arr = numpy_helper.to_array(t).astype(np.float32)
        if arr.size and np.abs(arr).max() > 65504.0:
            arr = np.clip(arr, -65504.0, 65504.0)
        out = numpy_helper.from_array(arr.astype(np.float16), t.name)
        return out

    # 1. initializers
    new_inits = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or fp32_only(init.name):
            new_inits.append(init)
            continue
        keep = fp32_uses(init.name)
        if keep:  # consumed both ways: an FP32 copy for the FP32-only inputs
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = init.name + "__fp32"
            new_inits.append(copy)
            for n, i in keep:
                n.input[i] = copy.name
        new_inits.append(to_fp16(init))
    del g.initializer[:]
    g.initializer.extend(new_inits)

    # 2. Constant / ConstantOfShape values and Cast targets
    for node in list(g.node):
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in node.attribute:
                if (
                    attr.name == "value"
                    and attr.t.data_type == TensorProto.FLOAT
                    and not (node.op_type == "Constant" and fp32_only(node.output[0]))
                ):
                    if node.op_type == "Constant" and fp32_uses(node.output[0]):
                        raise BackendError(
                            f"FP16 conversion: constant {node.output[0]} feeds both FP32-only and "
                            "FP16 inputs; use ModelOpt AutoCast for this model"
                        )
                    attr.t.CopyFrom(to_fp16(attr.t))
        elif node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT and not fp32_only(node.output[0]):
                    attr.i = TensorProto.FLOAT16

    # 3. graph inputs / outputs stay FP32 behind Cast nodes
    cast_nodes_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if keep_io_types:
            casted = inp.name + "__fp16"
            for n, i in consumers.get(inp.name, []):
                n.input[i] = casted
            cast_nodes_in.append(
                helper.make_node("Cast", [inp.name], [casted], name=inp.name + "__to_fp16", to=TensorProto.FLOAT16)
            )
        else:
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    cast_nodes_out = []
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if keep_io_types:
            produced = out.name + "__fp16"
            for node in g.node:
                for k, name in enumerate(node.output):
                    if name == out.name:
                        node.output[k] = produced
            for n, i in consumers.get(out.name, []):
                n.input[i] = produced
            cast_nodes_out.append(
                helper.make_node("Cast", [produced], [out.name], name=out.name + "__to_fp32", to=TensorProto.FLOAT)
            )
        else:
            out.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = cast_nodes_in + list(g.node) + cast_nodes_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale types; re-inferred below

    try:
        checked = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError
        raise BackendError(
            f"FP16 conversion produced an inconsistently typed graph ({str(exc).splitlines()[0]}); "
            "convert the model with ModelOpt AutoCast (python -m modelopt.onnx.autocast "
            "--onnx_path high.onnx --keep_io_types) and save it in the build folder as high_fp16.onnx"
        ) from exc
    del checked
    return m


def write_fp16_onnx(src: Path, dst: Path) -> str:
    """Convert ``src`` to an FP16-typed ONNX at ``dst`` (atomically); return its sha256."""
    import onnx

    model = convert_onnx_to_fp16(onnx.load(str(src)))
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)
    return sha256_file(dst)


# --------------------------------------------------------------------------------------------
# Placement report helpers (pure)
# --------------------------------------------------------------------------------------------

_FALLBACK_PATTERNS = (
    re.compile(r"layer (?P<name>.+?) is not (?:supported|running) on DLA, falling back to GPU"),
    re.compile(r"Switching to GPU for layer (?P<name>.+?)\s*$"),
)


def parse_dla_fallback_messages(lines: Iterable[str]) -> list[str]:
    """Layer names the builder log says fell back from DLA to GPU (in order, no repeats)."""
    seen: dict[str, None] = {}
    for line in lines:
        for pat in _FALLBACK_PATTERNS:
            m = pat.search(line)
            if m:
                seen.setdefault(m.group("name").strip(), None)
    return list(seen)


def summarize_inspector_json(text: str) -> dict[str, Any]:
    """Count engine layers from ``IEngineInspector.get_engine_information(JSON)``.

    Works with the TensorRT 10 ("Bindings") and 11 ("I/O Tensors") schemas; both list "Layers",
    as names (ProfilingVerbosity below DETAILED) or as objects. A layer counts as DLA when its
    type, name or tactic mentions DLA (DLA subgraphs are DLA "ForeignNode" layers). ``dla_layers``
    is therefore a best effort; the network-level counts in the report are authoritative.
    """
    try:
        info = json.loads(text)
    except ValueError:
        return {"engine_layers": None, "engine_dla_layers": None}
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    dla = 0
    for layer in layers:
        if isinstance(layer, dict):
            fields = " ".join(
                str(layer.get(k, "")) for k in ("LayerType", "Name", "TacticName", "Origin")
            )
        else:
            fields = str(layer)
        if re.search(r"\bDLA\b", fields, re.IGNORECASE):
            dla += 1
    return {"engine_layers": len(layers), "engine_dla_layers": dla}


def placement_report(
    placement: Placement,
    network_layer_names: list[str],
    cannot_run_on_dla: list[str],
    log_fallbacks: list[str],
    inspector: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How many network layers landed on DLA vs GPU and which fell back (capped list)."""
    total = len(network_layer_names)
    if placement.device != "dla":
        report: dict[str, Any] = {
            "network_layers": total,
            "on_dla": 0,
            "on_gpu": total,
            "fell_back": [],
            "fell_back_count": 0,
        }
    else:
        wanted = set(cannot_run_on_dla) | set(log_fallbacks)
        fell = [n for n in network_layer_names if n in wanted]
        fell += [n for n in log_fallbacks if n not in set(fell)]  # names the log spells differently
        report = {
            "network_layers": total,
            "on_dla": max(0, total - len(fell)),
            "on_gpu": len(fell),
            "fell_back": fell[:MAX_LISTED_LAYERS],
            "fell_back_count": len(fell),
        }
    if inspector:
        report.update(inspector)
    return report


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


def _log_fn(log: Any) -> LogFn:
    if log is None:
        return logging.getLogger("dpa_perception.tensorrt").info
    if hasattr(log, "info") and callable(log.info):
        return log.info  # type: ignore[no-any-return]
    if callable(log):
        return log  # type: ignore[no-any-return]
    raise ConfigError(f"log must be a callable or a logging.Logger, got {type(log).__name__}")


def _make_logger(trt: Any, log: LogFn, sink: list[str]) -> Any:
    """A trt.ILogger that keeps messages down to INFO (for fallback parsing) and forwards
    warnings and errors. TensorRT calls it from C++: it must never raise."""
    sev = trt.ILogger.Severity
    loud = {sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING}
    verbose = getattr(sev, "VERBOSE", None)

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            try:
                if severity != verbose:
                    sink.append(str(msg))
                if severity in loud:
                    log(f"[TensorRT] {msg}")
            except Exception:  # an exception must not cross into TensorRT
                pass

    return _Logger()


def _load_timing_cache(config: Any, data: bytes, say: LogFn, where: Any) -> Any:
    """An ITimingCache holding ``data``, or an empty one when ``data`` is empty, unreadable or
    was made by another TensorRT version / GPU (``set_timing_cache`` refuses it). An empty cache
    replaces a foreign one, so the file saved after the build is this machine's, not the stale one."""
    if data:
        try:
            cache = config.create_timing_cache(data)
            usable = cache is not None and bool(config.set_timing_cache(cache, False))
        except Exception as exc:  # corrupt file: TensorRT raises, start afresh
            say(f"timing cache {where} is unreadable ({exc}); starting an empty one")
        else:
            if usable:
                return cache
            say(f"timing cache {where} was made by another TensorRT version or GPU; starting an empty one")
    return config.create_timing_cache(b"")


def _flag_bits(enum: Any, names: Iterable[str]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


@dataclass
class _Built:
    variant: str
    plan: VariantPlan
    key: EngineKey
    tmp_path: Path
    entry: dict[str, Any]


def _source_onnx(
    engine_dir: Path, manifest: Manifest, plan: VariantPlan, log: LogFn
) -> tuple[Path, str]:
    entry = manifest.variants.get(plan.source)
    if entry is None:
        raise ManifestError(
            f"{engine_dir}/manifest.json has no {plan.source!r} variant, needed for the TensorRT "
            f"{plan.variant} engine: rebuild the folder with dpa-build"
        )
    path = manifest.variant_path(engine_dir, plan.source)
    digest = verify_file(path, entry.sha256, f"{plan.source} ONNX")
    return path, digest


def _build_input(engine_dir: Path, source: Path, plan: VariantPlan, log: LogFn) -> tuple[Path, str]:
    """The file TensorRT parses: the source itself, or its FP16-typed copy (strongly typed high)."""
    if not plan.fp16_onnx:
        return source, sha256_file(source)
    fp16 = engine_dir / FP16_ONNX_NAME
    if fp16.is_file() and fp16.stat().st_mtime >= source.stat().st_mtime:
        log(f"using the FP16-typed model {fp16.name} already in the folder")
        return fp16, sha256_file(fp16)
    log(f"writing an FP16-typed copy of {source.name} as {fp16.name} (strongly typed TensorRT)")
    return fp16, write_fp16_onnx(source, fp16)


def build_tensorrt_engines(
    engine_dir: Path,
    manifest: Manifest,
    *,
    placements: dict[str, Placement],
    max_batch: int,
    opt_batch: int | None,
    workspace_mib: int,
    timing_cache: Path | None,
    log: Any,
    trt_module: Any = None,
    machine: MachineInfo | None = None,
) -> dict:
    """Build the int8 and high TensorRT engines of ``engine_dir``; return the manifest section.

    ``trt_module`` and ``machine`` exist for tests (a fake ``tensorrt`` and a fixed TensorRT
    version / compute capability); normally both are found on this machine.
    """
    say = _log_fn(log)
    engine_dir = Path(engine_dir)
    trt = import_tensorrt() if trt_module is None else trt_module
    features: TrtFeatures = detect_features(trt)
    if machine is None:
        machine = probe_machine(trt)
    if workspace_mib < 1:
        raise ConfigError(f"workspace_mib must be >= 1, got {workspace_mib}")
    model_entry = manifest.model
    if model_entry.engine_max_batch(max_batch) != max_batch:
        say(f"the model's batch dimension is static: building batch-1 engines (max batch {max_batch} ignored)")
        max_batch, opt_batch = 1, None

    messages: list[str] = []
    logger = _make_logger(trt, say, messages)
    builder = trt.Builder(logger)
    num_dla = int(getattr(builder, "num_DLA_cores", 0) or 0)
    plan_places = validate_placements(placements, num_dla)
    say(
        f"TensorRT {machine.trt_version} on compute capability {machine.compute_capability}, "
        f"{num_dla} DLA core(s); {'weakly' if features.weakly_typed else 'strongly'} typed build"
    )

    # One timing cache object shared by both builds, loaded from and saved to ``timing_cache``.
    probe_config = builder.create_builder_config()
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
        say(f"loaded timing cache {timing_cache} ({len(cache_bytes)} bytes)")
    cache = _load_timing_cache(probe_config, cache_bytes, say, timing_cache)

    built: list[_Built] = []
    try:
        for variant in VARIANTS:
            plan = plan_variant(features, variant, plan_places[variant])
            say("building " + plan.describe())
            source_path, source_sha = _source_onnx(engine_dir, manifest, plan, say)
            onnx_path, onnx_sha = _build_input(engine_dir, source_path, plan, say)
            profile = make_profile(
                model_entry.input_hw,
                max_batch=max_batch,
                opt_batch=opt_batch,
                dynamic_batch=model_entry.dynamic_batch,
                dynamic_hw=model_entry.dynamic_hw,
                placement=plan.placement,
            )
            key = EngineKey.for_plan(plan, machine, model_sha256=model_entry.sha256, source_sha256=source_sha,
                                     input_name=model_entry.input_name, profile=profile)
            built.append(
                _build_one(trt, builder, logger, messages, cache, plan, key, onnx_path, engine_dir,
                           workspace_mib, say)
            )
            built[-1].entry["built_from"] = {"file": onnx_path.name, "sha256": onnx_sha}
        # All built: save the cache, then move the engines into place.
        cache_name: str | None = None
        if timing_cache is not None:
            _atomic_write(Path(timing_cache), bytes(cache.serialize()))
            say(f"saved timing cache {timing_cache}")
            tc = Path(timing_cache)
            cache_name = tc.name if tc.parent.resolve() == engine_dir.resolve() else str(tc)
        engines: dict[str, Any] = {}
        for b in built:
            final = engine_dir / b.key.file_name()
            os.replace(b.tmp_path, final)
            engines[b.variant] = b.entry
        keep = {e["file"] for e in engines.values()}
        for stale in engine_dir.iterdir():
            if is_engine_file_name(stale.name) and stale.name not in keep:
                stale.unlink()
                say(f"removed stale engine {stale.name}")
    finally:
        for b in built:
            if b.tmp_path.exists():
                b.tmp_path.unlink()
    return {
        "format_version": SECTION_FORMAT_VERSION,
        "trt_version": machine.trt_version,
        "compute_capability": machine.compute_capability,
        "strongly_typed": not features.weakly_typed,
        "num_dla_cores": num_dla,
        "max_batch": max_batch,
        "opt_batch": opt_batch if opt_batch is not None else max_batch,
        "workspace_mib": workspace_mib,
        "timing_cache": cache_name,
        "engines": engines,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_one(
    trt: Any,
    builder: Any,
    logger: Any,
    messages: list[str],
    cache: Any,
    plan: VariantPlan,
    key: EngineKey,
    onnx_path: Path,
    engine_dir: Path,
    workspace_mib: int,
    say: LogFn,
) -> _Built:
    t0 = time.monotonic()
    network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(
            f"TensorRT could not parse {onnx_path.name}: " + ("; ".join(errors) or "unknown error")
        )
    if network.num_inputs != 1:
        raise BackendError(f"{onnx_path.name}: expected one input, the network has {network.num_inputs}")
    inp = network.get_input(0)
    if inp.name != key.input_name:
        raise BackendError(
            f"{onnx_path.name}: network input is {inp.name!r}, the manifest says {key.input_name!r}"
        )
    dims = [int(d) for d in inp.shape]
    prof = key.profile
    for i, d in enumerate(dims):
        if d >= 0 and not (prof.min[i] == prof.max[i] == d):
            raise BackendError(
                f"{onnx_path.name}: input dimension {i} is fixed at {d} but the profile needs "
                f"{prof.min[i]}..{prof.max[i]} (is the model's batch / size symbolic?)"
            )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not config.set_timing_cache(cache, False):
        say("the timing cache does not match this TensorRT/GPU; building without its entries")
    if plan.placement.device == "dla":
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.placement.dla_core)
    profile = builder.create_optimization_profile()
    profile.set_shape(key.input_name, prof.min, prof.opt, prof.max)
    config.add_optimization_profile(profile)

    layer_names: list[str] = []
    cannot: list[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layer_names.append(str(layer.name))
        if plan.placement.device == "dla" and not config.can_run_on_DLA(layer):
            cannot.append(str(layer.name))

    first_msg = len(messages)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errs = [m for m in messages[first_msg:] if "rror" in m][-5:]
        raise BackendError(
            f"TensorRT failed to build the {plan.variant} engine from {onnx_path.name}"
            + (": " + " | ".join(errs) if errs else "")
        )
    data = bytes(serialized)
    fallbacks = parse_dla_fallback_messages(messages[first_msg:])
    inspector = _inspect(trt, logger, data, plan.placement, say)
    fd, tmp = tempfile.mkstemp(dir=engine_dir, prefix=f".{plan.variant}_", suffix=".engine.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    report = placement_report(plan.placement, layer_names, cannot, fallbacks, inspector)
    seconds = time.monotonic() - t0
    say(
        f"built {key.file_name()} ({len(data) / 1e6:.1f} MB, {seconds:.0f} s): "
        f"{report['on_dla']} layers on DLA, {report['on_gpu']} on GPU"
    )
    entry: dict[str, Any] = {
        "file": key.file_name(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "digest": key.digest(),
        "key": key.to_dict(),
        "source": plan.source,
        "precision": plan.precision,
        "placement": str(plan.placement),
        "gpu_fallback": bool(plan.placement.gpu_fallback) if plan.placement.device == "dla" else None,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "network_flags": list(plan.network_flags),
        "layers": report,
        "build_seconds": round(seconds, 1),
    }
    return _Built(plan.variant, plan, key, Path(tmp), entry)


def _inspect(trt: Any, logger: Any, data: bytes, placement: Placement, say: LogFn) -> dict[str, Any] | None:
    """Deserialize the fresh engine and summarize its layers; None if that is not possible here."""
    try:
        runtime = trt.Runtime(logger)
        if placement.device == "dla":
            runtime.DLA_core = int(placement.dla_core)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            return None
        inspector = engine.create_engine_inspector()
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    except Exception as exc:
        say(f"engine inspector unavailable ({exc}); reporting network-level placement only")
        return None
    return summarize_inspector_json(str(text))


# --------------------------------------------------------------------------------------------
# CLI (``dpa-build --backend tensorrt`` calls ``main([ENGINE_DIR])``)
# --------------------------------------------------------------------------------------------


def _print_stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Build the TensorRT engines of an existing engine folder and record them in its manifest."""
    import argparse

    from dpa_perception.backends.tensorrt.key import parse_placement_plan
    from dpa_perception.core.errors import DpaError

    p = argparse.ArgumentParser(
        prog="dpa-build --backend tensorrt",
        description="Build TensorRT engines (int8 from int8_trt.onnx, high in FP16) on this machine.",
    )
    p.add_argument("engine_dir", type=Path, help="engine folder written by dpa-build")
    p.add_argument("--placement", default="int8=gpu,high=gpu",
                   help="per-variant placement, e.g. int8=dla:0,high=gpu (default: both on gpu)")
    p.add_argument("--no-gpu-fallback", action="store_true",
                   help="DLA variants fail to build instead of running unsupported layers on the GPU")
    p.add_argument("--max-batch", type=int, default=int(os.environ.get("DPA_TRT_MAX_BATCH", "8")),
                   help="largest batch (cameras per call) the engines accept (default 8)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch the tuner optimises for (default: max)")
    p.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit in MiB")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache file, loaded and saved (default: ENGINE_DIR/timing.cache)")
    a = p.parse_args(argv)
    try:
        manifest = Manifest.load(a.engine_dir, verify=True, required=("high", "int8_trt"))
        placements = parse_placement_plan(a.placement, gpu_fallback=not a.no_gpu_fallback)
        section = build_tensorrt_engines(
            a.engine_dir,
            manifest,
            placements=placements,
            max_batch=a.max_batch,
            opt_batch=a.opt_batch,
            workspace_mib=a.workspace_mib,
            timing_cache=a.timing_cache or (a.engine_dir / "timing.cache"),
            log=_print_stderr,
        )
        manifest.tensorrt = section
        manifest.write(a.engine_dir)
    except DpaError as exc:
        _print_stderr(f"dpa-build: error: {exc}")
        return 2
    for name, e in section["engines"].items():
        lay = e["layers"]
        _print_stderr(
            f"dpa-build: {name}: {e['file']} {e['precision']} on {e['placement']} "
            f"({lay['on_dla']} layers on DLA, {lay['on_gpu']} on GPU)"
        )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

"""One TensorRT engine: parse the ONNX, configure the builder for its plan and profile, build,
inspect where its layers run, and write it to a temporary file in the engine folder. Only
attributes the ``tensorrt`` module has are used (the module is passed in, never imported here)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.key import EngineKey
from dpa_perception.backends.tensorrt.placement_report import (
    parse_dla_fallback_messages,
    placement_report,
    summarize_inspector_json,
)
from dpa_perception.backends.tensorrt.plan import VariantPlan
from dpa_perception.backends.tensorrt.profiles import ShapeProfile
from dpa_perception.core.errors import BackendError

LogFn = Callable[[str], None]


def make_logger(trt: Any, log: LogFn, sink: list[str]) -> Any:
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


def open_timing_cache(builder: Any, timing_cache: Path | None, say: LogFn) -> Any:
    """One timing cache object for every build of the folder, loaded from ``timing_cache``."""
    probe_config = builder.create_builder_config()
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
        say(f"loaded timing cache {timing_cache} ({len(cache_bytes)} bytes)")
    return _load_timing_cache(probe_config, cache_bytes, say, timing_cache)


def _flag_bits(enum: Any, names: Iterable[str]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


@dataclass
class BuiltEngine:
    """An engine built into ``tmp_path``, renamed into place once every variant is built."""

    variant: str
    plan: VariantPlan
    key: EngineKey
    tmp_path: Path
    entry: dict[str, Any]


@dataclass(frozen=True)
class BuildContext:
    """What every engine build of one folder shares."""

    trt: Any
    builder: Any
    logger: Any
    messages: list[str]  # the TensorRT log since the logger was made (for fallback parsing)
    cache: Any  # the shared ITimingCache
    engine_dir: Path
    workspace_mib: int
    say: LogFn


def _check_input_dims(onnx_path: Path, dims: list[int], prof: ShapeProfile) -> None:
    for i, d in enumerate(dims):
        if d >= 0 and not (prof.min[i] == prof.max[i] == d):
            raise BackendError(
                f"{onnx_path.name}: input dimension {i} is fixed at {d} but the profile needs "
                f"{prof.min[i]}..{prof.max[i]} (is the model's batch / size symbolic?)"
            )


def _parse_network(ctx: BuildContext, plan: VariantPlan, key: EngineKey, onnx_path: Path) -> Any:
    """The network parsed from ``onnx_path``, checked to have the one input the key names."""
    trt = ctx.trt
    network = ctx.builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags))
    parser = trt.OnnxParser(network, ctx.logger)
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
    _check_input_dims(onnx_path, [int(d) for d in inp.shape], key.profile)
    return network


def _configure(ctx: BuildContext, plan: VariantPlan, key: EngineKey) -> Any:
    """The builder config: workspace, precision flags, timing cache, DLA core, the profile."""
    trt, builder = ctx.trt, ctx.builder
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(ctx.workspace_mib) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if not config.set_timing_cache(ctx.cache, False):
        ctx.say("the timing cache does not match this TensorRT/GPU; building without its entries")
    if plan.placement.device == "dla":
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(plan.placement.dla_core)
    prof = key.profile
    profile = builder.create_optimization_profile()
    profile.set_shape(key.input_name, prof.min, prof.opt, prof.max)
    config.add_optimization_profile(profile)
    return config


def _layers(network: Any, config: Any, placement: Placement) -> tuple[list[str], list[str]]:
    """The network's layer names, and those the builder says cannot run on DLA (DLA placements)."""
    names: list[str] = []
    cannot: list[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        names.append(str(layer.name))
        if placement.device == "dla" and not config.can_run_on_DLA(layer):
            cannot.append(str(layer.name))
    return names, cannot


def _serialize(ctx: BuildContext, network: Any, config: Any, plan: VariantPlan, onnx_path: Path) -> tuple[bytes, list[str]]:
    """The serialized engine and the TensorRT log lines written while building it."""
    first_msg = len(ctx.messages)
    serialized = ctx.builder.build_serialized_network(network, config)
    if serialized is None:
        errs = [m for m in ctx.messages[first_msg:] if "rror" in m][-5:]
        raise BackendError(
            f"TensorRT failed to build the {plan.variant} engine from {onnx_path.name}"
            + (": " + " | ".join(errs) if errs else "")
        )
    return bytes(serialized), ctx.messages[first_msg:]


def _write_temp(engine_dir: Path, variant: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=engine_dir, prefix=f".{variant}_", suffix=".engine.tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)


def _entry(plan: VariantPlan, key: EngineKey, data: bytes, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The engine's entry in the manifest's ``tensorrt.engines``."""
    placement = plan.placement
    return {
        "file": key.file_name(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "digest": key.digest(),
        "key": key.to_dict(),
        "source": plan.source,
        "precision": plan.precision,
        "placement": str(placement),
        "gpu_fallback": bool(placement.gpu_fallback) if placement.device == "dla" else None,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "network_flags": list(plan.network_flags),
        "layers": report,
        "build_seconds": round(seconds, 1),
    }


def build_one(ctx: BuildContext, plan: VariantPlan, key: EngineKey, onnx_path: Path) -> BuiltEngine:
    """Build the engine of ``plan`` from ``onnx_path`` into a temporary file of the folder."""
    t0 = time.monotonic()
    network = _parse_network(ctx, plan, key, onnx_path)
    config = _configure(ctx, plan, key)
    layer_names, cannot = _layers(network, config, plan.placement)
    data, log_lines = _serialize(ctx, network, config, plan, onnx_path)
    fallbacks = parse_dla_fallback_messages(log_lines)
    inspector = _inspect(ctx.trt, ctx.logger, data, plan.placement, ctx.say)
    tmp = _write_temp(ctx.engine_dir, plan.variant, data)
    report = placement_report(plan.placement, layer_names, cannot, fallbacks, inspector)
    seconds = time.monotonic() - t0
    ctx.say(
        f"built {key.file_name()} ({len(data) / 1e6:.1f} MB, {seconds:.0f} s): "
        f"{report['on_dla']} layers on DLA, {report['on_gpu']} on GPU"
    )
    return BuiltEngine(plan.variant, plan, key, tmp, _entry(plan, key, data, report, seconds))


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

"""One assembly: validated node parameters -> engine + pipeline + diagnostics.

The lifecycle node (``on_configure`` and its parameter callback) and ``dpa-replay`` both build what
they run through :func:`assemble` from the same parameter values (the table in
:mod:`dpa_perception.core.node_params`), so a replay with the node's YAML runs exactly what the node
runs. :func:`runtime_config` is the pure part (values -> settings, no engine loaded), which tests
compare between the two callers.

Layering: this module sits above the backends and the dual-mode engine and below the node and the
tools; it imports no ROS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.core import node_params as P
from dpa_perception.core.diagnostics import DiagnosticsBuilder, StatusRecord
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.preprocess import resized_hw
from dpa_perception.core.types import MODES, NS_PER_S
from dpa_perception.inference.engine import DualModeEngine

WARMUP_RUNS = 3


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything :func:`assemble` builds from, derived from validated parameter values alone."""

    engine_dir: str
    backend: str
    placements: tuple[tuple[str, str], ...]  # (variant, placement) with "auto" resolved
    gpu_fallback: bool
    ort_intra_op_threads: int
    max_batch: int
    pipeline: PipelineConfig
    decode: DecodeConfig
    cameras: tuple[str, ...]
    reduced_decode: bool
    latency_error_after_s: float
    degraded_threshold: float


def runtime_config(values: Mapping[str, Any]) -> RuntimeConfig:
    """The settings of a runtime from parameter values (validated here, so raw values are fine)."""
    return _config_of(P.validate_values(values))


def _config_of(v: Mapping[str, Any]) -> RuntimeConfig:
    """:func:`runtime_config` of values :func:`node_params.validate_values` already returned."""
    pipeline = PipelineConfig(**P.pipeline_kwargs(v))
    pipeline.validate()
    decode = DecodeConfig(**P.decode_kwargs(v))
    decode.validate()
    return RuntimeConfig(
        engine_dir=str(v["engine_dir"]),
        backend=v["backend"],
        placements=tuple((m, P.resolved_placement(v, m)) for m in MODES),
        gpu_fallback=v["gpu_fallback"],
        ort_intra_op_threads=v["ort_intra_op_threads"],
        max_batch=v["max_batch"],
        pipeline=pipeline,
        decode=decode,
        cameras=tuple(v["camera_topics"]),
        reduced_decode=v["reduced_decode"],
        latency_error_after_s=v["latency_error_after_s"],
        degraded_threshold=v["enter_high_threshold"],
    )


@dataclass
class Runtime:
    """A loaded engine, its pipeline and the diagnostics rules, plus the values they came from."""

    config: RuntimeConfig
    values: dict[str, Any]
    engine: DualModeEngine
    pipeline: Pipeline
    diagnostics: DiagnosticsBuilder
    engine_desc: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.engine.spec.class_names)

    def apply_live(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and apply live parameter changes; returns them normalised.

        Everything is checked before anything changes (a refusal raises :class:`ConfigError` and
        leaves the runtime as it was). Structural parameters are refused.
        """
        live = P.validate_live_update(self.values, changes)
        merged = {**self.values, **live}
        decode = None
        if P.touches_decode(live):
            decode = DecodeConfig(**P.decode_kwargs(merged), max_detections=self.engine.decode.max_detections)
            decode.validate()
        pipeline_changes = P.pipeline_changes(live)
        if pipeline_changes:
            self.pipeline.update(**pipeline_changes)  # validates; raises before changing anything
        if decode is not None:
            self.pipeline.set_decode(decode)
        self.diagnostics.latency_error_after_s = float(merged["latency_error_after_s"])
        self.diagnostics.degraded_threshold = float(merged["enter_high_threshold"])
        self.values = merged
        return live

    def status(self, now_ns: int, active: bool) -> list[StatusRecord]:
        """The diagnostic statuses now (``now_ns`` on the node clock)."""
        return self.diagnostics.build(self.pipeline.stats(), self.engine_desc, now_s=now_ns / NS_PER_S, active=active)

    def close(self) -> bool:
        """Stop the worker and free the engine. False when the worker could not finish its batch in
        time: the engine is then left to the worker (freed when it exits) rather than freed under it."""
        if not self.pipeline.stop():
            return False
        self.engine.close()
        return True


def open_engine(cfg: RuntimeConfig, warmup_runs: int = WARMUP_RUNS) -> DualModeEngine:
    """The dual-mode engine of ``cfg``, loaded (never built) and warmed up on its input shape."""
    engine = DualModeEngine(
        cfg.engine_dir,
        backend=cfg.backend,
        placements=dict(cfg.placements),
        ort_options=OrtOptions(intra_op_threads=cfg.ort_intra_op_threads),
        decode=cfg.decode,
        max_batch=cfg.max_batch,
        gpu_fallback=cfg.gpu_fallback,
    )
    try:
        if not engine.supports(cfg.pipeline.input_shape):
            raise ConfigError(
                f"input_shape {cfg.pipeline.input_shape} needs an engine with dynamic height/width; "
                "this one is fixed: use input_shape square or rebuild with dynamic shapes"
            )
        if warmup_runs:
            engine.warmup(warmup_runs, input_shape=cfg.pipeline.input_shape)
    except BaseException:
        engine.close()
        raise
    return engine


def assemble(
    values: Mapping[str, Any],
    *,
    clock_ns: Callable[[], int],
    steady_ns: Callable[[], int] | None = None,
    prefix: str = "dpa_perception",
    hardware_id: str = "",
    warmup_runs: int = WARMUP_RUNS,
    engine: DualModeEngine | None = None,
) -> Runtime:
    """Engine + pipeline + diagnostics from parameter values (what configure does, and the replay).

    ``clock_ns``: "now" in the time base of the frame stamps (the node clock, or bag time);
    ``steady_ns``: a continuous clock for ages after arrival (the node: ``time.monotonic_ns``).
    ``engine``: an engine already loaded from ``engine_dir`` to reuse (tests, benchmarks); it is
    checked against the settings and its decode settings are replaced by the parameters'.
    """
    validated = P.validate_values(values)
    cfg = _config_of(validated)
    if engine is None:
        engine = open_engine(cfg, warmup_runs)
    else:
        _check_reused(engine, cfg)
    try:
        spec = engine.spec
        target = (lambda h, w: resized_hw((h, w), spec)) if cfg.reduced_decode else None
        pipeline = Pipeline(engine, cfg.pipeline, clock_ns=clock_ns, steady_ns=steady_ns, decode_target=target)
        for cam in cfg.cameras:
            pipeline.add_camera(cam)
    except BaseException:
        engine.close()
        raise
    diag = DiagnosticsBuilder(prefix=prefix, hardware_id=hardware_id,
                              latency_error_after_s=cfg.latency_error_after_s,
                              degraded_threshold=cfg.degraded_threshold)  # fmt: skip
    return Runtime(cfg, validated, engine, pipeline, diag, engine.describe())


def _check_reused(engine: DualModeEngine, cfg: RuntimeConfig) -> None:
    if Path(engine.engine_dir).resolve() != Path(cfg.engine_dir).resolve() or engine.backend != cfg.backend:
        raise ConfigError(f"the engine given was loaded from {engine.engine_dir} ({engine.backend}), "
                          f"the parameters name {cfg.engine_dir} ({cfg.backend})")
    if not engine.supports(cfg.pipeline.input_shape):
        raise ConfigError(f"the engine does not support input_shape {cfg.pipeline.input_shape!r}")
    engine.decode = cfg.decode


# ---------------------------------------------------------------- the node's parameter files


def _ros_parameters(doc: Any, where: str, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of a ROS 2 parameter file that apply to ``node_name``."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a ROS 2 parameter file (expected 'node_name: ros__parameters: ...')")
    out: dict[str, Any] = {}
    for key, section in doc.items():
        name = str(key).strip("/").split("/")[-1]
        if name not in ("**", "*", node_name):
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: {key!r} has no ros__parameters mapping")
        out.update(params)
    if not out:
        raise ConfigError(f"{where}: no ros__parameters for '/**' or {node_name!r}")
    return out


def load_parameter_files(paths: Sequence[Path], node_name: str = "dpa_perception") -> dict[str, Any]:
    """Parameters from the node's ROS 2 YAML files, merged in order (later files win).

    Unknown keys are refused (a typo would otherwise silently keep a default); values are validated
    later, by :func:`runtime_config`, exactly as the node validates them.
    """
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the parameter file ({exc})") from exc
        params = _ros_parameters(doc, str(path), node_name)
        unknown = sorted(set(params) - set(P.SPECS) - {"use_sim_time"})
        if unknown:
            raise ConfigError(f"{path}: unknown parameter(s) {', '.join(unknown)}")
        merged.update({k: v for k, v in params.items() if k in P.SPECS})
    return merged

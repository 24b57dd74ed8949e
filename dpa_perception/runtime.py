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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.core import node_params as P
from dpa_perception.core.diagnostics import DiagnosticsBuilder, StatusRecord
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.input_shape import resolve_input_shape
from dpa_perception.core.machine import machine_key
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.preprocess import resized_hw
from dpa_perception.core.throughput import ThroughputChoice, choose_throughput
from dpa_perception.core.types import MODES, NS_PER_S
from dpa_perception.core.world_params import WORLD_PARAMS, camera_param
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.world.geometry import CameraGeometry, geometry_from_values
from dpa_perception.world.stage import WorldConfig, WorldStage

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
    world: WorldConfig
    tracked_cameras: tuple[str, ...]  # cameras with a geometry (world output), when tracking is on
    publish_threshold: float  # the 2D output's score threshold (the engine decodes down to the tracker's)
    rect_min_agreement: float  # input_shape auto: the least rect-vs-square F1 for rect


WORLD_LIVE = frozenset(p.name for p in WORLD_PARAMS if p.live)


def runtime_config(values: Mapping[str, Any]) -> RuntimeConfig:
    """The settings of a runtime from parameter values (validated here, so raw values are fine)."""
    return _config_of(P.validate_values(values))


def _config_of(v: Mapping[str, Any]) -> RuntimeConfig:
    """:func:`runtime_config` of values :func:`node_params.validate_values` already returned."""
    pipeline = PipelineConfig(**P.pipeline_kwargs(v))
    pipeline.validate()
    tracked = tracked_cameras(v)
    decode = _decode_config(v, bool(tracked))
    world = WorldConfig.from_values(v)  # validated
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
        world=world,
        tracked_cameras=tracked,
        publish_threshold=float(v["score_threshold"]),
        rect_min_agreement=float(v["rect_min_agreement"]),
    )


def camera_geometries(v: Mapping[str, Any]) -> dict[str, CameraGeometry]:
    """The geometry of every camera that has one (none when tracking is off), from validated values."""
    if not v["tracking"]:
        return {}
    found = {cam: geometry_from_values(v, cam) for cam in v["camera_topics"]}
    return {cam: g for cam, g in found.items() if g is not None}


def tracked_cameras(v: Mapping[str, Any]) -> tuple[str, ...]:
    """Cameras with world output: a static geometry, or intrinsics and a pose still to come from the node's
    CameraInfo and tf2 inputs (``camera_info_topic`` / ``tf_frame``)."""
    if not v["tracking"]:
        return ()
    static = camera_geometries(v)

    def dynamic(cam: str) -> bool:
        def has(*fields: str) -> bool:
            return any(v[camera_param(cam, f)] for f in fields)

        return has("camera_info_topic", "camera_matrix") and has("tf_frame", "pose") and (
            has("camera_info_topic") or has("tf_frame"))

    return tuple(c for c in v["camera_topics"] if c in static or dynamic(c))


def _decode_config(v: Mapping[str, Any], tracked: bool, max_detections: int | None = None) -> DecodeConfig:
    """The engine's decode settings: down to ``track_low_score`` when a tracker takes low-score boxes."""
    kw = P.decode_kwargs(v)
    if tracked:
        kw["score_threshold"] = min(float(v["score_threshold"]), float(v["track_low_score"]))
    if max_detections is not None:
        kw["max_detections"] = max_detections
    decode = DecodeConfig(**kw)
    decode.validate()
    return decode


@dataclass
class Runtime:
    """A loaded engine, its pipeline and the diagnostics rules, plus the values they came from."""

    config: RuntimeConfig
    values: dict[str, Any]
    engine: DualModeEngine
    pipeline: Pipeline
    diagnostics: DiagnosticsBuilder
    engine_desc: dict[str, Any] = field(default_factory=dict)
    world: WorldStage | None = None

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
        if P.touches_decode(live) or "track_low_score" in live:
            decode = _decode_config(merged, self.world is not None, self.engine.decode.max_detections)
        world_changes = {k: v for k, v in live.items() if k in WORLD_LIVE}
        if self.world is not None and world_changes:
            replace(self.world.config, **world_changes).validate()
        pipeline_changes = P.pipeline_changes(live)
        if pipeline_changes:
            self.pipeline.update(**pipeline_changes)  # validates; raises before changing anything
        if self.world is not None and world_changes:
            self.world.update(**world_changes)
        if decode is not None:
            self.pipeline.set_decode(decode)
            self.pipeline.publish_threshold = float(merged["score_threshold"])
        self.diagnostics.latency_error_after_s = float(merged["latency_error_after_s"])
        self.diagnostics.degraded_threshold = float(merged["enter_high_threshold"])
        self.values = merged
        return live

    def update_camera_geometry(self, camera: str, changes: Mapping[str, Any]) -> bool:
        """Give ``camera`` the geometry of its parameters with ``changes`` (CameraInfo's k and d, a tf2 pose).

        True when its geometry changed; False when the changes change nothing or still give no
        geometry. Refused (:class:`ConfigError`, nothing changed) when the merged values are invalid.
        """
        if self.world is None or all(self.values.get(k) == v for k, v in changes.items()):
            return False
        merged = P.validate_values({**self.values, **changes})
        geometry = geometry_from_values(merged, camera)
        if geometry is None:
            return False
        self.world.set_geometry(camera, geometry)
        self.values = {**self.values, **{k: merged[k] for k in changes}}
        return True

    def status(self, now_ns: int, active: bool) -> list[StatusRecord]:
        """The diagnostic statuses now (``now_ns`` on the node clock)."""
        out = self.diagnostics.build(self.pipeline.stats(), self.engine_desc, now_s=now_ns / NS_PER_S, active=active)
        if self.world is not None:
            waiting = [c for c in self.config.tracked_cameras if not self.world.has_camera(c)]
            out.append(self.diagnostics.world(self.world.stats(), waiting))
        return out

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
        shape, _ = input_shape_of(engine, cfg)
        if not engine.supports(shape):
            raise ConfigError(
                f"input_shape {shape} needs an engine with dynamic height/width; "
                "this one is fixed: use input_shape square or rebuild with dynamic shapes"
            )
        if warmup_runs:
            engine.warmup(warmup_runs, input_shape=shape)
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
    cfg, throughput = resolve_throughput(cfg, engine)
    if engine is None:
        engine = open_engine(cfg, warmup_runs)
    else:
        _check_reused(engine, cfg)
    shape, why = input_shape_of(engine, cfg)
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, input_shape=shape))  # auto resolved for this engine
    try:
        spec = engine.spec
        target = (lambda h, w: resized_hw((h, w), spec)) if cfg.reduced_decode else None
        world = None
        if cfg.tracked_cameras:
            world = WorldStage(camera_geometries(validated), cfg.world, list(spec.class_names))
        pipeline = Pipeline(engine, cfg.pipeline, clock_ns=clock_ns, steady_ns=steady_ns, decode_target=target,
                            world=world)  # fmt: skip
        pipeline.publish_threshold = cfg.publish_threshold
        for cam in cfg.cameras:
            pipeline.add_camera(cam)
    except BaseException:
        engine.close()
        raise
    diag = DiagnosticsBuilder(prefix=prefix, hardware_id=hardware_id,
                              latency_error_after_s=cfg.latency_error_after_s,
                              degraded_threshold=cfg.degraded_threshold)  # fmt: skip
    desc = {**engine.describe(), "input_shape": shape, "input_shape_reason": why,
            "intra_op_threads": throughput.threads, "batch": throughput.batch, "throughput_reason": throughput.reason}
    return Runtime(cfg, validated, engine, pipeline, diag, desc, world)


def resolve_throughput(cfg: RuntimeConfig, engine: Any = None) -> tuple[RuntimeConfig, ThroughputChoice]:
    """``cfg`` with its threads per call (``ort_intra_op_threads`` 0: measured) and its batch (at most
    ``max_batch``: the best measured rate, the smallest within 2 % of it) from the engine folder's
    ``throughput`` measurement on this machine (:mod:`dpa_perception.core.throughput`); TensorRT runs
    ``max_batch`` (its engines' profile). ``engine``: one already loaded (its threads are fixed)."""
    if cfg.backend != "onnxruntime":
        return cfg, ThroughputChoice(max(1, cfg.ort_intra_op_threads), cfg.max_batch, None,
                                     "tensorrt: max_batch as set (the engines' --max-batch)")
    threads = int(getattr(engine, "intra_op_threads", 0)) if engine is not None else cfg.ort_intra_op_threads
    manifest = getattr(engine, "manifest", None) if engine is not None else Manifest.load(Path(cfg.engine_dir))
    if manifest is None:  # an engine object without a folder's manifest (a test double): the settings as they are
        return cfg, ThroughputChoice(threads or 1, cfg.max_batch, None, "the engine has no manifest: as set")
    shape, _ = _input_shape(manifest, manifest.model.dynamic_hw, cfg)
    choice = choose_throughput(manifest.sections.get("throughput"), shape, MODES, machine_key(), threads,
                               cfg.max_batch)  # fmt: skip
    pipeline = replace(cfg.pipeline, max_batch=choice.batch)
    return replace(cfg, ort_intra_op_threads=choice.threads, max_batch=choice.batch, pipeline=pipeline), choice


def input_shape_of(engine: Any, cfg: RuntimeConfig) -> tuple[str, str]:
    """The input shape policy ``cfg`` runs on ``engine`` (``auto`` resolved from its manifest), and why."""
    return _input_shape(getattr(engine, "manifest", None), bool(getattr(engine, "dynamic_hw", False)), cfg)


def _input_shape(manifest: Manifest | None, dynamic_hw: bool, cfg: RuntimeConfig) -> tuple[str, str]:
    rect = manifest.sections.get("rect") if manifest is not None else None
    return resolve_input_shape(cfg.pipeline.input_shape, dynamic_hw, rect, cfg.rect_min_agreement)


def _check_reused(engine: DualModeEngine, cfg: RuntimeConfig) -> None:
    if Path(engine.engine_dir).resolve() != Path(cfg.engine_dir).resolve() or engine.backend != cfg.backend:
        raise ConfigError(f"the engine given was loaded from {engine.engine_dir} ({engine.backend}), "
                          f"the parameters name {cfg.engine_dir} ({cfg.backend})")
    shape, _ = input_shape_of(engine, cfg)
    if not engine.supports(shape):
        raise ConfigError(f"the engine does not support input_shape {shape!r}")
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
        params = _flatten(_ros_parameters(doc, str(path), node_name))
        unknown = sorted(k for k in params if k not in P.SPECS and k != "use_sim_time" and not P.is_camera_param(k))
        if unknown:
            raise ConfigError(f"{path}: unknown parameter(s) {', '.join(unknown)}")
        merged.update({k: v for k, v in params.items() if k in P.SPECS or P.is_camera_param(k)})
    return merged


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted names, as ROS 2 reads a parameter file (``cameras: {a: {b: 1}}`` -> ``cameras.a.b``)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out

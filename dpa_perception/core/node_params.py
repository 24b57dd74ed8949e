"""The ROS node's parameters as data, and their validation, without ROS.

:data:`PARAMS` is the single table of every parameter (name, type, default, range or choices,
description, live or structural). The node turns it into ``ParameterDescriptor`` objects (structural
parameters read-only, numeric ranges enforced by rclpy itself) and uses :func:`validate_values` at
configure time and :func:`validate_live_update` in its on-set-parameters callback. The same table
is rendered in ``docs/ros.md`` and mirrored by ``config/*.yaml``.
"""

from __future__ import annotations

import array
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.param_spec import (  # noqa: F401  (re-exported: the one place callers look)
    BOOL,
    DOUBLE,
    DOUBLE_ARRAY,
    INT,
    INT_ARRAY,
    STRING,
    STRING_ARRAY,
    TYPES,
    ParamSpec,
    _fmt,
)
from dpa_perception.core.topics import check_topic_name, objects_topic, resolve_output_topics
from dpa_perception.core.types import BACKENDS, INPUT_SHAPE_CHOICES, PRECISION_MODES
from dpa_perception.core.world_params import CAMERA_FIELDS, WORLD_PARAMS, camera_key, camera_specs, field_spec

PLACEMENTS = ("auto", "cpu", "gpu", "dla:0", "dla:1")
INPUT_SHAPES = INPUT_SHAPE_CHOICES
QOS_RELIABILITY = ("best_effort", "reliable", "system_default")
QOS_HISTORY = ("keep_last", "keep_all", "system_default")
MAX_CLASS_ID = 65534  # vision_msgs/VisionClass.class_id is uint16; 65535 means UNLABELED


PARAMS: tuple[ParamSpec, ...] = (
    # ---- engine (structural: loaded at configure)
    ParamSpec("engine_dir", STRING, "",
              "Engine folder written by dpa-build (manifest.json + both variants). Required; never built by the node."),
    ParamSpec("backend", STRING, "onnxruntime", "Inference backend.", choices=BACKENDS),
    ParamSpec("placement_int8", STRING, "auto",
              "Where the INT8 variant runs (auto = cpu for onnxruntime, gpu for tensorrt).", choices=PLACEMENTS),
    ParamSpec("placement_high", STRING, "auto",
              "Where the high-precision variant runs (auto = cpu for onnxruntime, gpu for tensorrt).",
              choices=PLACEMENTS),
    ParamSpec("gpu_fallback", BOOL, True,
              "DLA placements: layers the DLA cannot run fall back to the GPU (must match the built engine)."),
    ParamSpec("ort_intra_op_threads", INT, 0,
              "ONNX Runtime intra-op threads per call; 0 = the count dpa-build measured giving the most frames "
              "per second on this machine (one inference worker per that many cores; 1 when the engine folder "
              "has no measurement for this machine).", min=0, max=256),
    ParamSpec("max_batch", INT, 4,
              "Most frames (one per camera) run in one engine call. With the onnxruntime backend and a dpa-build "
              "throughput measurement for this machine, the batch up to it with the best measured rate (the "
              "smallest within 2 % of it; a batch measured slower is never used); /diagnostics says which.",
              min=1, max=64),
    ParamSpec("max_frame_width", INT, 4096, "Widest frame accepted (px); checked before decoding.", min=16,
              max=65536),
    ParamSpec("max_frame_height", INT, 4096, "Tallest frame accepted (px); checked before decoding.", min=16,
              max=65536),
    ParamSpec("max_frame_pixels", INT, 4096 * 4096,
              "Most pixels per frame accepted; a compressed frame's size is read from its header first, so a "
              "decompression bomb is refused without being inflated.", min=256, max=1 << 30),
    ParamSpec("max_compressed_bytes", INT, 32 << 20, "Largest CompressedImage payload accepted (bytes).",
              min=1024, max=1 << 30),
    ParamSpec("min_frame_side", INT, 16, "Shortest frame side accepted (px): smaller strips cannot be letterboxed.",
              min=1, max=4096),
    ParamSpec("reduced_decode", BOOL, True,
              "Decode a JPEG at the largest libjpeg-turbo reduction (1/2, 1/4, 1/8) that still covers the "
              "detector's letterbox size (full size while the debug image is drawn)."),
    ParamSpec("inference_workers", INT, 0,
              "Threads that run inference batches, each with a batch in flight (a camera never has two frames "
              "in flight); 0 = one per CPU core this process may use divided by ort_intra_op_threads, at "
              "most 4, with the onnxruntime backend (1 with tensorrt).", min=0, max=8),
    ParamSpec("worker_stop_timeout_s", DOUBLE, 5.0,
              "deactivate/cleanup wait this long for the batch being inferred before reporting that the "
              "worker could not stop (it then exits after that batch).", min=0.1, max=600.0),
    ParamSpec("input_shape", STRING, "square",
              "Letterbox canvas: square (model size), rect (smallest stride multiple; needs dynamic H/W), or auto "
              "(rect where dpa-build measured rect agreeing with square at rect_min_agreement or better, and not "
              "slower; else square; the choice and why are on /diagnostics).", choices=INPUT_SHAPES),
    ParamSpec("rect_min_agreement", DOUBLE, 0.95,
              "input_shape auto: the least F1 of rect against square detections (measured by dpa-build on the "
              "build's frames) for rect to be used.", min=0.0, max=1.0),
    # ---- precision governor (live)
    ParamSpec("precision_mode", STRING, "auto",
              "auto: governor picks per frame; int8 / high: force one variant.", live=True,
              choices=PRECISION_MODES),
    ParamSpec("latency_budget_ms", DOUBLE, 85.0,
              "End-to-end budget, capture stamp to publish (ms).", live=True, min=1.0, max=10000.0),
    ParamSpec("safety_margin_ms", DOUBLE, 10.0,
              "Margin kept below the budget when predicting whether a variant fits (ms).", live=True,
              min=0.0, max=1000.0),
    ParamSpec("enter_high_threshold", DOUBLE, 0.5,
              "Visibility degradation at or above which auto mode switches to high precision.", live=True,
              min=0.0, max=1.0),
    ParamSpec("leave_high_threshold", DOUBLE, 0.35,
              "Degradation below which auto mode returns to INT8 (must not exceed enter_high_threshold).",
              live=True, min=0.0, max=1.0),
    ParamSpec("min_dwell_frames", INT, 10, "Frames a precision mode is kept before switching again.",
              live=True, min=0, max=10000),
    ParamSpec("batch_window_ms", DOUBLE, 5.0,
              "Wait up to this long after the first frame is ready for cameras due within it, so they share one "
              "batch (fair service to phase-locked cameras); 0 = never wait.", live=True, min=0.0, max=100.0),
    ParamSpec("budget_fallback", STRING, "shed",
              "When high precision would miss the budget and INT8 is not predicted both to fit and to be faster: "
              "shed the frame (dropped, counted as a miss) or run it in high precision anyway (late).",
              live=True, choices=("shed", "high")),
    ParamSpec("scale_ladder", BOOL, True,
              "auto: when the full-size input would miss the budget (and INT8 is not faster, or does not fit "
              "either), step down to a reduced input scale dpa-build measured (0.8x, 0.64x of the model size; "
              "needs dynamic H/W) before shedding; the frame's reason is budget_scale.", live=True),
    ParamSpec("scale_min_agreement", DOUBLE, 0.9,
              "scale_ladder: the least F1 against full-size square detections (measured by dpa-build on the "
              "build's frames) of a reduced input scale for it to be used.", live=True, min=0.0, max=1.0),
    ParamSpec("visibility_every_n", INT, 3,
              "Estimate visibility on every n-th frame per camera (the others keep its last report): 3 delays a "
              "weather switch by at most 2 frames and saves two thirds of its CPU.", live=True,
              min=1, max=1000),
    ParamSpec("stamp_trust_s", DOUBLE, 10.0,
              "A header stamp further than this from the receiving clock is not a capture time: the frame's "
              "age is counted from its arrival instead (untrusted_stamps on /diagnostics).", live=True,
              min=0.001, max=1e6),
    # ---- decoding (live)
    ParamSpec("score_threshold", DOUBLE, 0.3, "Minimum detection score (also LabelInfo.threshold).",
              live=True, min=0.0, max=1.0),
    ParamSpec("nms_iou", DOUBLE, 0.45, "IoU above which NMS suppresses the lower-scored box.", live=True,
              min=0.01, max=1.0),
    ParamSpec("class_agnostic_nms", BOOL, False, "Run NMS across classes instead of per class.", live=True),
    ParamSpec("class_filter", INT_ARRAY, [],
              "Class ids to keep (empty = all). Omit the key in YAML for all classes.", live=True,
              min=0, max=MAX_CLASS_ID),
    # ---- topics and QoS (structural)
    ParamSpec("camera_topics", STRING_ARRAY, ["/camera/image_raw"],
              "Input image topics; a name ending in /compressed is sensor_msgs/CompressedImage, else Image."),
    ParamSpec("detection_topics", STRING_ARRAY, [],
              "Detection2DArray topic per camera (same order); empty = camera namespace + /detections."),
    ParamSpec("qos_reliability", STRING, "best_effort",
              "Camera subscription reliability (REP-2003 sensor data: best_effort).", choices=QOS_RELIABILITY),
    ParamSpec("qos_history", STRING, "keep_last", "Camera subscription history.", choices=QOS_HISTORY),
    ParamSpec("qos_depth", INT, 1, "Camera subscription depth (keep_last); 1 = newest frame only.", min=1,
              max=100),
    ParamSpec("weather_topic", STRING, "",
              "Optional std_msgs/Float32: meteorological visibility in metres from a road weather station "
              "(NaN or negative = unknown). Empty = not subscribed."),
    ParamSpec("precipitation_topic", STRING, "",
              "Optional std_msgs/Bool: precipitation reported by the weather station. Empty = not subscribed."),
    ParamSpec("publish_debug_image", BOOL, False,
              "Advertise the detections topic + /image (annotated bgr8 Image); drawn only while subscribed."),
    # ---- diagnostics
    ParamSpec("diagnostics_period_s", DOUBLE, 1.0, "Period of /diagnostics (node clock, s).", min=0.05,
              max=60.0),
    ParamSpec("latency_error_after_s", DOUBLE, 5.0,
              "Latency diagnostic turns ERROR once every frame has been over budget for this long (s).",
              live=True,
              min=0.0, max=3600.0),
    # ---- world frame: ground projection and tracking (core/world_params.py)
    *WORLD_PARAMS,
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
LIVE: frozenset[str] = frozenset(p.name for p in PARAMS if p.live)
STRUCTURAL: frozenset[str] = frozenset(p.name for p in PARAMS if not p.live)

# Live parameters and the PipelineConfig field / DecodeConfig field each one maps to.
PIPELINE_FIELDS: dict[str, str] = {
    "precision_mode": "precision_mode",
    "latency_budget_ms": "latency_budget_ms",
    "safety_margin_ms": "safety_margin_ms",
    "enter_high_threshold": "enter_high_threshold",
    "leave_high_threshold": "leave_high_threshold",
    "min_dwell_frames": "min_dwell_frames",
    "budget_fallback": "budget_fallback",
    "scale_ladder": "scale_ladder",
    "scale_min_agreement": "scale_min_agreement",
    "visibility_every_n": "visibility_every_n",
    "stamp_trust_s": "stamp_trust_s",
    "batch_window_ms": "batch_window_ms",
}
DECODE_FIELDS: dict[str, str] = {
    "score_threshold": "score_threshold",
    "nms_iou": "nms_iou",
    "class_agnostic_nms": "class_agnostic",
    "class_filter": "class_filter",
}


def default(name: str) -> Any:
    """The default of one parameter (the one source of defaults for the config dataclasses and CLIs)."""
    d = SPECS[name].default
    return list(d) if isinstance(d, list) else d


def check_fields(obj: Any, names: Sequence[str] | None = None) -> None:
    """Every attribute of ``obj`` named like a parameter (or those in ``names``) is checked against
    the table (type, range, choices; strings exactly as the table spells them) and the
    cross-parameter rules that apply."""
    present = {name: getattr(obj, name) for name in (names or SPECS) if hasattr(obj, name)}
    for name, value in present.items():
        spec = SPECS[name]
        if coerce(spec, value) != value or (spec.type == INT and isinstance(value, float)):
            raise ConfigError(f"{name} must be one of {', '.join(spec.choices)}, not {value!r}"
                              if spec.choices else f"{name} {value!r} is not a valid {spec.type}")
    if all(k in present for k in ("leave_high_threshold", "enter_high_threshold", "safety_margin_ms",
                                  "latency_budget_ms")):
        _check_live_cross(present)


def defaults() -> dict[str, Any]:
    """Every parameter at its default (lists copied)."""
    return {p.name: list(p.default) if isinstance(p.default, list) else p.default for p in PARAMS}


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, array.array)):
        return list(value)
    raise ConfigError(f"{name} must be a list, got {type(value).__name__} {value!r}")


def coerce(spec: ParamSpec, value: Any) -> Any:
    """``value`` converted to the parameter's Python type and checked, or :class:`ConfigError`.

    Accepts what rclpy hands over (``array.array`` for numeric arrays, any empty list for an empty
    array, ints for doubles) and checks the range or choices.
    """
    n = spec.name
    if spec.type == BOOL:
        if not isinstance(value, bool):
            raise ConfigError(f"{n} must be true or false, got {value!r}")
        return value
    if spec.type == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{n} must be an integer, got {value!r}")
        _check_range(spec, value)
        return int(value)
    if spec.type == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{n} must be a finite number, got {value!r}")
        _check_range(spec, float(value))
        return float(value)
    if spec.type == STRING:
        if not isinstance(value, str):
            raise ConfigError(f"{n} must be a string, got {value!r}")
        value = value.strip()
        if spec.choices and value.lower() not in spec.choices:
            raise ConfigError(f"{n} must be one of {', '.join(spec.choices)}, got {value!r}")
        return value.lower() if spec.choices else value
    return _coerce_array(spec, value)


def _coerce_array(spec: ParamSpec, value: Any) -> list[Any]:
    n = spec.name
    items = _as_list(n, value)
    if spec.type == INT_ARRAY:
        if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
            raise ConfigError(f"{n} must be a list of integers, got {items!r}")
        for v in items:
            _check_range(spec, v)
        return [int(v) for v in items]
    if spec.type == STRING_ARRAY:
        if any(not isinstance(v, str) for v in items):
            raise ConfigError(f"{n} must be a list of strings, got {items!r}")
        return [v.strip() for v in items]
    if spec.type == DOUBLE_ARRAY:
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in items):
            raise ConfigError(f"{n} must be a list of finite numbers, got {items!r}")
        for v in items:
            _check_range(spec, v)
        return [float(v) for v in items]
    raise AssertionError(spec.type)


def _check_range(spec: ParamSpec, v: float) -> None:
    if spec.min is not None and spec.max is not None and not spec.min <= v <= spec.max:
        raise ConfigError(f"{spec.name} {v!r} is outside [{_fmt(spec.min, spec.type)}, {_fmt(spec.max, spec.type)}]")


def _camera_values(camera_topics: Sequence[str], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The per-camera geometry parameters of these cameras (defaults filled in), checked.

    A ``cameras.<key>.*`` value for a key no camera topic has is refused (a typo would leave a camera
    without its geometry), as are two camera topics with the same key.
    """
    keys: dict[str, str] = {}
    for topic in camera_topics:
        key = camera_key(topic)
        if key in keys:
            raise ConfigError(f"camera topics {keys[key]!r} and {topic!r} share the geometry key cameras.{key}; "
                              "give the cameras distinct namespaces")
        keys[key] = topic
    out: dict[str, Any] = {}
    for spec in camera_specs(camera_topics):
        out[spec.name] = coerce(spec, raw[spec.name]) if spec.name in raw else default_of(spec)
    for name in raw:
        if field_spec(name) is not None and name not in out:
            raise ConfigError(f"{name}: no camera in camera_topics has the key {name.split('.')[1]!r} "
                              f"(keys: {', '.join(sorted(keys))})")
    return out


def is_camera_param(name: str) -> bool:
    """Whether ``name`` is a per-camera geometry parameter name (``cameras.<key>.<field>``)."""
    return field_spec(name) is not None


def default_of(spec: ParamSpec) -> Any:
    return list(spec.default) if isinstance(spec.default, list) else spec.default


def _check_live_cross(values: Mapping[str, Any]) -> None:
    if values.get("track_low_score", 0.0) > values.get("track_high_score", 1.0):
        raise ConfigError(f"track_low_score ({values['track_low_score']}) must not exceed track_high_score "
                          f"({values['track_high_score']})")
    if values["leave_high_threshold"] > values["enter_high_threshold"]:
        raise ConfigError(
            f"leave_high_threshold ({values['leave_high_threshold']}) must not exceed enter_high_threshold "
            f"({values['enter_high_threshold']}): hysteresis"
        )
    if values["safety_margin_ms"] >= values["latency_budget_ms"]:
        raise ConfigError(
            f"safety_margin_ms ({values['safety_margin_ms']}) must be below latency_budget_ms "
            f"({values['latency_budget_ms']})"
        )


def resolved_placement(values: Mapping[str, Any], variant: str) -> str:
    """The placement of ``variant`` ("int8" or "high") with ``auto`` resolved for the backend."""
    p = values[f"placement_{variant}"]
    if p == "auto":
        return "cpu" if values["backend"] == "onnxruntime" else "gpu"
    return str(p)


def validate_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """All parameters checked (types, ranges, choices, cross-parameter rules); normalised values.

    Missing names take their defaults; unknown names are ignored (ROS adds ``use_sim_time``...).
    Raises :class:`ConfigError` naming the first offending parameter.
    """
    values = defaults()
    for name, value in raw.items():
        if name in SPECS:
            values[name] = coerce(SPECS[name], value)
    if not values["engine_dir"]:
        raise ConfigError("engine_dir is empty: point it at an engine folder built with dpa-build")
    for variant in ("int8", "high"):
        place = resolved_placement(values, variant)
        if values["backend"] == "onnxruntime" and place != "cpu":
            raise ConfigError(f"placement_{variant} {place} needs backend tensorrt (onnxruntime runs on the cpu)")
        if values["backend"] == "tensorrt" and place == "cpu":
            raise ConfigError(f"placement_{variant} cpu needs backend onnxruntime (tensorrt runs on gpu or dla)")
    _check_live_cross(values)
    values["detection_topics"] = resolve_output_topics(values["camera_topics"], values["detection_topics"])
    values.update(_camera_values(values["camera_topics"], raw))
    clash = sorted(set(map(objects_topic, values["camera_topics"])) & set(values["detection_topics"]))
    if values["tracking"] and clash:
        raise ConfigError(f"detection topic(s) {', '.join(clash)} would also carry a camera's world objects; "
                          "choose other detection_topics")
    if values["reference_point"] and len(values["reference_point"]) != 3:
        raise ConfigError(f"reference_point must be [latitude, longitude, altitude], got {values['reference_point']}")
    for name in ("weather_topic", "precipitation_topic"):
        if values[name]:
            check_topic_name(values[name], name)
    return values


def validate_live_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The live parameters in ``changes`` checked against ``current``; returns them normalised.

    Structural parameters are refused (the node declares them read-only, so rclpy refuses them first);
    cross-parameter rules are checked on the merged values. Raises :class:`ConfigError` with the reason.
    """
    out: dict[str, Any] = {}
    for name, value in changes.items():
        spec = SPECS.get(name)
        if spec is None:
            continue
        if not spec.live:
            raise ConfigError(f"{name} is structural (read-only); it takes effect only at node start")
        out[name] = coerce(spec, value)
    merged = {**defaults(), **{k: v for k, v in current.items() if k in SPECS}, **out}
    _check_live_cross(merged)
    return out


# Structural parameters that are PipelineConfig fields of the same name.
PIPELINE_STRUCTURAL = ("max_batch", "input_shape", "max_frame_width", "max_frame_height", "max_frame_pixels",
                       "max_compressed_bytes", "min_frame_side", "worker_stop_timeout_s", "inference_workers")  # fmt: skip


def pipeline_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``PipelineConfig`` from validated values."""
    kw = {field: values[name] for name, field in PIPELINE_FIELDS.items()}
    kw.update({name: values[name] for name in PIPELINE_STRUCTURAL})
    return kw


def pipeline_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of validated live changes that goes to ``Pipeline.update``."""
    return {PIPELINE_FIELDS[k]: v for k, v in changes.items() if k in PIPELINE_FIELDS}


def decode_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``DecodeConfig`` from (validated) values."""
    kw: dict[str, Any] = {field: values[name] for name, field in DECODE_FIELDS.items()}
    kw["class_filter"] = frozenset(int(c) for c in values["class_filter"])
    return kw


def touches_decode(changes: Mapping[str, Any]) -> bool:
    return any(k in DECODE_FIELDS for k in changes)


def table_markdown(specs: Sequence[ParamSpec] = PARAMS) -> str:
    """The parameter table as Markdown (kept in docs/ros.md; a test checks it is current)."""
    rows = ["| name | type | default | range / choices | live | description |", "|---|---|---|---|---|---|"]
    for p in specs:
        default = repr(p.default) if p.type in (STRING, STRING_ARRAY, INT_ARRAY, DOUBLE_ARRAY) else str(p.default).lower()
        rows.append(
            f"| `{p.name}` | {p.type} | `{default}` | {p.range_text} | {'live' if p.live else 'structural'} "
            f"| {p.description} |"
        )
    return "\n".join(rows)


def camera_table_markdown() -> str:
    """The per-camera geometry parameters (``cameras.<key>.<field>``) as Markdown, for docs/ros.md."""
    return table_markdown(tuple(ParamSpec(f"cameras.<key>.{f.name}", f.type, f.default, f.description, f.live, f.min,
                                          f.max, f.choices) for f in CAMERA_FIELDS))  # fmt: skip

"""The node's parameter table and validation, the QoS strings and the shipped YAML files (no ROS)."""

from __future__ import annotations

import array
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.ros.qos import qos_settings

REPO = Path(__file__).resolve().parents[1]

REQUIRED = {
    "engine_dir", "backend", "placement_int8", "placement_high", "gpu_fallback", "precision_mode",
    "latency_budget_ms", "safety_margin_ms", "enter_high_threshold", "leave_high_threshold",
    "min_dwell_frames", "score_threshold", "nms_iou", "class_agnostic_nms", "class_filter", "max_batch",
    "input_shape", "camera_topics", "detection_topics", "qos_reliability", "qos_history", "qos_depth",
    "weather_topic", "ort_intra_op_threads", "diagnostics_period_s", "latency_error_after_s",
    "publish_debug_image",
}  # fmt: skip
LIVE = {
    "precision_mode", "latency_budget_ms", "safety_margin_ms", "enter_high_threshold", "leave_high_threshold",
    "min_dwell_frames", "visibility_every_n", "score_threshold", "nms_iou", "class_agnostic_nms",
    "class_filter", "latency_error_after_s", "stamp_trust_s", "batch_window_ms", "budget_fallback",
    "scale_ladder", "scale_min_agreement", "pixel_sigma_px", "max_range_m", "track_high_score", "track_low_score",
    "track_gate_m", "track_confirm_hits",
    "track_max_age_s", "track_accel_sigma",
}  # fmt: skip


def ok_values(**over: Any) -> dict[str, Any]:
    return {"engine_dir": "/engines/yolox_nano", **over}


def test_table_is_complete_and_consistent() -> None:
    names = [p.name for p in P.PARAMS]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)
    assert P.LIVE == LIVE
    for p in P.PARAMS:
        assert p.type in P.TYPES
        assert p.description.strip()
        if p.type in (P.DOUBLE, P.INT):
            assert p.min is not None and p.max is not None and p.min <= p.default <= p.max, p.name
        if p.type == P.DOUBLE:
            assert isinstance(p.default, float), f"{p.name}: rclpy would type an int default as INTEGER"
        if p.choices:
            assert p.default in p.choices
        assert P.coerce(p, p.default) == p.default
    assert P.SPECS["latency_budget_ms"].default == 85.0
    assert P.SPECS["qos_reliability"].default == "best_effort"
    assert P.SPECS["qos_depth"].default == 1
    assert P.SPECS["publish_debug_image"].default is False
    assert P.SPECS["diagnostics_period_s"].default == 1.0
    # exactly the empty-list defaults are declared with dynamic typing (rclpy's [] -> BYTE_ARRAY trap)
    assert {p.name for p in P.PARAMS if p.empty_array_default} == {"class_filter", "detection_topics",
                                                                   "reference_point"}  # fmt: skip


def test_camera_geometry_parameters_follow_the_camera_topics() -> None:
    cams = ["/rsu/cam0/image_raw/compressed", "/rsu/cam1/image_raw"]
    h = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    v = P.validate_values(ok_values(camera_topics=cams, **{"cameras.rsu_cam1.homography": h}))
    assert v["cameras.rsu_cam1.homography"] == h
    assert v["cameras.rsu_cam0.homography"] == [] and v["cameras.rsu_cam0.ground_z"] == 0.0
    with pytest.raises(ConfigError, match="cameras.rsu_cam7.homography: no camera in camera_topics"):
        P.validate_values(ok_values(camera_topics=cams, **{"cameras.rsu_cam7.homography": h}))
    with pytest.raises(ConfigError, match="list of finite numbers"):
        P.validate_values(ok_values(camera_topics=cams, **{"cameras.rsu_cam0.roi": [1.0, "a"]}))
    with pytest.raises(ConfigError, match="share the geometry key"):
        P.validate_values(ok_values(camera_topics=["/a/cam/image_raw", "/a/cam/image_raw/compressed"],
                                    detection_topics=["/x", "/y"]))
    with pytest.raises(ConfigError, match="track_low_score"):
        P.validate_values(ok_values(track_low_score=0.6, track_high_score=0.5))
    with pytest.raises(ConfigError, match="reference_point"):
        P.validate_values(ok_values(reference_point=[48.1, 11.5]))


def test_defaults_with_an_engine_dir_validate() -> None:
    v = P.validate_values(ok_values())
    assert v["detection_topics"] == ["/camera/detections"]
    assert P.resolved_placement(v, "int8") == "cpu"
    assert P.resolved_placement({**v, "backend": "tensorrt"}, "high") == "gpu"


def test_values_from_rclpy_shapes_are_accepted() -> None:
    v = P.validate_values(
        ok_values(
            class_filter=array.array("q", [2, 7]),  # INTEGER_ARRAY values arrive as array('q')
            detection_topics=[],
            camera_topics=["/rsu/cam0/image_raw", "/rsu/cam1/image_raw/compressed"],
            precision_mode="INT8",
            use_sim_time=True,  # not ours: ignored
        )
    )
    assert v["class_filter"] == [2, 7]
    assert v["precision_mode"] == "int8"
    assert v["detection_topics"] == ["/rsu/cam0/detections", "/rsu/cam1/detections"]
    assert P.validate_values(ok_values(class_filter=[]))["class_filter"] == []


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"engine_dir": ""}, "engine_dir is empty"),
        ({"backend": "openvino"}, "backend must be one of"),
        ({"placement_int8": "gpu"}, "needs backend tensorrt"),
        ({"backend": "tensorrt", "placement_high": "cpu"}, "needs backend onnxruntime"),
        ({"placement_high": "dla:2"}, "placement_high must be one of"),
        ({"leave_high_threshold": 0.6}, "must not exceed enter_high_threshold"),
        ({"safety_margin_ms": 90.0}, "must be below latency_budget_ms"),
        ({"latency_budget_ms": 0.5}, r"latency_budget_ms 0.5 is outside \[1.0, 10000.0\]"),
        ({"latency_budget_ms": float("nan")}, "finite"),
        ({"max_batch": 0}, "max_batch 0 is outside"),
        ({"max_batch": True}, "must be an integer"),
        ({"max_batch": 2.0}, "must be an integer"),
        ({"gpu_fallback": 1}, "true or false"),
        ({"class_filter": ["car"]}, "list of integers"),
        ({"class_filter": [70000]}, "outside"),
        ({"class_filter": "2"}, "must be a list"),
        ({"camera_topics": []}, "camera_topics is empty"),
        ({"camera_topics": [1]}, "list of strings"),
        ({"detection_topics": ["/a", "/b"]}, "detection_topics has 2 entries"),
        ({"qos_history": "keep_some"}, "qos_history must be one of"),
        ({"qos_depth": 0}, "qos_depth 0 is outside"),
        ({"input_shape": "wide"}, "input_shape must be one of"),
        ({"weather_topic": "/weather/vis m"}, "not a valid"),
        ({"diagnostics_period_s": 0.0}, "outside"),
    ],
)
def test_invalid_values_are_refused_with_the_parameter_named(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        P.validate_values(ok_values(**over))


def test_ints_are_accepted_for_doubles_in_python() -> None:
    assert P.validate_values(ok_values(latency_budget_ms=100))["latency_budget_ms"] == 100.0


def test_live_update_validates_against_current_values() -> None:
    cur = P.validate_values(ok_values())
    assert P.validate_live_update(cur, {"latency_budget_ms": 120}) == {"latency_budget_ms": 120.0}
    assert P.validate_live_update(cur, {"use_sim_time": True}) == {}
    with pytest.raises(ConfigError, match="outside"):
        P.validate_live_update(cur, {"latency_budget_ms": 50000.0})
    with pytest.raises(ConfigError, match="structural"):
        P.validate_live_update(cur, {"max_batch": 2})
    with pytest.raises(ConfigError, match="must not exceed enter_high_threshold"):
        P.validate_live_update(cur, {"enter_high_threshold": 0.3})
    assert P.validate_live_update(cur, {"leave_high_threshold": 0.5}) == {"leave_high_threshold": 0.5}
    # both ends of the hysteresis moved together is fine
    both = P.validate_live_update(cur, {"enter_high_threshold": 0.3, "leave_high_threshold": 0.2})
    assert both == {"enter_high_threshold": 0.3, "leave_high_threshold": 0.2}
    with pytest.raises(ConfigError, match="safety_margin_ms"):
        P.validate_live_update(cur, {"latency_budget_ms": 5.0})


def test_pipeline_and_decode_mappings() -> None:
    v = P.validate_values(ok_values(class_filter=[2, 7], class_agnostic_nms=True, score_threshold=0.4))
    dec = DecodeConfig(**P.decode_kwargs(v))
    dec.validate()
    assert dec.class_filter == frozenset({2, 7}) and dec.class_agnostic and dec.score_threshold == 0.4
    assert P.touches_decode({"nms_iou": 0.5}) and not P.touches_decode({"latency_budget_ms": 90.0})
    kw = P.pipeline_kwargs(v)
    assert kw["latency_budget_ms"] == 85.0 and kw["max_batch"] == 4 and kw["input_shape"] == "square"
    assert P.pipeline_changes({"latency_budget_ms": 90.0, "nms_iou": 0.5}) == {"latency_budget_ms": 90.0}


def test_pipeline_kwargs_match_the_pipeline_config() -> None:
    from dpa_perception.core import pipeline  # a broken package import fails here, never skips
    fields = {f.name for f in dataclasses.fields(pipeline.PipelineConfig)}
    kw = P.pipeline_kwargs(P.validate_values(ok_values()))
    assert set(kw) <= fields
    cfg = pipeline.PipelineConfig(**kw)
    cfg.validate()
    assert set(P.PIPELINE_FIELDS.values()) <= fields


def test_qos_strings() -> None:
    assert qos_settings("BEST_EFFORT", "keep_last", 1) == ("best_effort", "keep_last", 1)
    assert qos_settings("reliable", "keep_all", 5) == ("reliable", "keep_all", 5)
    for args, needle in [(("fast", "keep_last", 1), "qos_reliability"), (("reliable", "last", 1), "qos_history"),
                         (("reliable", "keep_last", 0), "qos_depth")]:  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            qos_settings(*args)


@pytest.mark.parametrize("name", ["rsu_cpu.yaml", "jetson_orin.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    doc = yaml.safe_load((REPO / "config" / name).read_text())
    assert list(doc) == ["/**"], "applies to the node whatever its name/namespace"
    params = doc["/**"]["ros__parameters"]
    unknown = set(params) - set(P.SPECS)
    assert not unknown, f"unknown parameters {unknown}"
    for key, value in params.items():
        spec = P.SPECS[key]
        if spec.type == P.DOUBLE:
            assert isinstance(value, float), f"{key}: write {value}.0, rclpy refuses an int for a double"
        if isinstance(value, list):
            assert value, f"{key}: an empty YAML list has no type in rclpy; omit the key"
    v = P.validate_values(params)
    if name == "jetson_orin.yaml":
        assert v["backend"] == "tensorrt" and v["placement_int8"] == "dla:0" and v["placement_high"] == "gpu"
        assert v["gpu_fallback"] is True
    else:
        assert v["backend"] == "onnxruntime"
    # every parameter is documented in the file, commented out or not
    text = (REPO / "config" / name).read_text()
    for p in P.PARAMS:
        assert p.name in text, f"{name} does not mention {p.name}"


def test_docs_table_is_current() -> None:
    doc = (REPO / "docs" / "ros.md").read_text()
    assert P.table_markdown() in doc, "regenerate the table in docs/ros.md from node_params.table_markdown()"
    assert P.camera_table_markdown() in doc, "regenerate the camera table in docs/ros.md (camera_table_markdown)"

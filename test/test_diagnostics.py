"""Diagnostic statuses from pipeline statistics (core/diagnostics.py): names, keys, levels, messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fakes import TimedEngine

from dpa_perception.core.diagnostics import ERROR, OK, WARN, DiagnosticsBuilder, fmt

# ---------------------------------------------------------------- diagnostics levels


def stats(**over: Any) -> dict[str, Any]:
    cam = {"state": "active", "input_rate_hz": 10.0, "stamp_age_ms": 30.0, "received": 50, "processed": 48,
           "dropped": 2, "deadline_misses": 0, "input_errors": 0, "last_error": ""}  # fmt: skip
    s: dict[str, Any] = {
        "cameras": {"/rsu/cam0/image_raw": dict(cam), "/rsu/cam1/image_raw/compressed": dict(cam)},
        "precision": {"mode": "int8", "reason": "clear, fits budget", "setting": "auto",
                      "frames_per_mode": {"int8": 40, "high": 8}, "switches": 2},
        "latency": {"e2e_ms": {"p50": 40.0, "p95": 60.0, "p99": 70.0},
                    "stages_ms": {"queue_wait": 2.0, "decode": 4.0, "preprocess": 3.0, "inference": 25.0,
                                  "postprocess": 1.0},
                    "budget_ms": 85.0, "over_budget": 1, "misses": 1, "over_budget_for_s": None},
        "visibility": {"degradation": 0.1, "label": "clear",
                       "scores": {"fog": 0.1, "low_light": 0.0, "glare": 0.0, "blur": 0.05, "blockage": 0.0},
                       "external_age_s": None},
    }  # fmt: skip
    for k, v in over.items():
        s[k] = v
    return s


ENGINE = {"backend": "onnxruntime", "model_sha256": "ab" * 32, "family": "yolox", "input_hw": [416, 416],
          "variants": {"int8": {"backend": "onnxruntime", "placement": "cpu", "file": "int8.onnx"},
                       "high": {"backend": "onnxruntime", "placement": "cpu", "file": "high.onnx"}}}  # fmt: skip


def by_name(records: list[Any]) -> dict[str, Any]:
    return {r.name: r for r in records}


def test_healthy_node_reports_ok_with_stable_names_and_keys() -> None:
    b = DiagnosticsBuilder(hardware_id="/dpa_perception")
    recs = by_name(b.build(stats(), ENGINE, now_s=100.0, active=True))
    assert set(recs) == {
        "dpa_perception: camera /rsu/cam0/image_raw",
        "dpa_perception: camera /rsu/cam1/image_raw/compressed",
        "dpa_perception: engine",
        "dpa_perception: precision",
        "dpa_perception: latency",
        "dpa_perception: visibility",
    }
    assert all(r.level == OK for r in recs.values()), {n: r.message for n, r in recs.items() if r.level}
    assert all(r.hardware_id == "/dpa_perception" for r in recs.values())
    cam = recs["dpa_perception: camera /rsu/cam0/image_raw"]
    assert [k for k, _ in cam.values] == ["topic", "state", "input_rate_hz", "source_rate_hz", "estimated_loss_pct",
                                          "stamp_age_ms", "received", "processed", "dropped", "deadline_misses",
                                          "input_errors", "future_stamps", "untrusted_stamps", "last_error"]  # fmt: skip
    assert cam.value("input_rate_hz") == "10.0" and cam.value("dropped") == "2"
    eng = recs["dpa_perception: engine"]
    assert eng.value("placement_int8") == "cpu" and eng.value("model_sha256") == "ab" * 32
    assert eng.value("backend") == "onnxruntime"
    prec = recs["dpa_perception: precision"]
    assert (prec.value("mode"), prec.value("frames_int8"), prec.value("frames_high"), prec.value("switches")) == (
        "int8", "40", "8", "2")  # fmt: skip
    lat = recs["dpa_perception: latency"]
    assert lat.value("e2e_p95_ms") == "60.0" and lat.value("budget_ms") == "85.0"
    assert lat.value("stage_inference_p50_ms") == "25.0"
    vis = recs["dpa_perception: visibility"]
    assert vis.value("label") == "clear" and vis.value("score_fog") == "0.10"
    assert vis.value("external_age_s") == "n/a"
    for r in recs.values():  # KeyValue.value must be a str
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in r.values)


def test_camera_levels_name_the_camera_and_the_error() -> None:
    b = DiagnosticsBuilder()
    s = stats()
    s["cameras"]["/rsu/cam0/image_raw"].update(
        state="rejecting", input_errors=3, last_error="step 10 is smaller than width*channels = 2880 for bgr8"
    )
    s["cameras"]["/rsu/cam1/image_raw/compressed"].update(state="stale", stamp_age_ms=2500.0)
    recs = by_name(b.build(s, ENGINE, now_s=0.0, active=True))
    bad = recs["dpa_perception: camera /rsu/cam0/image_raw"]
    assert bad.level == ERROR and "step 10 is smaller" in bad.message
    assert bad.value("last_error") and "step 10" in bad.value("last_error")
    stale = recs["dpa_perception: camera /rsu/cam1/image_raw/compressed"]
    assert stale.level == WARN and "2500" in stale.message


def test_new_input_errors_warn_once_then_clear() -> None:
    b = DiagnosticsBuilder()
    s = stats()
    s["cameras"]["/rsu/cam0/image_raw"].update(input_errors=1, last_error="truncated JPEG (no end-of-image marker)")
    first = by_name(b.build(s, ENGINE, now_s=0.0, active=True))["dpa_perception: camera /rsu/cam0/image_raw"]
    assert first.level == WARN and "truncated JPEG" in first.message
    again = by_name(b.build(s, ENGINE, now_s=1.0, active=True))["dpa_perception: camera /rsu/cam0/image_raw"]
    assert again.level == OK  # no new error since the last report, frames flowing


def test_waiting_and_inactive_cameras() -> None:
    b = DiagnosticsBuilder()
    s = stats()
    s["cameras"]["/rsu/cam0/image_raw"].update(state="waiting", input_rate_hz=0.0, stamp_age_ms=None)
    active = by_name(b.build(s, ENGINE, now_s=0.0, active=True))["dpa_perception: camera /rsu/cam0/image_raw"]
    assert active.level == WARN and "waiting" in active.message
    assert active.value("stamp_age_ms") == "n/a"
    inactive = by_name(b.build(s, ENGINE, now_s=0.0, active=False))["dpa_perception: camera /rsu/cam0/image_raw"]
    assert inactive.level == OK and "inactive" in inactive.message


def test_latency_warn_then_error_after_sustained_overrun() -> None:
    b = DiagnosticsBuilder(latency_error_after_s=5.0)
    lat = dict(stats()["latency"])
    lat["e2e_ms"] = {"p50": 80.0, "p95": 95.0, "p99": 120.0}
    lat["over_budget_for_s"] = 2.0
    r = by_name(b.build(stats(latency=lat), ENGINE, now_s=100.0, active=True))["dpa_perception: latency"]
    assert r.level == WARN and "p95 over budget" in r.message and r.value("over_budget_for_s") == "2.0"
    lat["over_budget_for_s"] = 5.5
    r = by_name(b.build(stats(latency=lat), ENGINE, now_s=103.5, active=True))["dpa_perception: latency"]
    assert r.level == ERROR and "over budget for 5.5 s" in r.message
    # the older contract (a start time on the pipeline clock) gives the same answer
    del lat["over_budget_for_s"]
    lat["over_budget_since_s"] = 98.0
    r = by_name(b.build(stats(latency=lat), ENGINE, now_s=103.5, active=True))["dpa_perception: latency"]
    assert r.level == ERROR and "over budget for 5.5 s" in r.message
    lat["e2e_ms"] = {"p50": None, "p95": None, "p99": None}
    lat["over_budget_since_s"] = None
    r = by_name(b.build(stats(latency=lat), ENGINE, now_s=0.0, active=True))["dpa_perception: latency"]
    assert r.level == OK and r.message == "no frame processed yet" and r.value("e2e_p50_ms") == "n/a"


def test_builder_reads_real_pipeline_stats(testdata: Path) -> None:
    """The diagnostics follow the real Pipeline.stats() shape (names, states, levels)."""
    from dpa_perception.core.pipeline import Pipeline, PipelineConfig

    now = [1_000 * 10**9]
    engine = TimedEngine(now)
    pipe = Pipeline(engine, PipelineConfig(latency_budget_ms=85.0), clock_ns=lambda: now[0])
    cams = ["/rsu/cam0/image_raw", "/rsu/cam1/image_raw/compressed"]
    for c in cams:
        pipe.add_camera(c)
    b = DiagnosticsBuilder(latency_error_after_s=5.0)
    first = by_name(b.build(pipe.stats(), ENGINE, now_s=now[0] / 1e9, active=True))
    assert first[f"dpa_perception: camera {cams[0]}"].level == WARN  # waiting for the first frame
    assert first["dpa_perception: latency"].message == "no frame processed yet"
    assert first["dpa_perception: precision"].level == OK

    frame = np.asarray(cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg")), np.uint8)
    for _ in range(3):
        for c in cams:
            pipe.submit(c, frame, now[0] - 20 * 10**6, meta="hdr")
        results = pipe.step()
        assert all(r.status == "processed" for r in results) and len(results) == 2
        now[0] += 100 * 10**6
    pipe.report_input_error(cams[0], "step 10 is smaller than width*channels = 2880 for bgr8")
    recs = by_name(b.build(pipe.stats(), ENGINE, now_s=now[0] / 1e9, active=True))
    bad, good = recs[f"dpa_perception: camera {cams[0]}"], recs[f"dpa_perception: camera {cams[1]}"]
    assert bad.level == ERROR and "step 10" in bad.message and bad.value("state") == "rejecting"
    assert good.level == OK and good.value("processed") == "3", good.message
    lat = recs["dpa_perception: latency"]
    assert lat.level == OK and lat.value("e2e_p95_ms") != "n/a" and lat.value("budget_ms") == "85.0"
    assert recs["dpa_perception: precision"].value("frames_int8") != "n/a"
    assert recs["dpa_perception: visibility"].value("label") not in (None, "n/a")

    # every frame over budget (20 ms old + 100 ms inference) for longer than latency_error_after_s: ERROR
    engine.infer_ms = 100.0
    for i in range(8):
        pipe.submit(cams[1], frame, now[0] - 20 * 10**6, meta="hdr")
        assert pipe.step()[0].status == "processed"
        if i == 1:
            lat = by_name(b.build(pipe.stats(), ENGINE, now_s=now[0] / 1e9, active=True))["dpa_perception: latency"]
            assert lat.level == WARN, lat.message  # p95 over budget, not yet for long
        now[0] += 10**9
    lat = by_name(b.build(pipe.stats(), ENGINE, now_s=now[0] / 1e9, active=True))["dpa_perception: latency"]
    assert lat.level == ERROR, lat.message


def test_visibility_and_precision_messages() -> None:
    b = DiagnosticsBuilder(degraded_threshold=0.5)
    vis = dict(stats()["visibility"], degradation=0.72, label="fog", external_age_s=12.25)
    recs = by_name(b.build(stats(visibility=vis), ENGINE, now_s=0.0, active=True))
    v = recs["dpa_perception: visibility"]
    assert v.level == WARN and "fog" in v.message and v.value("external_age_s") == "12.2"
    assert recs["dpa_perception: precision"].message == "int8 (clear, fits budget)"
    empty = by_name(b.build({}, None, now_s=0.0, active=False))
    assert set(empty) == {"dpa_perception: precision", "dpa_perception: latency", "dpa_perception: visibility"}
    assert all(r.level == OK for r in empty.values())


def test_prefix_follows_the_node_name_and_fmt() -> None:
    recs = DiagnosticsBuilder(prefix="det_east").build(stats(), ENGINE, now_s=0.0, active=True)
    assert all(r.name.startswith("det_east: ") for r in recs)
    assert fmt(None) == "n/a" and fmt(float("inf")) == "n/a" and fmt(True) == "true" and fmt(3) == "3"
    assert fmt(2.345, 2) == "2.35" or fmt(2.345, 2) == "2.34"


def test_engine_status_warns_after_worker_errors() -> None:
    engine = {"backend": "onnxruntime", "model_sha256": "ab" * 32, "variants": {"int8": {"placement": "cpu"},
                                                                              "high": {"placement": "cpu"}}}
    b = DiagnosticsBuilder()
    ok = b.engine(engine, {"errors": 0, "last_error": ""})
    assert ok.level == OK and ok.value("worker_errors") == "0"
    bad = b.engine(engine, {"errors": 2, "last_error": "ValueError: boom"})
    assert bad.level == WARN and "boom" in bad.message and bad.value("last_worker_error") == "ValueError: boom"

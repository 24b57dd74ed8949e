"""Diagnostic statuses from pipeline statistics, without ROS.

:class:`DiagnosticsBuilder` turns ``Pipeline.stats()`` and ``DualModeEngine.describe()`` into a list
of :class:`StatusRecord` (name, level, message, key/values); the node copies them into a
``diagnostic_msgs/DiagnosticArray`` stamped with the node clock (correct under ``use_sim_time``;
diagnostic_updater's frequency/stamp tasks use a detached clock, see docs/ros.md). Nothing here
imports rclpy, so the level rules are unit-tested everywhere.

Stable names (``<prefix>`` is the node name, ``dpa_perception`` by default)::

    <prefix>: camera <topic>   input rate, stamp age, drops, state, last input error
    <prefix>: engine           backend, placement per variant, model sha256
    <prefix>: precision        mode, reason, frames per mode, switches
    <prefix>: latency          e2e p50/p95/p99, per-stage p50, budget, misses
    <prefix>: visibility       per-condition scores, label, external report age
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dpa_perception.core.stats import PipelineStats

# diagnostic_msgs/DiagnosticStatus levels (the message stores them as one byte: bytes([level])).
OK = 0
WARN = 1
ERROR = 2
STALE = 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}

CAMERA_KEYS = (
    "topic", "state", "input_rate_hz", "source_rate_hz", "estimated_loss_pct", "stamp_age_ms", "received",
    "processed", "dropped", "deadline_misses", "input_errors", "future_stamps", "untrusted_stamps", "last_error",
)  # fmt: skip


@dataclass
class StatusRecord:
    """One diagnostic_msgs/DiagnosticStatus, ROS-free."""

    name: str
    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)
    hardware_id: str = ""

    def value(self, key: str) -> str | None:
        for k, v in self.values:
            if k == key:
                return v
        return None


def fmt(value: Any, digits: int = 1) -> str:
    """A KeyValue value: numbers rounded, None/NaN as ``n/a``, everything a str."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


@dataclass
class DiagnosticsBuilder:
    """Level rules; remembers per-camera error counts to flag errors that are new since the last call."""

    prefix: str = "dpa_perception"
    latency_error_after_s: float = 5.0
    degraded_threshold: float = 0.5  # visibility degradation reported as WARN (enter_high_threshold)
    # a camera whose header stamps show more lost frames than this (transport, QoS) is WARN
    loss_warn_pct: float = 20.0
    hardware_id: str = ""
    _errors_seen: dict[str, int] = field(default_factory=dict)
    _untrusted_seen: dict[str, int] = field(default_factory=dict)

    def build(
        self,
        stats: PipelineStats | Mapping[str, Any],
        engine: Mapping[str, Any] | None,
        *,
        now_s: float,
        active: bool,
    ) -> list[StatusRecord]:
        """All statuses. ``now_s`` is on the pipeline clock (the node clock); ``active``: lifecycle state."""
        if isinstance(stats, PipelineStats):
            stats = stats.to_dict()
        out = [self.camera(cam, s, active) for cam, s in (stats.get("cameras") or {}).items()]
        if engine is not None:
            out.append(self.engine(engine, stats.get("worker")))
        out.append(self.precision(stats.get("precision") or {}))
        out.append(self.latency(stats.get("latency") or {}, now_s))
        out.append(self.visibility(stats.get("visibility") or {}))
        for rec in out:
            rec.hardware_id = self.hardware_id
        return out

    def world(self, stats: Mapping[str, Any], waiting: Sequence[str] = ()) -> StatusRecord:
        """The world stage (ground projection + tracking): tracks, drops per camera, time per frame.

        WARN while a tracked camera still waits for its geometry (CameraInfo or tf2 not received).
        """
        cams = stats.get("cameras") or {}
        values = [("tracks_live", fmt(stats.get("tracks_live"))), ("tracks_confirmed", fmt(stats.get("tracks_confirmed"))),
                  ("mean_ms", fmt(stats.get("mean_ms")))]  # fmt: skip
        for cam, c in sorted(cams.items()):
            dropped = ", ".join(f"{k} {v}" for k, v in sorted((c.get("dropped") or {}).items()))
            values.append((f"{cam} frames", fmt(c.get("frames"))))
            values.append((f"{cam} dropped", dropped or "0"))
        values += [(f"{cam} geometry", "waiting for CameraInfo / tf2") for cam in waiting]
        if waiting:
            return StatusRecord(f"{self.prefix}: world", WARN, f"{len(waiting)} camera(s) without a geometry yet: "
                                f"{', '.join(waiting)}", values, self.hardware_id)  # fmt: skip
        msg = f"{stats.get('tracks_confirmed', 0)} tracks, {fmt(stats.get('mean_ms'))} ms per frame"
        return StatusRecord(f"{self.prefix}: world", OK, msg, values, self.hardware_id)

    # ---------------------------------------------------------------- per status

    def camera(self, topic: str, s: Mapping[str, Any], active: bool) -> StatusRecord:
        name = f"{self.prefix}: camera {topic}"
        state = str(s.get("state", "waiting"))
        errors = int(s.get("input_errors") or 0)
        new_errors = errors - self._errors_seen.get(topic, 0)
        self._errors_seen[topic] = errors
        last_error = s.get("last_error") or ""
        values = [("topic", topic)] + [(k, fmt(s.get(k))) for k in CAMERA_KEYS[1:] if k != "last_error"]
        values.append(("last_error", str(last_error) if last_error else "none"))
        rate, age = _num(s.get("input_rate_hz")), _num(s.get("stamp_age_ms"))
        if state == "rejecting":
            return StatusRecord(name, ERROR, f"rejecting input: {last_error or 'malformed frames'}", values)
        untrusted = int(s.get("untrusted_stamps") or 0)
        new_untrusted = untrusted - self._untrusted_seen.get(topic, 0)
        self._untrusted_seen[topic] = untrusted
        if new_errors > 0:
            return StatusRecord(name, WARN, f"{new_errors} malformed frame(s): {last_error}", values)
        if new_untrusted > 0:
            return StatusRecord(name, WARN, f"{new_untrusted} frame(s) stamped far from the receiving clock (stamp 0, an "
                                            "unsynchronised camera clock, or always older than the budget on "
                                            "arrival): aged from their arrival", values)
        if not active:
            return StatusRecord(name, OK, "node inactive (not subscribed)", values)
        if state == "waiting":
            return StatusRecord(name, WARN, "waiting for the first frame", values)
        if state == "stale":
            return StatusRecord(name, WARN, f"stale: newest frame is {fmt(age, 0)} ms old", values)
        source, loss = _num(s.get("source_rate_hz")), _num(s.get("estimated_loss_pct"))
        if loss is not None and loss > self.loss_warn_pct:
            return StatusRecord(
                name, WARN,
                f"losing frames: {fmt(rate)} Hz received of {fmt(source)} Hz sent ({fmt(loss, 0)} % lost; "
                "check QoS reliability/depth and DDS socket buffers, see docs/ros.md)", values,
            )  # fmt: skip
        sent = f" of {fmt(source)} Hz sent" if source is not None else ""
        return StatusRecord(name, OK, f"{fmt(rate)} Hz received{sent}, stamp age {fmt(age, 0)} ms", values)

    def engine(self, d: Mapping[str, Any], worker: Mapping[str, Any] | None = None) -> StatusRecord:
        variants = d.get("variants") or {}
        values = [("backend", fmt(d.get("backend"))), ("model_sha256", fmt(d.get("model_sha256")))]
        if d.get("family") is not None:
            values.append(("family", fmt(d.get("family"))))
        if d.get("input_hw") is not None:
            values.append(("input_hw", "x".join(str(v) for v in d["input_hw"])))
        if d.get("input_shape") is not None:
            values += [("input_shape", fmt(d.get("input_shape"))), ("input_shape_reason", fmt(d.get("input_shape_reason")))]
        if d.get("int8") is not None:  # whether INT8 pays here (the manifest's verdict) and what auto does
            values.append(("int8_verdict", fmt(d.get("int8"))))
        if d.get("throughput_reason") is not None:  # threads per call and batch, and where they came from
            values += [("intra_op_threads", fmt(d.get("intra_op_threads"))), ("batch", fmt(d.get("batch"))),
                       ("throughput_reason", fmt(d.get("throughput_reason")))]
        parts = []
        for mode in ("int8", "high"):
            v = variants.get(mode) or {}
            place = v.get("placement", "n/a")
            values.append((f"placement_{mode}", fmt(place)))
            for k, val in sorted(v.items()):
                if k not in ("placement", "backend") and isinstance(val, (str, int, float, bool)):
                    values.append((f"{mode}_{k}", fmt(val, 3)))
            parts.append(f"{mode} on {place}")
        message = f"{d.get('backend', '?')}: {', '.join(parts)}"
        errors = int((worker or {}).get("errors") or 0)
        values.append(("worker_errors", str(errors)))
        if errors:  # a batch failed inside the worker; it keeps serving, but someone should look
            last = str((worker or {}).get("last_error", ""))
            values.append(("last_worker_error", last))
            return StatusRecord(f"{self.prefix}: engine", WARN, f"{message}; {errors} failed batch(es): {last}", values)
        return StatusRecord(f"{self.prefix}: engine", OK, message, values)

    def precision(self, p: Mapping[str, Any]) -> StatusRecord:
        frames = p.get("frames_per_mode") or {}
        mode, reason = p.get("mode"), p.get("reason") or ""
        values = [
            ("mode", fmt(mode)),
            ("setting", fmt(p.get("setting"))),
            ("reason", str(reason) if reason else "none"),
            ("frames_int8", fmt(frames.get("int8", 0))),
            ("frames_high", fmt(frames.get("high", 0))),
            ("switches", fmt(p.get("switches", 0))),
            ("frames_reduced_scale", fmt(p.get("frames_reduced_scale", 0))),
        ]
        msg = f"{mode} ({reason})" if mode and reason else (str(mode) if mode else "no frame processed yet")
        return StatusRecord(f"{self.prefix}: precision", OK, msg, values)

    def latency(self, lat: Mapping[str, Any], now_s: float) -> StatusRecord:
        e2e = lat.get("e2e_ms") or {}
        p50, p95, p99 = (_num(e2e.get(k)) for k in ("p50", "p95", "p99"))
        budget = _num(lat.get("budget_ms"))
        # how long every processed frame has been over budget (None: the last one was within it)
        over_for = _num(lat.get("over_budget_for_s"))
        since = _num(lat.get("over_budget_since_s"))  # older form: a time on the pipeline clock
        if over_for is None and since is not None:
            over_for = max(0.0, now_s - since)
        values = [
            ("e2e_p50_ms", fmt(p50)), ("e2e_p95_ms", fmt(p95)), ("e2e_p99_ms", fmt(p99)),
            ("budget_ms", fmt(budget)), ("misses", fmt(lat.get("misses", 0))),
            ("frames_over_budget", fmt(lat.get("over_budget", 0))), ("over_budget_for_s", fmt(over_for)),
        ]  # fmt: skip
        for stage, v in sorted((lat.get("stages_ms") or {}).items()):
            values.append((f"stage_{stage}_p50_ms", fmt(_num(v) if not isinstance(v, Mapping) else _num(v.get("p50")))))
        name = f"{self.prefix}: latency"
        if p95 is None:
            return StatusRecord(name, OK, "no frame processed yet", values)
        summary = f"e2e p50 {fmt(p50)} / p95 {fmt(p95)} / p99 {fmt(p99)} ms, budget {fmt(budget)} ms"
        if over_for is not None and over_for >= self.latency_error_after_s:
            return StatusRecord(name, ERROR, f"over budget for {over_for:.1f} s: {summary}", values)
        if budget is not None and p95 > budget:
            return StatusRecord(name, WARN, f"p95 over budget: {summary}", values)
        return StatusRecord(name, OK, summary, values)

    def visibility(self, v: Mapping[str, Any]) -> StatusRecord:
        scores = v.get("scores") or {}
        deg = _num(v.get("degradation"))
        label = v.get("label")
        values = [("degradation", fmt(deg, 2)), ("label", fmt(label))]
        values += [(f"score_{k}", fmt(_num(s), 2)) for k, s in sorted(scores.items())]
        values.append(("external_age_s", fmt(_num(v.get("external_age_s")))))
        name = f"{self.prefix}: visibility"
        if deg is None:
            return StatusRecord(name, OK, "no estimate yet", values)
        if deg >= self.degraded_threshold:
            return StatusRecord(name, WARN, f"degraded visibility: {label} ({deg:.2f})", values)
        return StatusRecord(name, OK, f"{label} ({deg:.2f})", values)

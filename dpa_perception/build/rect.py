"""The input shape ladder measured on the build's frames: rect against square, and each reduced input
scale (:data:`~dpa_perception.core.model_spec.LADDER_SCALES`), for speed and for agreement with the
full-size square canvas (the reference every rung answers to)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.build.metrics import Agreement, agreement
from dpa_perception.core.model_spec import LADDER_SCALES, ModelSpec, at_scale
from dpa_perception.core.postprocess import DecodeConfig, decode_batch
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch
from dpa_perception.core.types import Detections

Lane = tuple[str, float]  # (input shape policy, input scale)


def _median_ms(s: OnnxRuntimeSession, x: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    """Median latency of ``runs`` runs after one warm-up, and the last output."""
    s.run(x)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = s.run(x)
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), out


def _run_lane(s: OnnxRuntimeSession, spec: ModelSpec, frame: np.ndarray, lane: Lane, decode: DecodeConfig,
              runs: int) -> tuple[float, Detections]:
    """One frame through the high-precision session on ``lane``'s canvas: its median ms and detections."""
    lane_spec = at_scale(spec, lane[1])
    canvas = canvas_hw([frame.shape[:2]], lane_spec, lane[0])
    x, infos = letterbox_batch([frame], lane_spec, canvas)
    ms, out = _median_ms(s, x, runs)
    return ms, decode_batch(out, lane_spec, canvas, infos, decode)[0]


def measure_rect(high_path: Path, spec: ModelSpec, frames: list[np.ndarray], decode: DecodeConfig, runs: int) -> dict[str, Any]:
    """Agreement and speed of rect against square and of every reduced scale, on the build's frames.

    Returns the manifest's ``rect`` section: ``agreement_vs_square``, ``square_ms``, ``rect_ms`` and
    ``speedup`` of rect over square, and ``ladder``: per policy, one entry per reduced scale with its
    canvas for the model's own size, its ms, its ``speedup`` over the same policy at full scale and its
    ``agreement_vs_square`` (against square at full scale)."""
    lanes: list[Lane] = [(p, sc) for sc in (1.0, *LADDER_SCALES) for p in ("square", "rect")]
    s = OnnxRuntimeSession(high_path, Placement("cpu"), OrtOptions())
    totals = {lane: Agreement() for lane in lanes}
    times: dict[Lane, list[float]] = {lane: [] for lane in lanes}
    for f in frames:
        ref: Detections | None = None
        for lane in lanes:
            ms, dets = _run_lane(s, spec, f, lane, decode, max(3, runs // 4))
            times[lane].append(ms)
            ref = dets if ref is None else ref  # the first lane is square at full scale
            totals[lane] += agreement(ref, dets)
    s.close()
    mean = {lane: float(np.mean(t)) for lane, t in times.items()}
    ladder: dict[str, list[dict[str, Any]]] = {"square": [], "rect": []}
    for policy, scale in lanes:
        if scale != 1.0:
            ladder[policy].append({
                "scale": scale, "input_hw": list(at_scale(spec, scale).input_hw),
                "ms": round(mean[(policy, scale)], 3),
                "speedup": round(mean[(policy, 1.0)] / mean[(policy, scale)], 3),
                "agreement_vs_square": totals[(policy, scale)].as_dict(),
            })  # fmt: skip
    sq, rc = mean[("square", 1.0)], mean[("rect", 1.0)]
    return {"agreement_vs_square": totals[("rect", 1.0)].as_dict(), "square_ms": round(sq, 3),
            "rect_ms": round(rc, 3), "speedup": round(sq / rc, 3), "frames": len(frames), "ladder": ladder}


def describe_ladder(rect: dict[str, Any]) -> str:
    """One line of the build log: rect and each reduced scale, its speed-up and F1 against square."""
    parts = [f"rect {rect['speedup']:.2f}x over square, F1 {rect['agreement_vs_square']['f1']:.3f}"]
    for policy, rungs in rect["ladder"].items():
        parts += [f"{policy} {e['scale']:g}x ({e['input_hw'][0]}x{e['input_hw'][1]}) {e['speedup']:.2f}x faster "
                  f"F1 {e['agreement_vs_square']['f1']:.3f}" for e in rungs]  # fmt: skip
    return ", ".join(parts)

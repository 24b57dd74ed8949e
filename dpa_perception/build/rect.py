"""The rect input shape measured against square on the build's frames: agreement and speed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.build.metrics import Agreement, agreement
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.postprocess import DecodeConfig, decode_batch
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch


def _median_ms(s: OnnxRuntimeSession, x: np.ndarray, runs: int) -> tuple[float, np.ndarray]:
    """Median latency of ``runs`` runs after one warm-up, and the last output."""
    s.run(x)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = s.run(x)
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), out


def measure_rect(high_path: Path, spec: ModelSpec, frames: list[np.ndarray], decode: DecodeConfig, runs: int) -> dict[str, Any]:
    """Agreement and speed of the rect input shape against square, on the calibration frames."""
    s = OnnxRuntimeSession(high_path, Placement("cpu"), OrtOptions())
    total = Agreement()
    times: dict[str, list[float]] = {"square": [], "rect": []}
    for f in frames:
        outs = {}
        for policy in ("square", "rect"):
            canvas = canvas_hw([f.shape[:2]], spec, policy)
            x, infos = letterbox_batch([f], spec, canvas)
            ms, out = _median_ms(s, x, max(3, runs // 4))
            times[policy].append(ms)
            outs[policy] = decode_batch(out, spec, canvas, infos, decode)[0]
        total += agreement(outs["square"], outs["rect"])
    s.close()
    sq, rc = float(np.mean(times["square"])), float(np.mean(times["rect"]))
    return {"agreement_vs_square": total.as_dict(), "square_ms": round(sq, 3), "rect_ms": round(rc, 3),
            "speedup": round(sq / rc, 3), "frames": len(frames)}

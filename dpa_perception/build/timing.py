"""Latency of built variants on this machine (ONNX Runtime, CPU)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions


def time_variants(paths: dict[str, Path], batch: np.ndarray, runs: int, options: OrtOptions) -> dict[str, float]:
    """Median per-frame latency of each variant, runs interleaved so drift hits all alike."""
    sessions = {k: OnnxRuntimeSession(p, Placement("cpu"), options) for k, p in paths.items()}
    x = batch[:1]
    times: dict[str, list[float]] = {k: [] for k in paths}
    for s in sessions.values():
        s.run(x)
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(x)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}

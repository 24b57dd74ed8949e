"""Latency of built variants on this machine (ONNX Runtime, CPU), and whether INT8 pays.

Timings are interleaved (each round alternates the variants call by call, in alternating order),
so drift and load hit all variants alike. The INT8 verdict repeats rounds until the confidence
interval of the speed-up lies wholly above or below the threshold, or says "undecided": a build on
a busy machine widens the interval instead of flipping the decision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.core.manifest import INT8_DOES_NOT_PAY as DOES_NOT_PAY
from dpa_perception.core.manifest import INT8_PAYS as PAYS
from dpa_perception.core.manifest import INT8_UNDECIDED as UNDECIDED

MIN_ROUNDS = 5  # never fewer: a t interval from 3 rounds can be narrow by chance
MAX_ROUNDS = 12
CONFIDENCE = 0.95


def _interleaved(run: dict[str, Callable[[], Any]], runs: int, flip: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in run}
    order = list(run)
    for i in range(runs):
        for k in order[::-1] if flip ^ (i % 2 == 1) else order:
            t0 = time.perf_counter()
            run[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def _warm_sessions(paths: dict[str, Path], options: OrtOptions,
                   batch: np.ndarray) -> tuple[dict[str, OnnxRuntimeSession], np.ndarray]:
    """A session per file, each run once unmeasured on the first frame of ``batch`` (returned: what is timed)."""
    sessions = {k: OnnxRuntimeSession(p, Placement("cpu"), options) for k, p in paths.items()}
    x = batch[:1]
    for s in sessions.values():
        s.run(x)
    return sessions, x


def _callers(sessions: dict[str, OnnxRuntimeSession], x: np.ndarray) -> dict[str, Callable[[], Any]]:
    return {k: partial(s.run, x) for k, s in sessions.items()}


def time_variants(paths: dict[str, Path], batch: np.ndarray, runs: int, options: OrtOptions) -> dict[str, float]:
    """Median per-frame latency of each variant (batch 1), runs interleaved so drift hits all alike."""
    sessions, x = _warm_sessions(paths, options, batch)
    times = _interleaved(_callers(sessions, x), runs, False)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


@dataclass(frozen=True)
class SpeedVerdict:
    """INT8 against high precision: the speed-up (geometric mean of the per-round median ratios),
    its confidence interval, the rounds it took and the verdict against ``threshold``."""

    verdict: str
    speedup: float
    ci: tuple[float, float]
    rounds: int
    threshold: float
    high_ms: float
    int8_ms: float

    @property
    def pays(self) -> bool:
        return self.verdict == PAYS

    def describe(self) -> str:
        words = {PAYS: "INT8 pays", DOES_NOT_PAY: "INT8 does NOT pay", UNDECIDED: "INT8 pays: undecided"}
        return (f"{words[self.verdict]} ({self.speedup:.2f}x, {CONFIDENCE:.0%} CI {self.ci[0]:.2f}-{self.ci[1]:.2f} "
                f"over {self.rounds} rounds, threshold {self.threshold:g}x)")

    def as_dict(self) -> dict[str, Any]:
        return {"int8_verdict": self.verdict, "speedup": round(self.speedup, 3),
                "speedup_ci": [round(self.ci[0], 3), round(self.ci[1], 3)], "confidence": CONFIDENCE,
                "rounds": self.rounds, "min_speedup": self.threshold,
                "high": round(self.high_ms, 3), "int8": round(self.int8_ms, 3)}  # fmt: skip


def ratio_interval(log_ratios: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(geometric mean, low, high) of the speed-up from per-round log ratios (Student t interval)."""
    from scipy import stats

    a = np.asarray(log_ratios, np.float64)
    mean = float(a.mean())
    if len(a) < 2:
        return math.exp(mean), 0.0, math.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def decide(log_ratios: list[float], threshold: float, final: bool) -> str | None:
    """The verdict from the rounds so far: pays / does_not_pay once the interval excludes
    ``threshold``; after the last round (``final``) undecided; else None (measure another round)."""
    if len(log_ratios) >= MIN_ROUNDS:
        _, low, high = ratio_interval(log_ratios)
        if low > threshold:
            return PAYS
        if high < threshold:
            return DOES_NOT_PAY
    return UNDECIDED if final else None


def compare_speed(high: Path, int8: Path, batch: np.ndarray, runs: int, options: OrtOptions, threshold: float,
                  max_rounds: int = MAX_ROUNDS) -> SpeedVerdict:
    """Whether the INT8 file is at least ``threshold`` times faster than high precision here (batch 1)."""
    sessions, x = _warm_sessions({"high": high, "int8": int8}, options, batch)
    logs: list[float] = []
    medians: dict[str, list[float]] = {"high": [], "int8": []}
    verdict = None
    while verdict is None:
        times = _interleaved(_callers(sessions, x), max(3, runs), len(logs) % 2 == 1)
        for k in medians:
            medians[k].append(float(np.median(times[k])))
        logs.append(math.log(medians["high"][-1] / medians["int8"][-1]))
        verdict = decide(logs, threshold, len(logs) >= max_rounds)
    speedup, low, up = ratio_interval(logs)
    return SpeedVerdict(verdict, speedup, (low, up), len(logs), threshold,
                        float(np.median(medians["high"])), float(np.median(medians["int8"])))  # fmt: skip

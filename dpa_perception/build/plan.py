"""The mixed-precision plan: which layers stay in high precision.

Three ways to keep layers in high precision, each grown until the error against high precision is
small enough: the most sensitive layers wherever they are (``sensitivity``), a contiguous prefix
of the network (``prefix``: every FP32<->INT8 boundary costs a quantize/dequantize, so scattered
layers can cost more than they save), or the most sensitive layers with every join kept in float
as well (``conv_only``: residual adds, concats, splits and pools, which the other two always
quantize; on YOLO11n it meets the error with half the layers kept). The fastest that meets the
error wins: INT8 must pay for itself.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.build import sensitivity as sens
from dpa_perception.build.evaluate import Evaluator
from dpa_perception.build.quantize import Calibrated
from dpa_perception.build.timing import time_variants

Log = Callable[[str], None]
# Ways to choose the layers kept in high precision; "auto" tries both.
PLANS = ("sensitivity", "prefix", "conv_only")
PLAN_CHOICES = ("auto", *PLANS)


@dataclass(frozen=True)
class Layers:
    """The network as the plan sees it: its units in graph order, ranked, and each node's position."""

    units: list[sens.Unit]
    ranked: list[sens.Unit]
    all_nodes: tuple[str, ...]
    position: dict[str, int]

    @classmethod
    def of(cls, model: onnx.ModelProto, units: list[sens.Unit], all_nodes: Sequence[str]) -> Layers:
        order = [n.name for n in model.graph.node]
        return cls(units, sens.rank(units), tuple(all_nodes), {name: i for i, name in enumerate(order)})

    def kept_nodes(self, strategy: str, k: int) -> set[str]:
        """The nodes kept in high precision by ``strategy`` with ``k`` units kept."""
        if strategy in ("sensitivity", "conv_only"):
            kept = {n for u in self.ranked[:k] for n in u.nodes}
            if strategy == "conv_only":  # and every quantizable node outside a conv unit (the joins)
                in_units = {n for u in self.units for n in u.nodes}
                kept |= {n for n in self.all_nodes if n not in in_units}
            return kept
        limit = self.units[k].index if k < len(self.units) else len(self.position)
        return {n for n in self.all_nodes if self.position[n] < limit}


@dataclass(frozen=True)
class Candidate:
    """One strategy's smallest sufficient plan: ``k`` units kept, the error curve it searched, its file."""

    strategy: str
    k: int
    curve: dict[int, float]
    path: Path

    @property
    def error(self) -> float:
        return self.curve[self.k]


@dataclass(frozen=True)
class Plan:
    """The chosen plan and what was measured to choose it."""

    strategy: str
    k: int
    curve: dict[int, float]
    kept_nodes: set[str]
    int8_path: Path
    summary: dict[str, dict[str, Any]]  # per strategy: units_kept, selection_error, int8_ms
    high_ms: float  # high precision, timed interleaved with the candidates


@dataclass(frozen=True)
class PlanSearch:
    """Everything the search needs: the layers, the calibration, the frames that score candidates."""

    layers: Layers
    calibrated: Calibrated
    evaluator: Evaluator
    folder: Path
    max_error: float
    max_kept_fraction: float
    progress: bool = True

    def error_of(self, strategy: str, k: int) -> float:
        candidate = self.folder / "candidate.onnx"
        out = self.evaluator.run(self.calibrated.quantize_except(candidate, "cpu", self.layers.kept_nodes(strategy, k)))
        return round(self.evaluator.plan_error(out), 4)

    def search(self, strategy: str) -> Candidate:
        """The smallest ``k`` whose error meets ``max_error`` (bisection, capped), written to ``int8_<strategy>.onnx``."""
        cap = max(1, int(len(self.layers.units) * self.max_kept_fraction))
        with tqdm(desc=f"{strategy} plan search", disable=not self.progress, file=sys.stderr) as bar:

            def error_with(k: int) -> float:
                bar.update(1)
                return self.error_of(strategy, k)

            k, curve = sens.smallest_sufficient(cap, error_with, self.max_error)
        path = self.calibrated.quantize_except(self.folder / f"int8_{strategy}.onnx", "cpu",
                                               self.layers.kept_nodes(strategy, k))  # fmt: skip
        return Candidate(strategy, k, curve, path)

    def choose(self, candidates: dict[str, Candidate], timing: dict[str, float]) -> Candidate:
        """The fastest candidate that meets ``max_error``; when none does, the most accurate one (a
        warning says so): speed never buys error beyond the bound."""
        ok = [s for s, c in candidates.items() if c.error <= self.max_error]
        if ok:
            return candidates[min(ok, key=lambda s: (timing[s], candidates[s].error))]
        chosen = candidates[min(candidates, key=lambda s: (candidates[s].error, timing[s]))]
        warnings.warn(f"held-out error {chosen.error:.3f} is still above --max-error {self.max_error} with "
                      f"{chosen.k} units kept (the cap, --max-kept-fraction {self.max_kept_fraction})",
                      stacklevel=1)  # fmt: skip
        return chosen

    def mark_kept(self, chosen: Candidate, kept_nodes: set[str]) -> None:
        """Mark the kept units and why (for the report)."""
        top = self.layers.ranked[: chosen.k]
        for u in self.layers.units:
            u.kept = u.name in kept_nodes
            if u.kept:
                u.reasons.append("sensitivity" if chosen.strategy != "prefix" or u in top else "contiguous prefix")

    def run(self, strategy: str, calib_tensor: np.ndarray, bench_runs: int, log: Log) -> Plan:
        """Search ``strategy`` (``auto``: both), time the candidates, keep the chosen one as ``int8.onnx``."""
        candidates = {s: self.search(s) for s in (PLANS if strategy == "auto" else (strategy,))}
        paths = {"high precision": self.calibrated.high_path, **{s: c.path for s, c in candidates.items()}}
        timing = time_variants(paths, calib_tensor, bench_runs, OrtOptions())  # interleaved with high, for the report
        chosen = self.choose(candidates, timing)
        kept_nodes = self.layers.kept_nodes(chosen.strategy, chosen.k)
        self.mark_kept(chosen, kept_nodes)
        summary = {s: {"units_kept": c.k, "selection_error": c.error, "int8_ms": timing[s]} for s, c in candidates.items()}
        speed_note = ", ".join(f"{s}: {c.k} layers kept, 1-F1 {c.error:.3f}, {timing[s]:.1f} ms"
                               for s, c in candidates.items())  # fmt: skip
        speed_note += f" (high precision {timing['high precision']:.1f} ms)"
        log(f"dpa-build: plans: {speed_note}; chose {chosen.strategy}")
        int8_path = chosen.path.replace(self.folder / "int8.onnx")
        for c in candidates.values():
            c.path.unlink(missing_ok=True)
        return Plan(chosen.strategy, chosen.k, chosen.curve, kept_nodes, int8_path, summary, timing["high precision"])

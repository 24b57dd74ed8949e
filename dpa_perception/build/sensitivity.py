"""Per-layer quantization sensitivity and the greedy choice of nodes kept in high precision."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from tqdm import tqdm

QUANTIZABLE_ACTIVATIONS = ("Sigmoid", "Mul", "Relu", "LeakyRelu", "HardSwish", "HardSigmoid", "Clip")


@dataclass
class Unit:
    """A Conv node and the activation nodes that follow it; kept or quantized together."""

    name: str
    index: int
    nodes: list[str]
    depthwise: bool
    sensitivity: float = float("nan")
    kept: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "nodes": self.nodes, "depthwise": self.depthwise,
                "sensitivity": None if np.isnan(self.sensitivity) else round(float(self.sensitivity), 6),
                "kept": self.kept, "reasons": self.reasons}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def integral_convs(model: onnx.ModelProto) -> set[str]:
    """1x1 convolutions whose one output channel weighs its inputs 0, 1, 2, ...: the expectation over
    a softmaxed distribution (the DFL of YOLOv8/YOLO11 box decoding), decode arithmetic, not features."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = set()
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        dims = list(inits[n.input[1]].dims)  # the shape first: no weight tensor is decoded for nothing
        if len(dims) == 4 and dims[0] == 1 and dims[2:] == [1, 1] and dims[1] > 1:
            w = numpy_helper.to_array(inits[n.input[1]])
            if np.array_equal(w.reshape(-1), np.arange(w.shape[1], dtype=w.dtype)):
                out.add(n.name)
    return out


def output_tail(model: onnx.ModelProto) -> set[str]:
    """Nodes from which no feature Conv can be reached: the decode tail (sigmoids, concats, reshapes,
    and the DFL softmax and its integral conv, :func:`integral_convs`).

    It mixes box offsets with probabilities in one tensor, so one INT8 scale would wreck the
    scores; it is cheap, so it always stays in high precision.
    """
    producers = {t: n for n in model.graph.node for t in n.output}
    integral = integral_convs(model)
    feeds_conv: set[str] = set()
    stack = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in integral]
    while stack:
        n = stack.pop()
        for t in n.input:
            p = producers.get(t)
            if p is not None and p.name not in feeds_conv:
                feeds_conv.add(p.name)
                stack.append(p)
    return {n.name for n in model.graph.node
            if (n.op_type != "Conv" or n.name in integral) and n.name not in feeds_conv}


# attention and normalisation: a product of two activations, a softmax over it, a mean-variance
# normalisation; 8 bits lose what these compute (the C2PSA block of YOLO11 is MatMul-Softmax-MatMul)
FRAGILE_OPS = ("Softmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean",
               "Pow", "Sqrt", "Div", "Erf")  # fmt: skip


def fragile_nodes(model: onnx.ModelProto) -> set[str]:
    """Attention and normalisation nodes, kept in high precision: every op of :data:`FRAGILE_OPS`,
    and each MatMul whose two inputs are both activations (attention scores, values), not weights."""
    weights = {i.name for i in model.graph.initializer}
    weights |= {t for n in model.graph.node if n.op_type == "Constant" for t in n.output}
    out = set()
    for n in model.graph.node:
        if n.op_type in FRAGILE_OPS or (n.op_type == "MatMul" and not any(t in weights for t in n.input)):
            out.add(n.name)
    return out


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node that may be quantized: all but the output tail, the fragile attention and
    normalisation nodes (:func:`fragile_nodes`) and constants."""
    keep = output_tail(model) | fragile_nodes(model)
    return [n.name for n in model.graph.node if n.name not in keep and n.op_type != "Constant"]


def _weight_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs, and what Reshape/Unsqueeze/Cast make of them (a bias as [1, C, 1, 1])."""
    out = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" or (n.op_type in ("Reshape", "Unsqueeze", "Cast") and n.input and n.input[0] in out):
            out.update(n.output)
    return out


def conv_units(model: onnx.ModelProto) -> list[Unit]:
    """Group each Conv with its bias Add (exports that keep the bias apart: the Add's other input is a
    weight) and its activation (e.g. SiLU = Sigmoid + Mul), in graph order: a unit kept in high
    precision is kept whole, with no quantize/dequantize left between its parts."""
    consumers = _consumers(model)
    tail = output_tail(model)  # never quantized, so never part of a unit
    weights = _weight_tensors(model)

    def joins(c: onnx.NodeProto, t: str) -> bool:
        if c.op_type in QUANTIZABLE_ACTIVATIONS:
            return True
        return c.op_type == "Add" and all(i == t or i in weights for i in c.input)  # a bias add

    units = []
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "Conv" or node.name in tail:
            continue
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        members = [node.name]
        frontier = list(node.output)
        while frontier:
            t = frontier.pop()
            for c in consumers.get(t, []):
                if joins(c, t) and c.name not in members and c.name not in tail and len(members) < 5:
                    members.append(c.name)
                    frontier.extend(c.output)
        units.append(Unit(node.name, idx, members, group > 1))
    return units


def score_error(ref_scores: np.ndarray, test_scores: np.ndarray, floor: float = 0.05) -> float:
    """Mean absolute difference of per-anchor scores where either model sees something."""
    relevant = np.maximum(ref_scores, test_scores) >= floor
    if not relevant.any():
        return 0.0
    return float(np.abs(ref_scores - test_scores)[relevant].mean())


def smallest_sufficient(n: int, error_of: Callable[[int], float], max_error: float) -> tuple[int, dict[int, float]]:
    """Smallest k in [0, n] with ``error_of(k) <= max_error`` by bisection (``n`` if none).

    Error falls, roughly monotonically, as more of the most sensitive units stay in high
    precision; every evaluated point is returned so the report can show the curve.
    """
    seen: dict[int, float] = {}

    def err(k: int) -> float:
        if k not in seen:
            seen[k] = error_of(k)
        return seen[k]

    if err(0) <= max_error:
        return 0, seen
    if err(n) > max_error:
        return n, seen
    lo, hi = 0, n  # err(lo) > max_error >= err(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if err(mid) <= max_error:
            hi = mid
        else:
            lo = mid
    return hi, seen


def rank(units: Sequence[Unit]) -> list[Unit]:
    """Units by decreasing sensitivity (NaN last)."""
    return sorted(units, key=lambda u: -u.sensitivity if not np.isnan(u.sensitivity) else np.inf)


def probe(units: Sequence[Unit], error_of: Callable[[Unit], float], progress: bool = True) -> None:
    """Set each unit's ``sensitivity`` to ``error_of(unit)`` (the error with that unit alone quantized)."""
    for u in tqdm(units, desc="sensitivity", disable=not progress, file=sys.stderr):
        u.sensitivity = error_of(u)

"""The high-precision variant: the model at opset 13 or later, each Conv's separate bias Add folded
into the Conv, with a symbolic batch (and H, W where the graph allows), each checked by running it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.build.quantize import make_dynamic, upgrade_opset
from dpa_perception.core.errors import BackendError
from dpa_perception.core.model_spec import ModelSpec, anchors_for
from dpa_perception.core.preprocess import letterbox_batch

Log = Callable[[str], None]
HIGH_FILE = "high.onnx"


def _constant(name: str, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The value of tensor ``name`` when it is constant: an initializer, a Constant node, or a Reshape
    of one by a constant shape (how a dequantized export spells a Conv bias); else None."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producers.get(name)
    if node is None:
        return None
    if node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return None if value is None else numpy_helper.to_array(value)
    if node.op_type == "Reshape" and len(node.input) == 2:
        data, shape = _constant(node.input[0], inits, producers), _constant(node.input[1], inits, producers)
        if data is not None and shape is not None and 0 not in shape:
            return data.reshape(shape)
    return None


def fold_conv_bias(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Copy of ``model`` with every ``Conv -> Add(constant per output channel)`` pair made one Conv with
    that bias, and how many were folded. The same arithmetic; but a quantized Conv then carries its bias
    as int32 inside the one integer op, instead of an extra quantized Add (and its scales) per layer."""
    import copy

    from onnx import numpy_helper

    m = copy.deepcopy(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    graph_outputs = {o.name for o in g.output}
    folded: list[onnx.NodeProto] = []
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for conv_out, other in (add.input, add.input[::-1]):
            conv = producers.get(conv_out)
            if conv is None or conv.op_type != "Conv" or len(conv.input) != 2 or conv.input[1] not in inits:
                continue
            if uses.get(conv_out) != 1 or conv_out in graph_outputs:
                continue
            bias = _constant(other, inits, producers)
            channels = inits[conv.input[1]].dims[0]
            if bias is None or bias.size != channels or bias.ndim > 4 or (bias.ndim >= 3 and bias.shape[-3] != channels):
                continue
            name = f"{conv.name or conv_out}_folded_bias"
            g.initializer.append(numpy_helper.from_array(bias.reshape(-1).astype(np.float32), name))
            conv.input.append(name)
            conv.output[0] = add.output[0]
            folded.append(add)
            break
    for add in folded:
        g.node.remove(add)
    _prune_dead(g)
    return m, len(folded)


def _prune_dead(g: onnx.GraphProto) -> None:
    """Drop nodes and initializers nothing reads any more (a folded bias's Reshape and its inputs)."""
    while True:
        read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    read = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in read]:
        g.initializer.remove(init)


def verify_dynamic(path: Path, spec: ModelSpec, frame: np.ndarray) -> tuple[bool, bool]:
    """Check by running it whether ``path`` really accepts other batch sizes and canvas sizes."""
    try:
        s = OnnxRuntimeSession(path, Placement("cpu"), OrtOptions(log_severity=4))  # a failed probe is an answer
    except BackendError:  # the symbolic dims contradict the graph: it loads only as exported
        return False, False
    x, _ = letterbox_batch([frame], spec, spec.input_hw)
    try:
        one = s.run(x)
        two = s.run(np.concatenate([x, x]))
        dyn_batch = two.shape[0] == 2 and np.allclose(two[0], one[0], atol=1e-3) and np.allclose(two[1], one[0], atol=1e-3)
    except Exception:
        dyn_batch = False
    rect = (spec.input_hw[0] // 2 // spec.max_stride * spec.max_stride or spec.max_stride, spec.input_hw[1])
    try:
        xr, _ = letterbox_batch([frame], spec, rect)
        out = s.run(xr)
        rows = out.shape[1] if spec.family == "yolox" else out.shape[2]
        dyn_hw = rows == anchors_for(rect, spec.strides)
    except Exception:
        dyn_hw = False
    s.close()
    return bool(dyn_batch), bool(dyn_hw)


@dataclass(frozen=True)
class HighVariant:
    """The high-precision file and what running it showed about its dims."""

    path: Path
    dynamic_batch: bool
    dynamic_hw: bool


def prepare_high(model: onnx.ModelProto, spec: ModelSpec, frame: np.ndarray, folder: Path, log: Log) -> HighVariant:
    """Write ``folder/high.onnx``: symbolic batch and spatial dims if the graph runs that way,
    else symbolic batch only, else the model as it is (frames then run one by one)."""
    base, folded = fold_conv_bias(upgrade_opset(model))
    if folded:
        log(f"dpa-build: folded {folded} separate Conv bias Adds into their Convs")
    high_path = folder / HIGH_FILE
    dyn_batch = dyn_hw = False
    for spatial in (True, False):
        onnx.save(make_dynamic(base, spatial), str(high_path))
        dyn_batch, dyn_hw = verify_dynamic(high_path, spec, frame)
        if dyn_batch and (dyn_hw or not spatial):
            break
    if not dyn_batch:
        warnings.warn("the model's batch dimension cannot be made symbolic; frames run one by one", stacklevel=1)
        onnx.save(base, str(high_path))
        dyn_hw = False
    log(f"dpa-build: dynamic batch: {dyn_batch}, dynamic spatial dims (rect input): {dyn_hw}")
    return HighVariant(high_path, dyn_batch, dyn_hw)

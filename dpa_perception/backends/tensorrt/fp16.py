"""The FP16-typed ONNX for strongly typed TensorRT (11.x builds the high variant from it).

:func:`convert_onnx_to_fp16` is a small graph pass: FP32 initializers and Constants become FP16,
Cast(to=FLOAT) becomes Cast(to=FLOAT16), except tensors that only feed inputs the ONNX spec fixes
to float32; graph inputs and outputs stay FP32 behind Cast nodes. ``onnx`` and ``numpy`` are
imported inside the functions, so importing this module needs neither.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dpa_perception.core.errors import BackendError
from dpa_perception.core.manifest import sha256_file

FP16_ONNX_NAME = "high_fp16.onnx"
FP16_MAX = 65504.0

# Inputs that the ONNX spec types as float32 whatever the data type is: they stay FP32.
_FP32_ONLY_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales
    "Upsample": frozenset({1}),  # scales
}
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
_AUTOCAST_HINT = "convert the model with ModelOpt AutoCast and save it as high_fp16.onnx"


class _Uses:
    """Where each tensor of the original graph is consumed: (node, input index)."""

    def __init__(self, graph: Any) -> None:
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
        self.graph_outputs = {o.name for o in graph.output}

    def of(self, name: str) -> list[tuple[Any, int]]:
        return self.consumers.get(name, [])

    def fp32_uses(self, name: str) -> list[tuple[Any, int]]:
        """The uses of ``name`` that the ONNX spec fixes to float32."""
        return [(n, i) for n, i in self.of(name) if i in _FP32_ONLY_INPUTS.get(n.op_type, ())]

    def fp32_only(self, name: str) -> bool:
        """Whether ``name`` feeds float32-only inputs and nothing else (it then stays FP32)."""
        uses = self.of(name)
        return bool(uses) and name not in self.graph_outputs and len(self.fp32_uses(name)) == len(uses)


def _to_fp16(t: Any) -> Any:
    """An FP16 copy of a float TensorProto, clipped to the FP16 range."""
    import numpy as np
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t).astype(np.float32)
    if arr.size and np.abs(arr).max() > FP16_MAX:
        arr = np.clip(arr, -FP16_MAX, FP16_MAX)
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def _refuse_subgraphs(graph: Any) -> None:
    for node in graph.node:
        if node.op_type in _SUBGRAPH_OPS:
            raise BackendError(
                f"FP16 conversion: node {node.name or node.op_type} has a subgraph ({node.op_type}); {_AUTOCAST_HINT}"
            )


def _convert_initializers(graph: Any, uses: _Uses) -> None:
    """FP32 initializers become FP16; one consumed both ways keeps an FP32 copy for its FP32-only uses."""
    import onnx
    from onnx import TensorProto

    new_inits = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or uses.fp32_only(init.name):
            new_inits.append(init)
            continue
        keep = uses.fp32_uses(init.name)
        if keep:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = init.name + "__fp32"
            new_inits.append(copy)
            for n, i in keep:
                n.input[i] = copy.name
        new_inits.append(_to_fp16(init))
    del graph.initializer[:]
    graph.initializer.extend(new_inits)


def _convert_constant(node: Any, uses: _Uses) -> None:
    """Constant / ConstantOfShape: an FP32 value becomes FP16 unless it only feeds FP32-only inputs."""
    from onnx import TensorProto

    is_constant = node.op_type == "Constant"
    for attr in node.attribute:
        if attr.name != "value" or attr.t.data_type != TensorProto.FLOAT:
            continue
        if is_constant and uses.fp32_only(node.output[0]):
            continue
        if is_constant and uses.fp32_uses(node.output[0]):
            raise BackendError(
                f"FP16 conversion: constant {node.output[0]} feeds both FP32-only and "
                "FP16 inputs; use ModelOpt AutoCast for this model"
            )
        attr.t.CopyFrom(_to_fp16(attr.t))


def _convert_cast(node: Any, uses: _Uses) -> None:
    from onnx import TensorProto

    for attr in node.attribute:
        if attr.name == "to" and attr.i == TensorProto.FLOAT and not uses.fp32_only(node.output[0]):
            attr.i = TensorProto.FLOAT16


def _convert_nodes(graph: Any, uses: _Uses) -> None:
    for node in list(graph.node):
        if node.op_type in ("Constant", "ConstantOfShape"):
            _convert_constant(node, uses)
        elif node.op_type == "Cast":
            _convert_cast(node, uses)


def _cast_inputs(graph: Any, uses: _Uses, keep_io_types: bool) -> list[Any]:
    """FP32 graph inputs: kept FP32 and cast to FP16 (``keep_io_types``), or retyped FP16."""
    from onnx import TensorProto, helper

    casts = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if not keep_io_types:
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16
            continue
        casted = inp.name + "__fp16"
        for n, i in uses.of(inp.name):
            n.input[i] = casted
        casts.append(helper.make_node("Cast", [inp.name], [casted], name=inp.name + "__to_fp16", to=TensorProto.FLOAT16))
    return casts


def _rename_output(graph: Any, uses: _Uses, name: str, produced: str) -> None:
    """The node that produced graph output ``name`` now produces ``produced``; so do its readers."""
    for node in graph.node:
        for k, out in enumerate(node.output):
            if out == name:
                node.output[k] = produced
    for n, i in uses.of(name):
        n.input[i] = produced


def _cast_outputs(graph: Any, uses: _Uses, keep_io_types: bool) -> list[Any]:
    """FP32 graph outputs: produced in FP16 and cast back to FP32 (``keep_io_types``), or retyped FP16."""
    from onnx import TensorProto, helper

    casts = []
    for out in graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if not keep_io_types:
            out.type.tensor_type.elem_type = TensorProto.FLOAT16
            continue
        produced = out.name + "__fp16"
        _rename_output(graph, uses, out.name, produced)
        casts.append(helper.make_node("Cast", [produced], [out.name], name=out.name + "__to_fp32", to=TensorProto.FLOAT))
    return casts


def _check_types(model: Any) -> None:
    """ONNX's strict type inference over the converted model, or a BackendError saying what to do."""
    import onnx

    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError
        raise BackendError(
            f"FP16 conversion produced an inconsistently typed graph ({str(exc).splitlines()[0]}); "
            "convert the model with ModelOpt AutoCast (python -m modelopt.onnx.autocast "
            "--onnx_path high.onnx --keep_io_types) and save it in the build folder as high_fp16.onnx"
        ) from exc


def convert_onnx_to_fp16(model: Any, *, keep_io_types: bool = True) -> Any:
    """Return an FP16-typed copy of an FP32 ONNX model (``onnx.ModelProto``).

    Every FP32 initializer and Constant becomes FP16, Cast(to=FLOAT) becomes Cast(to=FLOAT16),
    except tensors that only feed inputs the ONNX spec fixes to float32 (Resize roi/scales,
    Upsample scales). With ``keep_io_types`` the graph inputs and outputs stay FP32 through Cast
    nodes, so the runtime feeds and reads float32 exactly as for the FP32 model. The result is
    type-checked with ONNX's strict shape inference; a graph this simple pass cannot type
    consistently raises :class:`BackendError` (convert it with ModelOpt AutoCast instead and put
    it in the build folder as ``high_fp16.onnx``).

    Why not onnxconverter-common: one more dependency on Jetson images for a pass this small, and
    its blocklist-based casts have to be checked anyway; ModelOpt AutoCast is the NVIDIA tool for
    models this pass refuses.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    _refuse_subgraphs(g)
    uses = _Uses(g)  # the original graph's consumers, used by every step below
    _convert_initializers(g, uses)
    _convert_nodes(g, uses)
    cast_in = _cast_inputs(g, uses, keep_io_types)
    cast_out = _cast_outputs(g, uses, keep_io_types)
    nodes = cast_in + list(g.node) + cast_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale types; re-inferred by the check
    _check_types(m)
    return m


def write_fp16_onnx(src: Path, dst: Path) -> str:
    """Convert ``src`` to an FP16-typed ONNX at ``dst`` (atomically); return its sha256."""
    import onnx

    model = convert_onnx_to_fp16(onnx.load(str(src)))
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)
    return sha256_file(dst)

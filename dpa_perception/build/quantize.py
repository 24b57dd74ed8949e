"""Explicit (QDQ) INT8 quantization of an ONNX detector with ONNX Runtime's quantization tools.

One calibration pass is cached (``calibration_cache_path``) and reused for every variant the
builder makes: the per-node sensitivity probes, the CPU file and the TensorRT file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from dpa_perception.core.errors import ConfigError

CALIBRATION_METHODS = {
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
    "minmax": CalibrationMethod.MinMax,
    "distribution": CalibrationMethod.Distribution,
}
TARGETS = ("cpu", "tensorrt")


@dataclass(frozen=True)
class ConvInfo:
    """A quantization candidate: a Conv node, its position and how much arithmetic it does per byte moved."""

    name: str
    index: int
    group: int
    intensity: float  # multiply-accumulates per activation element read and written

    @property
    def depthwise(self) -> bool:
        return self.group > 1


MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the axis attribute) needs opset 13


class _OnceFilter(logging.Filter):
    """ONNX Runtime's quantizer warns "Please consider (to run) pre-processing before quantization"
    on every call (68-264 lines per build): say it once. The model is shape-inferred by the builder
    already; ORT's pre-processing (symbolic shape inference + optimisation) would change the graph
    the per-layer plan is measured on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False
        self.installed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "pre-processing before quantization" not in record.getMessage():
            return True
        first, self.seen = not self.seen, True
        return first

    def install(self) -> None:
        if not self.installed:
            logging.getLogger().addFilter(self)
            self.installed = True


_ONCE = _OnceFilter()


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` converted to at least opset 13 (unchanged if already there)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= MIN_OPSET:
        return model
    return onnx.version_converter.convert_version(model, MIN_OPSET)


def make_dynamic(model: onnx.ModelProto, spatial: bool) -> onnx.ModelProto:
    """Copy of ``model`` with a symbolic batch dimension (and symbolic H, W when ``spatial``)."""
    m = copy.deepcopy(model)
    names = ("batch", None, "height", "width") if spatial else ("batch", None, None, None)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        for d, name in zip(dims, names):
            if name:
                d.Clear()
                d.dim_param = name
    for vi in m.graph.output:
        dims = vi.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if i == 0 or spatial:
                # every output dimension may follow the batch / the canvas size
                if i == 0 or (d.HasField("dim_value") and d.dim_value > 64):
                    d.Clear()
                    d.dim_param = "batch" if i == 0 else f"out_{i}"
    del m.graph.value_info[:]  # stale fixed intermediate shapes would contradict the new dims
    _reshapes_keep_the_batch(m)
    return m


def _reshapes_keep_the_batch(m: onnx.ModelProto) -> None:
    """A static-batch export (Ultralytics' default) bakes batch 1 into its Reshape targets: make each
    leading 1 a 0 ("copy the input's dim"), so the batch flows through. Whether the graph then really
    runs other batch sizes, with the same results per frame, is checked by running it."""
    from onnx import numpy_helper

    def batch_free(t: onnx.TensorProto) -> None:
        shape = numpy_helper.to_array(t)
        if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1:
            t.CopyFrom(numpy_helper.from_array(np.concatenate(([0], shape[1:])).astype(shape.dtype), t.name))

    inits = {i.name: i for i in m.graph.initializer}
    const_nodes = [n for n in m.graph.node if n.op_type == "Constant" and n.output]
    consts = {n.output[0]: a.t for n in const_nodes for a in n.attribute if a.name == "value"}
    weights = set(inits) | {n.output[0] for n in const_nodes}
    for node in m.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[0] in weights:
            continue  # a weight reshaped (a bias to [1, C, 1, 1]) has no batch
        target = inits[node.input[1]] if node.input[1] in inits else consts.get(node.input[1])
        if target is not None:
            batch_free(target)


def conv_candidates(model: onnx.ModelProto) -> list[ConvInfo]:
    """Every Conv node in graph order, with group count and arithmetic intensity."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for idx, node in enumerate(model.graph.node):
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        w = inits[node.input[1]].dims  # [Cout, Cin/group, kh, kw]
        cout, cin_g, kh, kw = (list(w) + [1, 1])[:4]
        cin = cin_g * group
        macs_per_pixel = cout * cin_g * kh * kw
        out.append(ConvInfo(node.name, idx, group, macs_per_pixel / max(cin + cout, 1)))
    return out


class FrameReader(CalibrationDataReader):
    """Feeds pre-processed NCHW frames one by one to ONNX Runtime's calibrator."""

    def __init__(self, input_name: str, frames: np.ndarray):
        self.input_name = input_name
        self.frames = frames
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.frames):
            return None
        self._i += 1
        return {self.input_name: self.frames[self._i - 1 : self._i]}

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self.frames)


def quantize_variant(
    fp32_path: Path,
    out_path: Path,
    *,
    target: str,
    nodes_to_quantize: Sequence[str],
    calibration_cache: Path,
    reader: FrameReader | None,
    method: str = "percentile",
    percentile: float = 99.99,
    op_types: Sequence[str] | None = ("Conv",),
) -> None:
    """Write a QDQ model quantizing exactly ``nodes_to_quantize`` (Conv nodes).

    ``target`` ``cpu``: uint8 asymmetric activations (fast on x86 ONNX Runtime);
    ``tensorrt``: symmetric int8 activations (what TensorRT's explicit quantization expects).
    Weights are int8 symmetric per channel in both.
    """
    if target not in TARGETS:
        raise ConfigError(f"quantization target must be one of {', '.join(TARGETS)}")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    if not nodes_to_quantize:
        raise ConfigError("nothing to quantize: every candidate node is kept in high precision")
    if reader is not None:
        reader.rewind()
    extra = {
        "ActivationSymmetric": target == "tensorrt",
        "WeightSymmetric": True,
        "CalibPercentile": percentile,
        "CalibMaxIntermediateOutputs": 32,
    }
    # ORT logs a line per tensor at INFO; keep builds readable.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    _ONCE.install()
    # the percentile calibrator divides by the histogram total, 0 for a constant tensor: numpy's
    # divide/invalid warnings there say nothing about the model (the tensor's range comes out 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        quantize_static(
            str(fp32_path),
            str(out_path),
            calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_quantize=list(nodes_to_quantize),
            per_channel=True,
            activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[method],
            extra_options=extra,
            calibration_cache_path=str(calibration_cache),
        )


@dataclass(frozen=True)
class Calibrated:
    """One calibration pass, cached in ``cache`` and reused for every variant quantized from
    ``high_path``: the sensitivity probes, the plan candidates, the CPU and the TensorRT files."""

    high_path: Path
    cache: Path
    reader: FrameReader
    method: str
    percentile: float
    all_nodes: tuple[str, ...]  # every quantizable node, in graph order

    def quantize_nodes(self, out_path: Path, nodes: Sequence[str], target: str = "cpu") -> Path:
        """``out_path`` with exactly ``nodes`` quantized."""
        quantize_variant(self.high_path, out_path, target=target, nodes_to_quantize=nodes,
                         calibration_cache=self.cache, reader=self.reader, method=self.method,
                         percentile=self.percentile, op_types=None)  # fmt: skip
        return out_path

    def quantize_except(self, out_path: Path, target: str, kept: set[str]) -> Path:
        """``out_path`` with every quantizable node quantized except ``kept``."""
        return self.quantize_nodes(out_path, [n for n in self.all_nodes if n not in kept], target)

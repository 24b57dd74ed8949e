"""ONNX Runtime backend (CPU): runs both the FP32 and the QDQ INT8 variant on every machine."""

from __future__ import annotations

import hashlib
import os
import platform
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.core.errors import BackendError, ConfigError
from dpa_perception.core.machine import cpu_model_and_flags

_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtOptions:
    """Session options. Defaults measured on a shared 2-core VM (see README, "ONNX Runtime threads")."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    graph_optimization: str = "all"
    # ONNX Runtime's own log: 3 = errors (they also raise); 4 = fatal only, for a run expected to fail
    # (dpa-build probing whether a graph takes other canvas sizes)
    log_severity: int = 3

    def validate(self) -> None:
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("thread counts must be >= 0 (0 = ONNX Runtime's default)")
        if self.log_severity not in range(5):
            raise ConfigError("log_severity must be 0 (verbose) to 4 (fatal)")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(f"graph_optimization must be one of {', '.join(_OPT_LEVELS)}")


def session_options(opts: OrtOptions):  # -> ort.SessionOptions
    import onnxruntime as ort

    opts.validate()
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.intra_op_threads
    so.inter_op_num_threads = opts.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if opts.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opts.graph_optimization]
    so.log_severity_level = opts.log_severity
    return so


def ort_cache_dir() -> Path | None:
    """Where loaded variants keep their ONNX Runtime-optimised graphs: ``$DPA_ORT_CACHE``, else
    ``$XDG_CACHE_HOME/dpa_perception/ort`` (``~/.cache/...``); None when ``DPA_ORT_CACHE=off``."""
    env = os.environ.get("DPA_ORT_CACHE", "")
    if env.lower() == "off":
        return None
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dpa_perception" / "ort"


def _cache_key(model_path: Path, options: OrtOptions, file_sha256: str | None) -> str:
    """The optimised graph is this file's (its sha256, computed here unless given), at this level, by
    this ONNX Runtime, for this CPU (ORT's layout transforms depend on the vector width)."""
    import onnxruntime as ort

    h = hashlib.sha256((file_sha256 or hashlib.sha256(model_path.read_bytes()).hexdigest()).encode())
    model, flags = cpu_model_and_flags()
    cpu = " ".join(sorted(flags)) or model
    h.update(f"{ort.__version__}|{options.graph_optimization}|{platform.machine()}|{cpu}".encode())
    return h.hexdigest()[:32]


class OnnxRuntimeSession:
    """A :class:`~dpa_perception.backends.base.BackendSession` over ``onnxruntime.InferenceSession``.

    ``cache_dir``: keep the graph ONNX Runtime optimised on the first load there and load it as it is
    afterwards (measured: INT8 YOLOX-Nano 180 -> 28 ms, high 35 -> 10 ms); ``file_sha256``: the file's
    checksum where the caller has just verified it (else computed here); a cache that cannot be
    written or read is skipped (a plain load), never an error."""

    def __init__(self, model_path: Path, placement: Placement, options: OrtOptions | None = None,
                 cache_dir: Path | None = None, file_sha256: str | None = None):
        if placement.device != "cpu":
            raise ConfigError(
                f"the onnxruntime backend runs on the CPU; placement {placement} needs backend tensorrt"
            )
        self.placement = placement
        self.options = options or OrtOptions()
        self.model_path = model_path
        self.from_cache = False
        try:
            self._session = self._load(cache_dir, file_sha256)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise BackendError(f"{model_path}: ONNX Runtime cannot load it ({exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if not inputs or not outputs:
            raise BackendError(f"{model_path}: the model has no input or no output")
        self.input_name = inputs[0].name
        self._output_name = outputs[0].name
        # declared shapes (an int per static dim, a name or None per symbolic one), checked against
        # the manifest's model description when an engine loads
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.output_shape: list[int | str | None] = list(outputs[0].shape)
        self._local = threading.local()  # io_binding and output buffers of run_reusing, per thread

    def _load(self, cache_dir: Path | None, file_sha256: str | None) -> Any:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if cache_dir is None or self.options.graph_optimization == "disable":
            return ort.InferenceSession(str(self.model_path), session_options(self.options), providers=providers)
        cached = cache_dir / f"{_cache_key(self.model_path, self.options, file_sha256)}.onnx"
        if cached.is_file():
            try:
                session = ort.InferenceSession(str(cached), session_options(replace(self.options, graph_optimization="disable")),
                                               providers=providers)  # fmt: skip
                self.from_cache = True
                return session
            except Exception:  # damaged or foreign: optimise again
                cached.unlink(missing_ok=True)
        so = session_options(self.options)
        tmp = None
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            so.optimized_model_filepath = str(tmp)
        except OSError:  # not writable: a plain load
            tmp = None
        session = ort.InferenceSession(str(self.model_path), so, providers=providers)
        if tmp is not None:
            try:
                os.replace(tmp, cached)  # whole or not at all: a reader never sees half a file
            except OSError:
                tmp.unlink(missing_ok=True)
        return session

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self.input_name: batch})[0]

    def run_reusing(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`run` into an output buffer kept per input shape and per thread (io_binding), so a
        frame allocates no output. The array returned is overwritten by this thread's next call."""
        local = self._local
        if not hasattr(local, "outputs"):
            local.binding, local.outputs = self._session.io_binding(), {}
        key = tuple(batch.shape)
        out = local.outputs.get(key)
        if out is None:  # first call at this shape: learn the output shape
            out = self.run(batch)
            if len(local.outputs) >= 16:
                local.outputs.clear()
            local.outputs[key] = out
            return out
        binding = local.binding
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch, np.float32))
        binding.bind_output(self._output_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self._session.run_with_iobinding(binding)
        return out

    def describe(self) -> dict:
        return {
            "backend": "onnxruntime",
            "placement": str(self.placement),
            "file": self.model_path.name,
            "intra_op_threads": self.options.intra_op_threads,
            "allow_spinning": self.options.allow_spinning,
            "graph_optimization": self.options.graph_optimization,
            "optimised_graph_cached": self.from_cache,
        }

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]

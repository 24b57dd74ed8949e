"""TensorRT backend: runs an engine built by ``dpa-build --backend tensorrt`` on GPU or DLA.

Importing this module needs neither TensorRT nor CUDA (both are imported inside functions), so
CPU-only CI imports it. :func:`load_tensorrt_session` checks the engine key first and refuses a
stale, foreign, missing or corrupt engine with a :class:`BackendError` instead of crashing inside
TensorRT.

Execution uses the TensorRT 10 / 11 tensor-name API: ``set_input_shape``, ``set_tensor_address``
and ``execute_async_v3`` on a CUDA stream; the host waits only for the output copy. Device memory
comes from :mod:`.memory` (cuda-python or a CUDA build of torch).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.features import import_tensorrt
from dpa_perception.backends.tensorrt.key import EngineKey, check_engine_entry, expected_key, rebuild_command
from dpa_perception.backends.tensorrt.memory import DeviceMemory, select_device_memory
from dpa_perception.backends.tensorrt.probe import MachineInfo, probe_machine
from dpa_perception.backends.tensorrt.profiles import ShapeProfile, run_batch_size
from dpa_perception.core.errors import BackendError
from dpa_perception.core.manifest import Manifest

MAX_CACHED_SHAPES = 16

# One trt.Logger per tensorrt module, shared by every session: TensorRT keeps the first logger it
# was given for the whole process and reports "The logger passed into createInferRuntime differs
# from one already provided" for each further Runtime built with another one.
_RUNTIME_LOGGERS: dict[int, tuple[Any, Any]] = {}
_LOGGER_LOCK = threading.Lock()


def runtime_logger(trt: Any) -> Any:
    """The process-wide ``trt.Logger(WARNING)`` used for every session's ``trt.Runtime``."""
    with _LOGGER_LOCK:
        held = _RUNTIME_LOGGERS.get(id(trt))
        if held is None or held[0] is not trt:
            held = (trt, trt.Logger(trt.Logger.WARNING))
            _RUNTIME_LOGGERS[id(trt)] = held
        return held[1]

# --------------------------------------------------------------------------------------------
# Pure helpers (tested on CPU)
# --------------------------------------------------------------------------------------------


def engine_input_shape(batch_shape: tuple[int, ...], profile: ShapeProfile) -> tuple[int, ...]:
    """The shape the engine runs for a host batch: checked against the profile, batch padded
    up to the static batch of DLA engines."""
    if len(batch_shape) != len(profile.min):
        raise BackendError(
            f"input batch has shape {list(batch_shape)}, the engine takes rank-{len(profile.min)} "
            f"input ({profile.describe()})"
        )
    shape = (run_batch_size(profile, int(batch_shape[0])),) + tuple(int(v) for v in batch_shape[1:])
    if not profile.covers(shape):
        raise BackendError(
            f"input shape {list(batch_shape)} is outside the engine profile {profile.describe()}: "
            "rebuild the engine for this input size"
        )
    return shape


def nbytes_of(shape: tuple[int, ...], itemsize: int) -> int:
    if any(d < 0 for d in shape):
        raise BackendError(f"tensor shape {list(shape)} is not fully known (data-dependent output?)")
    n = int(itemsize)
    for d in shape:
        n *= int(d)
    return n


def pad_batch(batch: np.ndarray, run_batch: int) -> np.ndarray:
    """Zero-pad a batch along axis 0 (static DLA engines); return it as is when no pad is needed."""
    n = batch.shape[0]
    if run_batch == n:
        return batch
    out = np.zeros((run_batch,) + batch.shape[1:], dtype=batch.dtype)
    out[:n] = batch
    return out


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


@dataclass
class _IOTensor:
    name: str
    is_input: bool
    dtype: np.dtype


@dataclass
class _Buffers:
    shapes: dict[str, tuple[int, ...]]
    device: dict[str, int]
    host_in: np.ndarray
    host_out: np.ndarray  # uint8 staging for the first output


class TensorRTSession:
    """One deserialized engine and its execution context (implements ``BackendSession``)."""

    def __init__(
        self,
        *,
        trt: Any,
        runtime: Any,
        engine: Any,
        placement: Placement,
        key: EngineKey,
        engine_path: Path,
        entry: Mapping[str, Any],
        memory: DeviceMemory,
    ) -> None:
        self.placement = placement
        self.key = key
        self.engine_path = engine_path
        self._entry = dict(entry)
        self._trt = trt
        self._runtime = runtime
        self._engine = engine
        self._memory = memory
        self._lock = threading.Lock()
        self._closed = False
        self._io: list[_IOTensor] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                # trt.nptype raises TypeError for types without a numpy equivalent (BF16, FP8, INT4)
                dtype = np.dtype(trt.nptype(trt_dtype))
            except (TypeError, KeyError, ValueError) as exc:
                raise BackendError(
                    f"engine {engine_path.name}: I/O tensor {name!r} has type {trt_dtype}, which has no "
                    "numpy equivalent; rebuild it from an ONNX with FP32 (or FP16) inputs and outputs"
                ) from exc
            self._io.append(_IOTensor(name, is_input, dtype))
        inputs = [t for t in self._io if t.is_input]
        outputs = [t for t in self._io if not t.is_input]
        if len(inputs) != 1 or not outputs:
            raise BackendError(
                f"engine {engine_path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "one input and at least one output are supported"
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self.input_name: str = self._input.name
        if self.input_name != key.input_name:
            raise BackendError(
                f"engine {engine_path.name} input is {self.input_name!r}, the manifest says "
                f"{key.input_name!r}: rebuild the engines"
            )
        self._check_engine_profile(engine, engine_path)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"could not create an execution context for {engine_path.name} (out of GPU memory?)")
        self._stream = memory.new_stream()
        self._buffers: OrderedDict[tuple[int, ...], _Buffers] = OrderedDict()
        self._bound_shape: tuple[int, ...] | None = None  # shape whose buffers are bound
        self._shape_set: tuple[int, ...] | None = None  # last shape given to set_input_shape

    # -- BackendSession -----------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError("TensorRT session is closed")
        host = np.ascontiguousarray(batch, dtype=self._input.dtype)
        n = int(host.shape[0]) if host.ndim else 0
        shape = engine_input_shape(tuple(host.shape), self.key.profile)
        host = pad_batch(host, shape[0])
        with self._lock:
            bufs = self._buffers_for(shape)
            if self._bound_shape != shape:
                if self._shape_set != shape:
                    if not self._context.set_input_shape(self.input_name, shape):
                        raise BackendError(f"TensorRT refused input shape {list(shape)}")
                    self._shape_set = shape
                for name, ptr in bufs.device.items():
                    if self._context.set_tensor_address(name, ptr) is False:
                        raise BackendError(f"TensorRT refused the device address of tensor {name!r}")
                self._bound_shape = shape
            np.copyto(bufs.host_in[: host.nbytes], host.view(np.uint8).reshape(-1))
            self._memory.h2d(bufs.device[self.input_name], bufs.host_in[: host.nbytes], self._stream)
            if not self._context.execute_async_v3(self._stream):
                raise BackendError(f"TensorRT execution failed for engine {self.engine_path.name}")
            self._memory.d2h(bufs.host_out, bufs.device[self._output.name], self._stream)
            self._memory.synchronize(self._stream)
            out_shape = bufs.shapes[self._output.name]
            out = bufs.host_out.view(self._output.dtype).reshape(out_shape)[:n].copy()
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict:
        layers = self._entry.get("layers") or {}
        return {
            "backend": "tensorrt",
            "variant": self.key.variant,
            "engine": self.engine_path.name,
            "precision": self.key.precision,
            "placement": str(self.placement),
            "trt_version": self.key.trt_version,
            "compute_capability": self.key.compute_capability,
            "profile": self.key.profile.to_dict(),
            "key_digest": self.key.digest(),
            "device_memory": self._memory.name,
            "layers_on_dla": layers.get("on_dla"),
            "layers_on_gpu": layers.get("on_gpu"),
        }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._memory.synchronize(self._stream)
            except BackendError:
                pass
            for bufs in self._buffers.values():
                self._free(bufs)
            self._buffers.clear()
            self._context = None
            self._engine = None
            self._runtime = None
            self._memory.close()

    def _check_engine_profile(self, engine: Any, engine_path: Path) -> None:
        """Refuse an engine whose own optimisation profile 0 differs from its manifest key (the
        session pads and checks shapes against the key, TensorRT against the engine)."""
        getter = getattr(engine, "get_tensor_profile_shape", None)
        if not callable(getter):
            return
        try:
            mn, _opt, mx = (tuple(int(d) for d in s) for s in getter(self.input_name, 0))
        except (TypeError, ValueError, RuntimeError):
            return  # not readable on this TensorRT: the key (checked by digest and sha256) rules
        want = self.key.profile
        if (mn, mx) != (want.min, want.max):
            raise BackendError(
                f"engine {engine_path.name} has input profile {list(mn)} .. {list(mx)}, its manifest "
                f"key says {want.describe()}: rebuild the engines"
            )

    # -- buffers ------------------------------------------------------------------------------

    def _buffers_for(self, shape: tuple[int, ...]) -> _Buffers:
        bufs = self._buffers.get(shape)
        if bufs is not None:
            self._buffers.move_to_end(shape)
            return bufs
        if not self._context.set_input_shape(self.input_name, shape):
            raise BackendError(f"TensorRT refused input shape {list(shape)}")
        self._shape_set = shape
        self._bound_shape = None  # new addresses must be bound
        shapes: dict[str, tuple[int, ...]] = {}
        device: dict[str, int] = {}
        for t in self._io:
            s = shape if t.is_input else tuple(int(d) for d in self._context.get_tensor_shape(t.name))
            shapes[t.name] = s
            device[t.name] = self._memory.alloc_device(nbytes_of(s, t.dtype.itemsize))
        bufs = _Buffers(
            shapes=shapes,
            device=device,
            host_in=self._memory.alloc_host(nbytes_of(shape, self._input.dtype.itemsize)),
            host_out=self._memory.alloc_host(
                nbytes_of(shapes[self._output.name], self._output.dtype.itemsize)
            ),
        )
        self._buffers[shape] = bufs
        while len(self._buffers) > MAX_CACHED_SHAPES:
            _, old = self._buffers.popitem(last=False)
            self._free(old)
        return bufs

    def _free(self, bufs: _Buffers) -> None:
        for ptr in bufs.device.values():
            self._memory.free_device(ptr)
        self._memory.free_host(bufs.host_in)
        self._memory.free_host(bufs.host_out)


def load_tensorrt_session(
    engine_dir: Path,
    manifest: Manifest,
    variant: str,
    placement: Placement,
    *,
    max_batch: int,
    trt_module: Any = None,
    machine: MachineInfo | None = None,
    memory: DeviceMemory | None = None,
) -> TensorRTSession:
    """Check the engine of ``variant`` against this machine, then deserialize it.

    Refusals (all :class:`BackendError`, nothing crashes inside TensorRT): TensorRT not installed,
    no "tensorrt" section or entry, missing or corrupt engine file, engine built for another
    TensorRT / GPU / variant / precision / placement / model / input profile.
    ``trt_module``, ``machine`` and ``memory`` are injectable for tests.
    """
    engine_dir = Path(engine_dir)
    hint = rebuild_command(engine_dir, manifest)
    section = manifest.tensorrt
    if not isinstance(section, Mapping) or not isinstance(section.get("engines"), Mapping):
        raise BackendError(
            f"{engine_dir}/manifest.json has no TensorRT engines: build them with {hint}"
        )
    trt = import_tensorrt() if trt_module is None else trt_module
    if machine is None:
        machine = probe_machine(trt)
    want = expected_key(
        manifest, variant, placement, max_batch=max_batch, machine=machine, features_trt=trt
    )
    entry = section["engines"].get(variant)
    path = check_engine_entry(engine_dir, entry, want, rebuild_hint=hint)
    assert entry is not None  # checked above
    found = EngineKey.from_dict(entry["key"])
    if memory is None:
        memory = select_device_memory()

    runtime = trt.Runtime(runtime_logger(trt))
    if placement.device == "dla":
        num = int(getattr(runtime, "num_DLA_cores", 0) or 0)
        if placement.dla_core >= num:
            raise BackendError(
                f"engine {path.name} runs on {placement} but this machine has {num} DLA core(s)"
            )
        runtime.DLA_core = int(placement.dla_core)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise BackendError(
            f"TensorRT could not deserialize {path.name} although its key matches: rebuild with {hint}"
        )
    return TensorRTSession(
        trt=trt,
        runtime=runtime,
        engine=engine,
        placement=placement,
        key=found,
        engine_path=path,
        entry=entry,
        memory=memory,
    )

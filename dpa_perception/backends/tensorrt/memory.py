"""GPU memory for TensorRT sessions: cuda-python (``cuda.bindings.runtime`` or the older
``cuda.cudart``) or, failing that, a CUDA build of torch; ``DPA_TRT_DEVICE_MEMORY=torch|cuda-python``
forces one. Neither is imported before a session asks for memory."""

from __future__ import annotations

import ctypes
import os
from typing import Any, Protocol

import numpy as np

from dpa_perception.core.errors import BackendError


class DeviceMemory(Protocol):
    name: str

    def new_stream(self) -> int: ...

    def alloc_device(self, nbytes: int) -> int: ...

    def alloc_host(self, nbytes: int) -> np.ndarray: ...

    def h2d(self, dst: int, src: np.ndarray, stream: int) -> None: ...

    def d2h(self, dst: np.ndarray, src: int, stream: int) -> None: ...

    def synchronize(self, stream: int) -> None: ...

    def free_device(self, ptr: int) -> None: ...

    def free_host(self, arr: np.ndarray) -> None: ...

    def close(self) -> None: ...


class _CudaPythonMemory:
    """cuda-python runtime bindings; pinned host staging buffers."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        self._rt = cudart
        self._streams: list[Any] = []
        self._host: dict[int, int] = {}  # id(array) -> pinned pointer

    def _call(self, what: str, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA {what} failed: {err}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def new_stream(self) -> int:
        stream = self._call("cudaStreamCreate", self._rt.cudaStreamCreate())
        self._streams.append(stream)
        return int(stream)

    def alloc_device(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self._rt.cudaMalloc(max(1, nbytes))))

    def alloc_host(self, nbytes: int) -> np.ndarray:
        ptr = int(self._call("cudaMallocHost", self._rt.cudaMallocHost(max(1, nbytes))))
        buf = (ctypes.c_uint8 * max(1, nbytes)).from_address(ptr)
        arr = np.frombuffer(memoryview(buf), dtype=np.uint8, count=nbytes)
        self._host[id(arr)] = ptr
        return arr

    def h2d(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(
            "cudaMemcpyAsync", self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream)
        )

    def d2h(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(
            "cudaMemcpyAsync", self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream)
        )

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))

    def free_device(self, ptr: int) -> None:
        self._rt.cudaFree(ptr)

    def free_host(self, arr: np.ndarray) -> None:
        ptr = self._host.pop(id(arr), None)
        if ptr is not None:
            self._rt.cudaFreeHost(ptr)

    def close(self) -> None:
        for s in self._streams:
            self._rt.cudaStreamDestroy(s)
        self._streams.clear()


class _TorchMemory:
    """A CUDA build of torch; buffers are byte tensors, the stream a torch.cuda.Stream."""

    name = "torch"

    def __init__(self) -> None:
        import torch  # type: ignore[import-not-found]

        if not torch.cuda.is_available():
            raise BackendError("torch is installed but sees no CUDA device")
        self._torch = torch
        self._dev: dict[int, Any] = {}
        self._host: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}

    def new_stream(self) -> int:
        s = self._torch.cuda.Stream()
        handle = int(s.cuda_stream)
        self._streams[handle] = s
        return handle

    def alloc_device(self, nbytes: int) -> int:
        t = self._torch.empty(max(1, nbytes), dtype=self._torch.uint8, device="cuda")
        self._dev[int(t.data_ptr())] = t
        return int(t.data_ptr())

    def alloc_host(self, nbytes: int) -> np.ndarray:
        t = self._torch.empty(max(1, nbytes), dtype=self._torch.uint8, pin_memory=True)
        arr: np.ndarray = t.numpy()[:nbytes]
        self._host[id(arr)] = t
        return arr

    def h2d(self, dst: int, src: np.ndarray, stream: int) -> None:
        with self._torch.cuda.stream(self._streams[stream]):
            self._dev[dst][: src.nbytes].copy_(
                self._torch.from_numpy(src.view(np.uint8).reshape(-1)), non_blocking=True
            )

    def d2h(self, dst: np.ndarray, src: int, stream: int) -> None:
        with self._torch.cuda.stream(self._streams[stream]):
            self._torch.from_numpy(dst.view(np.uint8).reshape(-1)).copy_(
                self._dev[src][: dst.nbytes], non_blocking=True
            )

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def free_device(self, ptr: int) -> None:
        self._dev.pop(ptr, None)

    def free_host(self, arr: np.ndarray) -> None:
        self._host.pop(id(arr), None)

    def close(self) -> None:
        self._streams.clear()


def select_device_memory(prefer: str | None = None) -> DeviceMemory:
    """cuda-python if importable, else torch with CUDA; ``prefer`` (or $DPA_TRT_DEVICE_MEMORY)
    forces one. Raises :class:`BackendError` when neither is usable."""
    choice = (prefer or os.environ.get("DPA_TRT_DEVICE_MEMORY") or "").strip().lower()
    order = {"torch": ("torch",), "cuda-python": ("cuda-python",)}.get(
        choice, ("cuda-python", "torch")
    )
    reasons: list[str] = []
    for name in order:
        try:
            return _CudaPythonMemory() if name == "cuda-python" else _TorchMemory()
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
        except BackendError as exc:
            reasons.append(f"{name}: {exc}")
    raise BackendError(
        "TensorRT sessions need GPU memory from cuda-python (pip install cuda-python) or a CUDA "
        "build of torch; " + "; ".join(reasons)
    )

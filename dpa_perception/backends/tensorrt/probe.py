"""This machine: the TensorRT version and the GPU compute capability, with injectable probes
(cuda-python, the CUDA driver through ctypes, torch, nvidia-smi)."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dpa_perception.backends.tensorrt.features import current_trt_version
from dpa_perception.core.errors import BackendError

CCProbe = Callable[[int], "str | None"]


def format_cc(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"


def probe_cc_cuda_python(device: int = 0) -> str | None:
    """Compute capability through cuda-python's runtime bindings (12.x and 13.x layouts)."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
    except ImportError:
        return None
    attr = cudart.cudaDeviceAttr
    err, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    err, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    return format_cc(major, minor)


_CU_ATTR_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (cuda.h)
_CU_ATTR_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR


def probe_cc_libcuda(device: int = 0) -> str | None:
    """Compute capability through the CUDA driver library (present wherever a driver is)."""
    lib = None
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return None
    try:
        if lib.cuInit(0) != 0:
            return None
        dev = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(dev), device) != 0:
            return None
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev) != 0:
            return None
        if lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev) != 0:
            return None
    except AttributeError:
        return None
    return format_cc(major.value, minor.value)


def probe_cc_torch(device: int = 0) -> str | None:
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return format_cc(major, minor)


def probe_cc_nvidia_smi(device: int = 0) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={device}", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"^\s*(\d+)\.(\d+)\s*$", out.stdout or "")
    return format_cc(int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None


DEFAULT_CC_PROBES: tuple[CCProbe, ...] = (
    probe_cc_cuda_python,
    probe_cc_libcuda,
    probe_cc_torch,
    probe_cc_nvidia_smi,
)


def current_compute_capability(
    device: int = 0, probes: Iterable[CCProbe] | None = None
) -> str | None:
    """The first answer of the probes (any probe that raises is skipped)."""
    for probe in DEFAULT_CC_PROBES if probes is None else probes:
        try:
            cc = probe(device)
        except Exception:
            cc = None
        if cc:
            return cc
    return None


@dataclass(frozen=True)
class MachineInfo:
    trt_version: str
    compute_capability: str


def probe_machine(
    trt: Any = None, *, device: int = 0, probes: Iterable[CCProbe] | None = None
) -> MachineInfo:
    """TensorRT version and compute capability of this machine, or a BackendError saying which is missing."""
    version = current_trt_version(trt)
    if version is None:
        raise BackendError(
            "TensorRT is not installed (import tensorrt failed): install the TensorRT Python "
            "package of your JetPack / CUDA, or run the int8/high variants on ONNX Runtime"
        )
    cc = current_compute_capability(device, probes)
    if cc is None:
        raise BackendError(
            "cannot determine the GPU compute capability: no CUDA device answered through "
            "cuda-python, libcuda, torch or nvidia-smi"
        )
    return MachineInfo(version, cc)


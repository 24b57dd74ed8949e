"""What the installed ``tensorrt`` module offers, found by attribute checks (``hasattr``) only,
never by comparing version strings; and importing it with a clear refusal when it is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpa_perception.core.errors import BackendError


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed ``tensorrt`` module offers, found by attribute checks only."""

    version: str
    has_fp16_flag: bool
    has_int8_flag: bool
    has_gpu_fallback_flag: bool
    has_strongly_typed_flag: bool
    has_explicit_batch_flag: bool

    @property
    def weakly_typed(self) -> bool:
        """TensorRT 10.x: precision builder flags exist, so the builder may pick FP16/INT8 kernels."""
        return self.has_fp16_flag and self.has_int8_flag


def detect_features(trt: Any) -> TrtFeatures:
    """Feature-detect a ``tensorrt`` module (or a fake with the same attribute layout)."""
    bf = getattr(trt, "BuilderFlag", None)
    nf = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return TrtFeatures(
        version=str(getattr(trt, "__version__", "unknown")),
        has_fp16_flag=hasattr(bf, "FP16"),
        has_int8_flag=hasattr(bf, "INT8"),
        has_gpu_fallback_flag=hasattr(bf, "GPU_FALLBACK"),
        has_strongly_typed_flag=hasattr(nf, "STRONGLY_TYPED"),
        has_explicit_batch_flag=hasattr(nf, "EXPLICIT_BATCH"),
    )


def import_tensorrt() -> Any:
    """Import the real ``tensorrt`` module or raise :class:`BackendError`.

    A bare namespace package (for example only ``tensorrt-stubs`` installed) imports fine but has
    no ``Builder``: it is treated as "not installed".
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            "TensorRT is not installed (import tensorrt failed): install the TensorRT Python "
            "package of your JetPack / CUDA to build or run TensorRT engines"
        ) from exc
    if not hasattr(trt, "Builder") or not getattr(trt, "__version__", None):
        raise BackendError(
            "the importable 'tensorrt' has no Builder (only type stubs are installed?): install "
            "the TensorRT Python package of your JetPack / CUDA"
        )
    return trt


def current_trt_version(trt: Any = None) -> str | None:
    if trt is None:
        try:
            import tensorrt as trt_module
        except ImportError:
            return None
        trt = trt_module
    v = getattr(trt, "__version__", None)
    return str(v) if v else None



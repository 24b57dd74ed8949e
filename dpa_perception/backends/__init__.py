"""Inference backends behind one interface (ONNX Runtime on CPU, TensorRT on GPU/DLA)."""

from __future__ import annotations

from dpa_perception.backends.base import BackendSession, Placement, parse_placement

__all__ = ["BackendSession", "Placement", "parse_placement"]

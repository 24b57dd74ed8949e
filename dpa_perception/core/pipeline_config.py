"""The pipeline's settings (defaults and ranges from the node parameter table) and what it needs of an engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.governor import GovernorConfig
from dpa_perception.core.image_codec import FrameLimits
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.types import BatchResult, Detections, Mode


@dataclass
class PipelineConfig(GovernorConfig):
    """Governor policy plus scheduling settings (``max_batch`` and ``input_shape`` are structural).

    Defaults and ranges come from the node's parameter table (:mod:`dpa_perception.core.node_params`).
    """

    max_batch: int = P.default("max_batch")
    input_shape: str = P.default("input_shape")
    visibility_every_n: int = P.default("visibility_every_n")
    stamp_trust_s: float = P.default("stamp_trust_s")
    batch_window_ms: float = P.default("batch_window_ms")
    max_frame_width: int = P.default("max_frame_width")
    max_frame_height: int = P.default("max_frame_height")
    max_frame_pixels: int = P.default("max_frame_pixels")
    max_compressed_bytes: int = P.default("max_compressed_bytes")
    min_frame_side: int = P.default("min_frame_side")
    worker_stop_timeout_s: float = P.default("worker_stop_timeout_s")
    inference_workers: int = P.default("inference_workers")
    stale_after_s: float = 2.0  # a camera with no frame for this long is reported stale

    STRUCTURAL = P.PIPELINE_STRUCTURAL

    @property
    def limits(self) -> FrameLimits:
        return FrameLimits(self.max_frame_width, self.max_frame_height, self.max_frame_pixels,
                           self.max_compressed_bytes, self.min_frame_side)

    def validate(self) -> None:
        super().validate()
        if self.batch_window_ms >= self.latency_budget_ms - self.safety_margin_ms:
            raise ConfigError(f"batch_window_ms ({self.batch_window_ms}) must be below the budget less its margin")
        if self.stale_after_s <= 0:
            raise ConfigError("stale_after_s must be positive")


class InferenceEngine(Protocol):
    """What the pipeline needs of an engine (DualModeEngine, a TensorRT one, a test fake)."""

    decode: DecodeConfig

    def supports(self, input_shape: str) -> bool: ...

    def infer(self, frames: Sequence[np.ndarray], mode: Mode, input_shape: str = "square",
              scale: float = 1.0) -> BatchResult: ...


class WorldOutput(Protocol):
    """What the pipeline needs of the world stage (``dpa_perception.world.stage.WorldStage``)."""

    def process(self, camera: str, stamp_ns: int, dets: Detections, image_hw: tuple[int, int] | None = None) -> Any: ...

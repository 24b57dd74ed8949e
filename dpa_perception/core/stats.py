"""The pipeline's statistics snapshot as types: what /diagnostics, summary.json and tests read.

``Pipeline.stats()`` returns a :class:`PipelineStats`; ``to_dict()`` is its JSON form (the shape the
diagnostics builder and the replay summary consume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dpa_perception.core.types import Mode

Percentiles = dict[str, float | None]  # p50 / p95 / p99


@dataclass(frozen=True)
class CameraStats:
    state: str  # waiting | active | stale | rejecting
    input_rate_hz: float  # frames received per second
    source_rate_hz: float | None  # the camera's own rate, from its header stamps
    estimated_loss_pct: float | None  # frames the stamps say were sent but never arrived
    future_stamps: int  # frames stamped ahead of the receiving clock
    untrusted_stamps: int  # stamps too far from the receiving clock: aged from arrival
    stamp_age_ms: float | None  # age of the newest frame now
    received: int
    processed: int
    dropped: int
    deadline_misses: int
    input_errors: int
    last_error: str


@dataclass(frozen=True)
class WorkerStats:
    errors: int
    last_error: str


@dataclass(frozen=True)
class PrecisionStats:
    mode: Mode | None  # the last decision
    reason: str
    setting: str  # precision_mode
    frames_per_mode: dict[Mode, int]
    switches: int
    frames_reduced_scale: int = 0  # frames run at a reduced input scale (the shape ladder, reason budget_scale)


@dataclass(frozen=True)
class LatencySnapshot:
    e2e_ms: Percentiles
    stages_ms: dict[str, float | None]  # p50 per stage
    budget_ms: float
    over_budget: int
    misses: int
    over_budget_for_s: float | None  # how long every processed frame has been over budget


@dataclass(frozen=True)
class VisibilitySnapshot:
    degradation: float | None  # the worst camera's
    label: str | None
    scores: dict[str, float] = field(default_factory=dict)
    external_age_s: float | None = None


@dataclass(frozen=True)
class PipelineStats:
    cameras: dict[str, CameraStats]
    worker: WorkerStats
    precision: PrecisionStats
    latency: LatencySnapshot
    visibility: VisibilitySnapshot

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

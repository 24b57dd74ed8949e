"""Per-camera state, frame results and rolling statistics of the pipeline."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpa_perception.core.stats import (
    CameraStats,
    LatencySnapshot,
    PipelineStats,
    PrecisionStats,
    VisibilitySnapshot,
    WorkerStats,
)
from dpa_perception.core.types import MODES, NS_PER_S, Detections, FrameStatus, Mode
from dpa_perception.core.visibility import VisibilityReport

NS = NS_PER_S
PERCENTILES = (("p50", 50), ("p95", 95), ("p99", 99))
STAMP_WINDOW = 100  # header stamps kept per camera to estimate the source rate and the loss


@dataclass
class FrameResult:
    """What happened to one input frame."""

    camera: str
    stamp_ns: int
    meta: Any
    status: FrameStatus
    mode: Mode | None
    reason: str  # decision reason, why it was dropped (stale, late, replaced) or rejected (the error)
    detections: Detections = field(default_factory=Detections.empty)
    timing_ms: dict[str, float] = field(default_factory=dict)
    visibility: VisibilityReport | None = None
    batch: int = 0  # frames in the inference call this frame ran in (0: not run)
    frame: np.ndarray | None = None  # the decoded frame, when submitted with keep_frame (debug images)
    world: Any = None  # the world stage's result (a world.stage.WorldFrame), when the camera has a geometry
    track_ids: list[int] | None = None  # per detection: its track id (0: none), with a world result
    image_hw: tuple[int, int] | None = None  # the frame's original size (processed frames)
    scale: float = 1.0  # input scale it ran at (below 1: a reduced rung of the shape ladder, reason budget_scale)


@dataclass
class Pending:
    frame: np.ndarray
    stamp_ns: int
    meta: Any
    decode_ms: float
    arrived_ns: int  # on the steady clock
    age_at_arrival_ns: int  # stamp to arrival on the stamp clock, never negative
    keep_frame: bool = False
    scale_xy: tuple[float, float] = (1.0, 1.0)  # original pixels per frame pixel (reduced JPEG decode)
    # visibility estimated where the frame was decoded (off the inference thread): this frame's
    # report, or None when it was not due (the camera's last report stands)
    vis_at_submit: bool = False
    vis: VisibilityReport | None = None
    vis_ms: float = 0.0

    def age_ns(self, steady_now_ns: int) -> int:
        """Capture stamp to ``steady_now_ns``: the age at arrival plus steady time since (never negative)."""
        return self.age_at_arrival_ns + max(0, steady_now_ns - self.arrived_ns)


def stamp_loss(stamps: Sequence[int]) -> tuple[float | None, float | None]:
    """(source rate in Hz, estimated loss fraction) from the header stamps of the frames that arrived.

    The source period is the 10th percentile of the positive stamp steps (robust to lost frames,
    which only make steps longer, and to jitter); the frames the camera sent over the window are the
    stamp span over that period. ``(None, None)`` until enough frames have arrived.
    """
    if len(stamps) < 5:
        return None, None
    ordered = np.sort(np.asarray(stamps, np.int64))
    steps = np.diff(ordered)
    steps = steps[steps > 0]
    if len(steps) < 4:
        return None, None
    period = float(np.percentile(steps, 10))
    expected = (ordered[-1] - ordered[0]) / period + 1.0
    return NS / period, float(min(1.0, max(0.0, 1.0 - len(ordered) / expected)))


class CameraState:
    def __init__(self, name: str):
        self.name = name
        self.pending: Pending | None = None
        self.received = self.processed = self.dropped = self.misses = self.input_errors = 0
        self.last_error = ""
        self.last_error_ns = 0
        self.last_arrival_ns: int | None = None  # steady clock
        self.untrusted_stamps = 0  # header stamps too far from the receiving clock to be capture times
        self.last_age_ns = 0  # age of the newest frame at its arrival
        self.future_stamps = 0  # frames stamped ahead of the receiving clock (age clamped to 0)
        self.arrivals: deque[int] = deque(maxlen=30)
        self.stamps: deque[int] = deque(maxlen=STAMP_WINDOW)
        self.ages: deque[int] = deque(maxlen=30)  # age at arrival of recent trusted frames
        self.last_served_ns = 0
        self.frame_index = 0
        self.submit_index = 0  # frames decoded through submit_message (its visibility schedule)
        self.in_flight = False  # a frame of this camera is being processed by a worker
        self.visibility: VisibilityReport | None = None

    def next_arrival_ns(self) -> int | None:
        """When this camera's next frame should arrive (steady clock): its newest frame's capture
        time on the steady clock, plus the camera's period from its stamps, plus its shortest recent
        transport delay. None before it has shown a steady rate (or without trusted stamps)."""
        if len(self.stamps) < 3 or not self.ages or self.last_arrival_ns is None:
            return None
        period = float(np.median(np.diff(np.asarray(self.stamps, np.int64)[-10:])))
        if period <= 0:
            return None
        return int(self.last_arrival_ns - self.last_age_ns + period + min(self.ages))

    def snapshot(self, now: int, stale_after_s: float) -> CameraStats:
        """The camera's statistics at ``now`` (steady clock) for diagnostics and summaries."""
        c = self
        if c.last_arrival_ns is None:
            state = "rejecting" if c.input_errors else "waiting"
        elif (now - c.last_arrival_ns) / NS > stale_after_s:
            state = "rejecting" if c.last_error_ns > c.last_arrival_ns else "stale"
        elif c.last_error_ns > c.last_arrival_ns:
            state = "rejecting"
        else:
            state = "active"
        arr = list(c.arrivals)
        rate = (len(arr) - 1) / ((arr[-1] - arr[0]) / NS) if len(arr) > 1 and arr[-1] > arr[0] else 0.0
        source_hz, loss = stamp_loss(c.stamps)
        return CameraStats(
            state=state,
            input_rate_hz=round(rate, 2),
            source_rate_hz=round(source_hz, 2) if source_hz is not None else None,
            estimated_loss_pct=round(100.0 * loss, 1) if loss is not None else None,
            future_stamps=c.future_stamps,
            untrusted_stamps=c.untrusted_stamps,
            stamp_age_ms=round((c.last_age_ns + now - c.last_arrival_ns) / 1e6, 1)
            if c.last_arrival_ns is not None else None,
            received=c.received, processed=c.processed, dropped=c.dropped,
            deadline_misses=c.misses, input_errors=c.input_errors, last_error=c.last_error,
        )  # fmt: skip


@dataclass
class RoundItem:
    """A frame of this round with its governor decision."""

    cam: CameraState
    p: Pending
    vis: VisibilityReport
    reason: str
    vis_ms: float
    hw: tuple[int, int] | None = None  # the frame's original size, once run


def percentiles(values: Sequence[float], digits: int = 3,
                qs: Sequence[tuple[str, float]] = PERCENTILES) -> dict[str, float | None]:
    """Named percentiles of ``values`` rounded to ``digits`` (None each when there are no values)."""
    if not len(values):
        return dict.fromkeys((k for k, _ in qs), None)
    a = np.asarray(values, np.float64)
    return {k: round(float(np.percentile(a, q)), digits) for k, q in qs}


class RollingStats:
    """Bounded windows of latencies and counters for diagnostics and summaries."""

    STAGES = ("queue_wait", "decode", "visibility", "preprocess", "inference", "postprocess", "world", "e2e")

    def __init__(self, window: int = 1024):
        self.stages: dict[str, deque[float]] = {s: deque(maxlen=window) for s in self.STAGES}
        self.frames_per_mode = dict.fromkeys(MODES, 0)
        self.switches = 0
        self.reduced_scale = 0
        self.over_budget = 0
        self.last_mode: Mode | None = None
        self.camera_mode: dict[str, Mode] = {}
        self.last_reason = ""
        self.over_budget_since_ns: int | None = None

    def add(self, r: FrameResult, budget_ms: float, now_ns: int) -> None:
        for s in self.STAGES:
            if s in r.timing_ms:
                self.stages[s].append(r.timing_ms[s])
        assert r.mode is not None
        self.frames_per_mode[r.mode] += 1
        self.reduced_scale += r.scale < 1.0
        previous = self.camera_mode.get(r.camera)
        if previous is not None and r.mode != previous:
            self.switches += 1  # counted per camera: two cameras in different modes do not "switch"
        self.camera_mode[r.camera] = r.mode
        self.last_mode, self.last_reason = r.mode, r.reason
        if r.timing_ms["e2e"] > budget_ms:
            self.over_budget += 1
            if self.over_budget_since_ns is None:
                self.over_budget_since_ns = now_ns
        else:
            self.over_budget_since_ns = None

    def percentiles(self, stage: str) -> dict[str, float | None]:
        return percentiles(self.stages[stage])


def batch_hold_until(ready: list[CameraState], cams: list[CameraState], now: int, window_ms: float,
                     max_batch: int) -> int | None:
    """The batching window: until when (steady clock) to hold the ready frames, or None to run now.

    Hold for cameras due within ``window_ms`` of the first ready frame that have waited longer for
    service than some ready one, so that phase-locked cameras share a batch (and the fair
    shedding) instead of the first one after an idle engine always running alone.
    """
    if not ready or window_ms <= 0 or len(ready) >= max_batch:
        return None
    end = min(c.pending.arrived_ns for c in ready if c.pending is not None) + int(window_ms * 1e6)
    served = max(c.last_served_ns for c in ready)
    due = [t for c in cams if c.pending is None and c.last_served_ns < served and (t := c.next_arrival_ns()) is not None]
    soon = [t for t in due if now < t <= end]
    return min(end, max(soon)) if soon else None


def build_stats(cams: dict[str, CameraState], s: RollingStats, cfg: Any, now: int, worker: WorkerStats) -> PipelineStats:
    """The statistics snapshot at ``now`` (steady clock) from the pipeline's state (under its lock)."""
    worst = max((c.visibility for c in cams.values() if c.visibility is not None),
                key=lambda v: v.degradation, default=None)  # fmt: skip
    return PipelineStats(
        cameras={name: c.snapshot(now, cfg.stale_after_s) for name, c in cams.items()},
        worker=worker,
        precision=PrecisionStats(s.last_mode, s.last_reason, cfg.precision_mode, dict(s.frames_per_mode), s.switches,
                                 s.reduced_scale),
        latency=LatencySnapshot(
            e2e_ms=s.percentiles("e2e"),
            stages_ms={st: s.percentiles(st)["p50"] for st in RollingStats.STAGES if st != "e2e"},
            budget_ms=cfg.latency_budget_ms,
            over_budget=s.over_budget,
            misses=sum(c.misses for c in cams.values()),
            over_budget_for_s=round((now - s.over_budget_since_ns) / NS, 2) if s.over_budget_since_ns is not None else None,
        ),
        visibility=VisibilitySnapshot(
            degradation=round(worst.degradation, 3) if worst else None,
            label=worst.label if worst else None,
            scores={k: round(v, 3) for k, v in worst.scores.items()} if worst else {},
            external_age_s=worst.external_age_s if worst else None,
        ),
    )


def world_step(world: Any, camera: str, stamp_ns: int, dets: Detections, publish_threshold: float,
               steady_ns: Callable[[], int], on_error: Callable[[BaseException], None],
               image_hw: tuple[int, int] | None = None) -> tuple[Detections, Any, list[int] | None, float]:
    """One frame's detections through the world stage (ground projection + tracking), timed.

    Returns the 2D output (scores >= ``publish_threshold``: the engine may decode lower for the
    tracker's second pass), the world result (None without a stage or a geometry for the camera),
    the track id of each 2D detection, and the stage's time in ms. A failing stage is reported
    through ``on_error`` and the detections still go out.
    """
    result, ids, t0 = None, None, steady_ns()
    if world is not None:
        try:
            result = world.process(camera, stamp_ns, dets, image_hw)
        except Exception as exc:
            on_error(exc)
    ms = (steady_ns() - t0) / 1e6
    keep = dets.scores >= publish_threshold
    if result is not None:
        ids = [int(i) for i in np.asarray(result.track_ids, np.int64)[keep]]
    return (dets if bool(keep.all()) else dets.filter(keep)), result, ids, ms

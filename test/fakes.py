"""Test doubles shared by the governor, pipeline and diagnostics tests (one set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dpa_perception.core.input_shape import Rung
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.core.types import BatchResult, Detections, StageTiming
from dpa_perception.core.visibility import VisibilityReport

MS = 1_000_000  # nanoseconds per millisecond


class FakeClock:
    """Nanoseconds that only move when told to (by the test or by a fake engine)."""

    def __init__(self, start_ns: int = 1_000_000 * MS):
        self.t = start_ns

    def __call__(self) -> int:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += round(ms * MS)


class FakeEngine:
    """Each call costs ``pre + fixed + per_frame * n + post`` ms of fake-clock time; one box per frame."""

    def __init__(self, clock: FakeClock | None, fixed_ms: float = 2.0, per_frame_ms: float = 4.0,
                 pre_ms: float = 1.0, post_ms: float = 0.5):
        self.clock = clock
        self.fixed_ms, self.per_frame_ms, self.pre_ms, self.post_ms = fixed_ms, per_frame_ms, pre_ms, post_ms
        self.calls: list[tuple[str, int, str]] = []
        self.frames_seen: list[int] = []

    def supports(self, input_shape: str) -> bool:
        return input_shape in ("square", "rect")

    def infer(self, frames: Sequence[np.ndarray], mode: str, input_shape: str = "square", scale: float = 1.0) -> BatchResult:
        n = len(frames)
        inf = self.fixed_ms + self.per_frame_ms * n
        self.calls.append((mode, n, input_shape))
        self.frames_seen += [int(f[0, 0, 1]) for f in frames]
        if self.clock is not None:
            self.clock.advance_ms((self.pre_ms + self.post_ms) * n + inf)
        dets = [Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32), np.array([2], np.int64))
                for _ in frames]
        return BatchResult(dets, mode, StageTiming(self.pre_ms * n, inf, self.post_ms * n))  # type: ignore[arg-type]


class FakeVisibility:
    """Degradation = pixel [0, 0, 0] / 100."""

    def __init__(self) -> None:
        self.calls = 0

    def estimate(self, img: np.ndarray, now_s: float | None = None) -> VisibilityReport:
        self.calls += 1
        d = float(img[0, 0, 0]) / 100.0
        return VisibilityReport(d, 0.0, 0.0, 0.0, 0.0, d, "fog" if d >= 0.5 else "clear")


def frame(degradation: float = 0.1, tag: int = 0) -> np.ndarray:
    """An 8x8 frame; channel 0 carries the degradation, channel 1 a tag the fake engine records."""
    f = np.zeros((8, 8, 3), np.uint8)
    f[..., 0] = round(degradation * 100)
    f[..., 1] = tag
    return f


class CostEngine:
    """``infer`` costs ``fixed + per_frame * n`` ms of fake-clock time, per mode; records (mode, n) per call."""

    def __init__(self, clock: FakeClock | None, cost: dict[str, tuple[float, float]] | None = None,
                 pre_ms: float = 0.0, post_ms: float = 0.0):
        self.clock = clock
        self.cost = cost or {"int8": (1.0, 2.0), "high": (1.0, 4.0)}
        self.pre_ms, self.post_ms = pre_ms, post_ms
        self.calls: list[tuple[str, int]] = []
        # called for every millisecond of simulated inference: cameras keep delivering frames meanwhile
        self.tick: Callable[[], None] | None = None

    def supports(self, input_shape: str) -> bool:
        return input_shape == "square"

    def infer(self, frames: Sequence[np.ndarray], mode: str, input_shape: str = "square", scale: float = 1.0) -> BatchResult:
        fixed, per = self.cost[mode]
        inf = fixed + per * len(frames)
        self.calls.append((mode, len(frames)))
        if self.clock is not None:
            total = self.pre_ms + inf + self.post_ms
            if self.tick is None:
                self.clock.advance_ms(total)
            else:
                end = self.clock.t + round(total * MS)
                while self.clock.t < end:
                    self.clock.t = min(end, self.clock.t + MS)
                    self.tick()
        return BatchResult([Detections.empty() for _ in frames], mode,  # type: ignore[arg-type]
                           StageTiming(self.pre_ms, inf, self.post_ms))


def make_pipeline(clock: FakeClock, engine: CostEngine, **cfg) -> Pipeline:
    cfg.setdefault("visibility_every_n", 1)  # the fake visibility is per frame; the cadence has its own tests
    return Pipeline(engine, PipelineConfig(**cfg), clock_ns=clock, visibility=FakeVisibility())  # type: ignore[arg-type]


class TimedEngine:
    """Just enough engine for core.pipeline: empty detections; each call advances the clock by ``infer_ms``."""

    def __init__(self, now: list[int]):
        self.now = now
        self.infer_ms = 5.0

    def supports(self, input_shape: str) -> bool:
        return True

    def infer(self, frames: Sequence[np.ndarray], mode: str, input_shape: str = "square", scale: float = 1.0) -> BatchResult:
        self.now[0] += int(self.infer_ms * 1e6)
        timing = StageTiming(1.0, self.infer_ms, 1.0)
        return BatchResult([Detections.empty() for _ in frames], mode, timing)  # type: ignore[arg-type]


class LadderEngine(CostEngine):
    """A CostEngine with dynamic H/W and a measured shape ladder: a call at input scale ``s`` costs the
    full-size cost divided by the rung's ``speedup``; records (mode, n, scale) per call in ``lanes``."""

    def __init__(self, clock: FakeClock | None, cost: dict[str, tuple[float, float]], rungs: Sequence[Rung]):
        super().__init__(clock, cost)
        self.rungs = tuple(rungs)
        self.lanes: list[tuple[str, int, float]] = []

    def ladder_rungs(self, input_shape: str) -> tuple[Rung, ...]:
        return self.rungs

    def infer(self, frames: Sequence[np.ndarray], mode: str, input_shape: str = "square",
              scale: float = 1.0) -> BatchResult:
        self.lanes.append((mode, len(frames), scale))
        if scale == 1.0:
            return super().infer(frames, mode, input_shape)
        speedup = next(r.speedup for r in self.rungs if r.scale == scale)
        full = self.cost[mode]
        self.cost = {**self.cost, mode: (full[0] / speedup, full[1] / speedup)}
        try:
            return super().infer(frames, mode, input_shape)
        finally:
            self.cost = {**self.cost, mode: full}

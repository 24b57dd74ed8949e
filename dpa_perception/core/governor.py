"""PrecisionGovernor: choose INT8 or high precision per frame from visibility and the latency budget,
and under latency pressure a reduced input scale the build measured (the shape ladder)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from dpa_perception.core import node_params as P
from dpa_perception.core.input_shape import Rung
from dpa_perception.core.types import MODES, Mode


@dataclass
class GovernorConfig:
    """Policy settings; all of them are safe to change while running.

    Defaults and ranges are the node parameter table's (:mod:`dpa_perception.core.node_params`).
    """

    precision_mode: str = P.default("precision_mode")  # auto | int8 | high
    latency_budget_ms: float = P.default("latency_budget_ms")
    safety_margin_ms: float = P.default("safety_margin_ms")
    enter_high_threshold: float = P.default("enter_high_threshold")  # degradation that calls for high precision
    leave_high_threshold: float = P.default("leave_high_threshold")  # ... and the level to fall under to leave it
    min_dwell_frames: int = P.default("min_dwell_frames")  # frames a visibility-driven choice is held
    budget_fallback: str = P.default("budget_fallback")  # when high does not fit and INT8 is not faster: shed | high
    scale_ladder: bool = P.default("scale_ladder")  # may step down to a measured reduced input scale under pressure
    scale_min_agreement: float = P.default("scale_min_agreement")  # least measured F1 of a rung it may use

    def validate(self) -> None:
        P.check_fields(self)


Lane = tuple[Mode, float]  # (mode, input scale): what one engine call runs


class LatencyModel:
    """Per-lane (mode and input scale) inference latency learned from measurements: ``fixed + per_frame * batch``.

    Fitted by least squares over a recent window of calls; the prediction adds the spread of
    the residuals so the governor plans on a high percentile rather than the mean.
    """

    def __init__(self, window: int = 64, min_samples: int = 3):
        self.min_samples = min_samples
        self.window = window
        self._obs: dict[Lane, deque[tuple[int, float]]] = {(m, 1.0): deque(maxlen=window) for m in MODES}
        self._fit: dict[Lane, tuple[float, float, float] | None] = {}

    def observe(self, mode: Mode, batch: int, ms: float, scale: float = 1.0) -> None:
        lane = (mode, scale)
        obs = self._obs.setdefault(lane, deque(maxlen=self.window))
        c = self._coefficients(lane)
        if c is not None:
            typical = c[0] + c[1] * batch
            if abs(ms - typical) > max(3.0 * c[2], 0.5 * typical):
                # a regime change (machine load, clocks, thermal): forget the old samples
                obs.clear()
        obs.append((batch, ms))
        self._fit[lane] = None

    def samples(self, mode: Mode, scale: float = 1.0) -> int:
        return len(self._obs.get((mode, scale), ()))

    def _coefficients(self, lane: Lane) -> tuple[float, float, float] | None:
        obs = self._obs.get(lane, ())
        if self._fit.get(lane) is None and len(obs) >= self.min_samples:
            b = np.array([o[0] for o in obs], np.float64)
            t = np.array([o[1] for o in obs], np.float64)
            if np.ptp(b) > 0:
                per, fixed = np.polyfit(b, t, 1)
                per, fixed = max(per, 0.0), max(fixed, 0.0)
            else:  # one batch size seen: assume cost proportional to the batch
                per, fixed = float(np.mean(t / b)), 0.0
            resid = t - (fixed + per * b)
            spread = float(np.percentile(np.abs(resid), 90)) if len(resid) > 2 else 0.0
            self._fit[lane] = (float(fixed), float(per), spread)
        return self._fit.get(lane)

    def predict(self, mode: Mode, batch: int, scale: float = 1.0) -> float | None:
        """Planned inference milliseconds for ``batch`` frames, or None before enough samples."""
        c = self._coefficients((mode, scale))
        if c is None:
            return None
        fixed, per, spread = c
        return fixed + per * batch + spread


@dataclass
class Decision:
    mode: Mode | None  # None: shed (the frame is dropped, a predicted deadline miss)
    # forced | visibility | clear | warming_up | probe | budget (INT8: faster and fits) |
    # budget_shed / budget_high (nothing faster fits: dropped, or run in high precision by policy) |
    # int8_does_not_pay (auto on an engine whose INT8 file the build measured no faster: high always) |
    # budget_scale (the full-size input does not fit: a reduced input scale the build measured does)
    reason: str
    predicted_ms: float | None = None
    scale: float = 1.0  # input scale of the frame's canvas (below 1: a rung of the shape ladder)


class CameraPolicy:
    """Visibility hysteresis of one camera: which mode it wants, held for a minimum dwell."""

    def __init__(self) -> None:
        self.poor = False
        self.since_switch = 10**9

    def wanted(self, degradation: float, cfg: GovernorConfig) -> tuple[Mode, str]:
        self.since_switch += 1
        if self.since_switch >= cfg.min_dwell_frames:
            if not self.poor and degradation >= cfg.enter_high_threshold:
                self.poor, self.since_switch = True, 0
            elif self.poor and degradation <= cfg.leave_high_threshold:
                self.poor, self.since_switch = False, 0
        return ("high", "visibility") if self.poor else ("int8", "clear")


class PrecisionGovernor:
    """Decides the mode of each frame; shares one latency model across cameras.

    In ``auto``: INT8 when visibility is good, high precision when degradation passes the enter
    threshold (hysteresis and dwell keep it from flapping), but never a mode whose predicted
    completion (frame age + predicted inference for the batch + post-processing) overruns the
    budget minus the safety margin.
    """

    def __init__(self, config: GovernorConfig | None = None, model: LatencyModel | None = None, reprobe_every: int = 100):
        self.config = config or GovernorConfig()
        self.config.validate()
        self.model = model or LatencyModel()
        # After this many budget fallbacks, run one young frame in high precision to re-measure it:
        # without new samples a once-slow high variant would be predicted slow forever.
        self.reprobe_every = reprobe_every
        self._fallbacks_since_probe = 0
        self.post_ms = 2.0  # running estimate of pre- + post-processing per frame
        self._cameras: dict[str, CameraPolicy] = {}
        self._lock = threading.RLock()  # several inference workers decide and observe at once
        # False when the engine's build measured INT8 no faster (the manifest's verdict): auto then
        # runs high precision in every condition and never falls back to INT8 for budget
        self.int8_pays = True
        # the reduced input scales the engine's build measured for the input shape in use (the shape
        # ladder), largest first; empty: the engine has none (fixed H/W, or an older build)
        self.rungs: tuple[Rung, ...] = ()

    def observe(self, mode: Mode, batch: int, inference_ms: float, other_ms: float, scale: float = 1.0) -> None:
        """Feed back one measured call (inference time, and pre+post time per frame)."""
        with self._lock:
            self.model.observe(mode, batch, inference_ms, scale)
            self.post_ms = 0.8 * self.post_ms + 0.2 * other_ms

    def predict(self, mode: Mode, batch: int, scale: float = 1.0) -> float | None:
        """Planned inference ms of a lane: learned once it has run, else (a rung not run yet) the full-size
        prediction divided by the speed-up the build measured for that rung."""
        with self._lock:
            pred = self.model.predict(mode, batch, scale)
            if pred is not None or scale == 1.0:
                return pred
            full = self.model.predict(mode, batch)
        rung = next((r for r in self.rungs if r.scale == scale), None)
        return None if full is None or rung is None else full / rung.speedup

    def fits(self, mode: Mode, batch: int, age_ms: float, scale: float = 1.0) -> tuple[bool, float | None]:
        pred = self.predict(mode, batch, scale)
        if pred is None:
            return True, None
        limit = self.config.latency_budget_ms - self.config.safety_margin_ms
        return age_ms + pred + self.post_ms * batch <= limit, pred

    def usable_rungs(self) -> tuple[Rung, ...]:
        """The rungs auto may step down to now: the ladder on, and measured agreement high enough;
        most accurate (highest measured F1) first."""
        cfg = self.config
        if not cfg.scale_ladder or cfg.precision_mode != "auto":
            return ()
        return tuple(sorted((r for r in self.rungs if r.f1 >= cfg.scale_min_agreement), key=lambda r: -r.f1))

    def fastest_mode(self) -> Mode:
        """The fastest mode a frame may run in under the current setting (what shedding plans with)."""
        mode = self.config.precision_mode
        if mode == "high" or (mode == "auto" and not self.int8_pays):
            return "high"
        return "int8"

    def fastest_lane(self) -> Lane:
        """The fastest mode, at the smallest input scale auto may step down to (what shedding plans with)."""
        scales = [r.scale for r in self.usable_rungs()]
        return self.fastest_mode(), min(scales, default=1.0)

    def decide(self, camera: str, degradation: float, age_ms: float, batch: int) -> Decision:
        """Mode for a frame of ``camera`` that is ``age_ms`` old, run in a batch of ``batch``."""
        with self._lock:
            return self._decide(camera, degradation, age_ms, batch)

    def _decide(self, camera: str, degradation: float, age_ms: float, batch: int) -> Decision:
        cfg = self.config
        policy = self._cameras.setdefault(camera, CameraPolicy())
        if cfg.precision_mode in MODES:
            mode: Mode = "int8" if cfg.precision_mode == "int8" else "high"
            d = Decision(mode, "forced", self.model.predict(mode, batch))
        else:
            mode, reason = policy.wanted(degradation, cfg)
            if not self.int8_pays:
                mode, reason = "high", "int8_does_not_pay"
            if mode == "high":
                if self.int8_pays and self.model.samples("high") < self.model.min_samples:
                    reason = "warming_up"
                ok, pred = self.fits("high", batch, age_ms)
                if not ok:
                    return self._budget_fallback(age_ms, batch, pred)
            else:
                pred = self.model.predict("int8", batch)
            d = Decision(mode, reason, pred)
        return d

    def _budget_fallback(self, age_ms: float, batch: int, high_ms: float | None) -> Decision:
        """High precision does not fit: INT8 only if it is predicted to fit and to be faster (never
        accuracy traded for nothing); else a reduced input scale the build measured (most accurate
        rung first) if predicted to fit and be faster; else shed the frame or run it in high precision,
        by policy.
        Now and then a young frame runs in high precision to re-measure it (a once-slow variant
        would otherwise be predicted slow forever)."""
        cfg = self.config
        self._fallbacks_since_probe += 1
        young = age_ms < cfg.latency_budget_ms / 4
        if self._fallbacks_since_probe >= self.reprobe_every and young and batch == 1:
            self._fallbacks_since_probe = 0
            return Decision("high", "probe", high_ms)
        ok, int8_ms = self.fits("int8", batch, age_ms)
        if self.int8_pays and ok and (int8_ms is None or high_ms is None or int8_ms < high_ms):
            return Decision("int8", "budget", int8_ms)
        modes: tuple[Mode, ...] = ("high", "int8") if self.int8_pays else ("high",)
        for rung in self.usable_rungs():  # most accurate first; high precision before INT8 on each
            for mode in modes:
                ok, ms = self.fits(mode, batch, age_ms, rung.scale)
                if ok and ms is not None and (high_ms is None or ms < high_ms):
                    return Decision(mode, "budget_scale", ms, rung.scale)
        if cfg.budget_fallback == "high":
            return Decision("high", "budget_high", high_ms)
        return Decision(None, "budget_shed", None)

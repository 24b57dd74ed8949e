"""The perception pipeline shared by the ROS node and the rosbag replay.

One newest-frame slot per camera, one inference worker that batches the ready frames of all
cameras (fair, least recently served first), a precision decision per frame, stale frames
dropped by age, and rolling statistics for diagnostics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import numpy as np

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError, DpaError, ImageError
from dpa_perception.core.governor import GovernorConfig, PrecisionGovernor
from dpa_perception.core.image_codec import decode_message
from dpa_perception.core.pipeline_state import CameraState as _Camera
from dpa_perception.core.pipeline_state import FrameResult, Pending, RollingStats, stamp_loss
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.stats import LatencySnapshot, PipelineStats, PrecisionStats, VisibilitySnapshot, WorkerStats
from dpa_perception.core.types import MODES, NS_PER_S, BatchResult, Mode
from dpa_perception.core.visibility import VisibilityEstimator, VisibilityReport

__all__ = ["FrameResult", "InferenceEngine", "Pipeline", "PipelineConfig", "RollingStats", "stamp_loss"]

NS = NS_PER_S


@dataclass
class PipelineConfig(GovernorConfig):
    """Governor policy plus scheduling settings (``max_batch`` and ``input_shape`` are structural).

    Defaults and ranges come from the node's parameter table (:mod:`dpa_perception.core.node_params`).
    """

    max_batch: int = P.default("max_batch")
    input_shape: str = P.default("input_shape")
    visibility_every_n: int = P.default("visibility_every_n")
    stamp_trust_s: float = P.default("stamp_trust_s")
    stale_after_s: float = 2.0  # a camera with no frame for this long is reported stale

    STRUCTURAL = ("max_batch", "input_shape")

    def validate(self) -> None:
        super().validate()
        if self.stale_after_s <= 0:
            raise ConfigError("stale_after_s must be positive")


class InferenceEngine(Protocol):
    """What the pipeline needs of an engine (DualModeEngine, a TensorRT one, a test fake)."""

    decode: DecodeConfig

    def supports(self, input_shape: str) -> bool: ...

    def infer(self, frames: Sequence[np.ndarray], mode: Mode, input_shape: str = "square") -> BatchResult: ...


class Pipeline:
    """Frames in (``submit``), results out (``step`` or the worker's callback).

    ``clock_ns`` gives "now" in the time base of the frame stamps (ROS time in the node, bag
    time in the replay). A frame's age (end-to-end latency from its capture stamp) is its age on
    that clock when it arrives plus the time since on ``steady_ns`` (default: ``clock_ns``), so
    ages stay continuous and never negative even when ``clock_ns`` is a coarse simulated /clock.
    """

    def __init__(
        self,
        engine: InferenceEngine,
        config: PipelineConfig | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        visibility: VisibilityEstimator | None = None,
        steady_ns: Callable[[], int] | None = None,
    ):
        self.config = config or PipelineConfig()
        self.config.validate()
        if not engine.supports(self.config.input_shape):
            raise ConfigError(f"the engine does not support input_shape {self.config.input_shape!r}")
        self.engine = engine
        self.clock_ns = clock_ns
        self.steady_ns = steady_ns or clock_ns
        self.visibility = visibility or VisibilityEstimator()
        self.governor = PrecisionGovernor(self.config)
        self.stats_window = RollingStats()
        self._cams: dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dropped: list[FrameResult] = []
        self._worker: threading.Thread | None = None
        self._running = False
        self.worker_errors = 0
        self.last_worker_error = ""
        self._busy = False  # the worker is inside step()
        self._weather_visibility: float | None = None
        self._weather_precipitation = False
        self._seed_latency_model()

    # ------------------------------------------------------------------ inputs

    def _seed_latency_model(self) -> None:
        """Measured warm-up calls, so the first decisions rest on this machine's numbers."""
        stats = getattr(self.engine, "stats", None)
        if stats is None:
            return
        for m in MODES:
            for ms in list(stats[m].per_frame_ms)[-self.governor.model.min_samples :]:
                self.governor.model.observe(m, 1, ms)

    def add_camera(self, camera: str) -> None:
        with self._lock:
            self._cams.setdefault(camera, _Camera(camera))

    def submit(self, camera: str, frame: np.ndarray, stamp_ns: int, meta: Any = None, decode_ms: float = 0.0,
               keep_frame: bool = False) -> None:
        """Put ``frame`` in ``camera``'s slot; an older unprocessed frame there is dropped (replaced)."""
        age = self.clock_ns() - stamp_ns
        now = self.steady_ns()
        trusted = abs(age) <= self.config.stamp_trust_s * NS
        with self._lock:
            cam = self._cams.setdefault(camera, _Camera(camera))
            cam.received += 1
            cam.arrivals.append(now)
            if trusted:
                cam.stamps.append(stamp_ns)
                cam.future_stamps += age < 0
            else:  # stamp 0, an unsynchronised camera clock: not a capture time; age from the arrival
                cam.untrusted_stamps += 1
                age = 0
            cam.last_arrival_ns, cam.last_age_ns = now, max(0, age)
            if cam.pending is not None:
                old = cam.pending
                cam.dropped += 1
                self._dropped.append(FrameResult(camera, old.stamp_ns, old.meta, "dropped", None, "replaced"))
            cam.pending = Pending(frame, stamp_ns, meta, decode_ms, now, max(0, age), keep_frame)
            self._ready.notify()

    def report_input_error(self, camera: str, message: str, stamp_ns: int = 0, meta: Any = None) -> FrameResult:
        """Record a malformed input on ``camera`` (the camera stays served); its "rejected" result."""
        with self._lock:
            cam = self._cams.setdefault(camera, _Camera(camera))
            cam.received += 1
            cam.input_errors += 1
            cam.last_error = message
            cam.last_error_ns = self.steady_ns()
        return FrameResult(camera, stamp_ns, meta, "rejected", None, message)

    def submit_message(self, camera: str, msg: Any, compressed: bool, stamp_ns: int, meta: Any = None,
                       keep_frame: bool = False,
                       transform: Callable[[np.ndarray], np.ndarray] | None = None) -> FrameResult | None:
        """Decode a sensor_msgs Image/CompressedImage and submit it; a malformed one is rejected on its camera.

        The node and the replay both feed frames through here (the replay's ``transform`` adds
        synthetic weather to the decoded frame). Returns the "rejected" result, or None.
        """
        t0 = time.perf_counter()
        try:
            frame = decode_message(msg, compressed)
            if transform is not None:
                frame = transform(frame)
        except DpaError as exc:
            return self.report_input_error(camera, str(exc), stamp_ns, meta)
        except Exception as exc:  # anything else a broken payload can raise (cv2.error...)
            return self.report_input_error(camera, f"{type(exc).__name__}: {exc}", stamp_ns, meta)
        self.submit(camera, frame, stamp_ns, meta, (time.perf_counter() - t0) * 1e3, keep_frame)
        return None

    def report_weather(self, visibility_m: float | None = None, precipitation: bool | None = None) -> None:
        """Merge a partial external weather report (a road weather station) into the last one.

        Visibility NaN or negative means "unknown" (as the node's weather topic documents); a field
        not given keeps its last value. Stamped on ``clock_ns``, the clock visibility is estimated on.
        """
        with self._lock:
            if visibility_m is not None:
                v = float(visibility_m)
                self._weather_visibility = v if math.isfinite(v) and v >= 0.0 else None
            if precipitation is not None:
                self._weather_precipitation = bool(precipitation)
            vis, rain = self._weather_visibility, self._weather_precipitation
        self.visibility.set_external(vis, rain, self.clock_ns() / NS)

    def set_decode(self, decode: DecodeConfig) -> None:
        """Swap the engine's decode settings (validated first; the worker reads one object per batch)."""
        decode.validate()
        with self._lock:
            self.engine.decode = decode

    def update(self, **changes: Any) -> None:
        """Change live-safe settings (validated as a whole; nothing changes on error)."""
        names = {f.name for f in fields(PipelineConfig)}
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ConfigError(f"unknown pipeline setting(s): {', '.join(unknown)}")
        structural = [k for k in changes if k in PipelineConfig.STRUCTURAL and changes[k] != getattr(self.config, k)]
        if structural:
            raise ConfigError(f"{', '.join(structural)} can only change through reconfigure")
        with self._lock:
            new = replace(self.config, **changes)
            new.validate()
            self.config = new  # swapped whole: a scheduling round works from one consistent config

    # ------------------------------------------------------------------ processing

    def _take_batch(self, now: int, cfg: PipelineConfig) -> tuple[list[tuple[_Camera, Pending]], list[FrameResult]]:
        """Under the lock: pop ready frames, fairest first, dropping those already too old."""
        budget_ns = cfg.latency_budget_ms * 1e6
        dropped = self._dropped
        self._dropped = []
        ready = []
        for cam in self._cams.values():
            p = cam.pending
            if p is None:
                continue
            if p.age_ns(now) > budget_ns:
                cam.pending = None
                cam.dropped += 1
                cam.misses += 1
                dropped.append(FrameResult(cam.name, p.stamp_ns, p.meta, "dropped", None, "stale"))
                continue
            ready.append(cam)
        ready.sort(key=lambda c: c.last_served_ns)
        taken = []
        for cam in ready[: cfg.max_batch]:
            assert cam.pending is not None
            taken.append((cam, cam.pending))
            cam.pending = None
        return taken, dropped

    def _shed(self, batch: list[tuple[_Camera, Pending]], now: int,
              cfg: PipelineConfig) -> tuple[list[tuple[_Camera, Pending]], list[FrameResult]]:
        """Fit the batch into the budget even in INT8.

        Frames of the most recently served cameras go back to their slots first (fair shedding);
        a frame that waited so long that it cannot finish within the budget even alone is dropped
        now as a predicted deadline miss rather than published late.
        """
        dropped: list[FrameResult] = []
        while batch:
            oldest_ms = max(p.age_ns(now) / 1e6 for _, p in batch)
            ok, pred = self.governor.fits("int8", len(batch), oldest_ms)
            if ok:
                break
            if len(batch) > 1:
                cam, p = max(batch, key=lambda cp: cp[0].last_served_ns)
                batch.remove((cam, p))
                with self._lock:
                    if cam.pending is None:  # no newer frame arrived meanwhile: it may still make it next round
                        cam.pending = p
                continue
            cam, p = batch[0]
            budget = cfg.latency_budget_ms
            cost = pred + self.governor.post_ms if pred is not None else 0.0
            # Drop only a frame that is late because it waited: when even a fresh frame cannot make
            # the budget (engine slower than the budget) keep publishing, late and counted.
            if pred is not None and oldest_ms + cost > budget and cost <= budget:
                batch = []
                with self._lock:
                    cam.dropped += 1
                    cam.misses += 1
                dropped.append(FrameResult(cam.name, p.stamp_ns, p.meta, "dropped", None, "late"))
            break
        return batch, dropped

    def step(self) -> list[FrameResult]:
        """Run one scheduling round: at most one batch per mode. Returns every frame it resolved."""
        now = self.steady_ns()
        with self._lock:
            cfg = self.config
            self.governor.config = cfg  # the governor decides on the same settings as the rest of the round
            batch, results = self._take_batch(now, cfg)
        batch, late = self._shed(batch, now, cfg)
        results += late
        if not batch:
            return results
        groups: dict[Mode, list[tuple[_Camera, Pending, VisibilityReport | None, str]]] = {m: [] for m in MODES}
        vis_ms = dict.fromkeys((id(p) for _, p in batch), 0.0)
        for cam, p in batch:
            vis = cam.visibility
            if vis is None or cam.frame_index % cfg.visibility_every_n == 0:
                t0 = time.perf_counter()
                try:
                    vis = self.visibility.estimate(p.frame, now_s=self.clock_ns() / NS)
                except ImageError:  # too small to assess: no evidence either way, detection still runs
                    vis = VisibilityReport.unknown()
                vis_ms[id(p)] = (time.perf_counter() - t0) * 1e3
                cam.visibility = vis
            cam.frame_index += 1
            age_ms = p.age_ns(now) / 1e6
            d = self.governor.decide(cam.name, vis.degradation, age_ms, len(batch))
            groups[d.mode].append((cam, p, vis, d.reason))
        for mode, items in groups.items():
            if not items:
                continue
            t_start = self.steady_ns()
            res = self.engine.infer([p.frame for _, p, _, _ in items], mode, cfg.input_shape)
            done = self.steady_ns()
            n = len(items)
            self.governor.observe(mode, n, res.timing.inference_ms, (res.timing.preprocess_ms + res.timing.postprocess_ms) / n)
            with self._lock:
                for (cam, p, vis, reason), dets in zip(items, res.detections):
                    timing = {
                        "queue_wait": round((t_start - p.arrived_ns) / 1e6, 3),
                        "decode": round(p.decode_ms, 3),
                        "visibility": round(vis_ms[id(p)], 3),
                        "preprocess": round(res.timing.preprocess_ms / n, 3),
                        "inference": round(res.timing.inference_ms / n, 3),
                        "postprocess": round(res.timing.postprocess_ms / n, 3),
                        "e2e": round(p.age_ns(done) / 1e6, 3),
                    }
                    r = FrameResult(cam.name, p.stamp_ns, p.meta, "processed", mode, reason, dets, timing, vis, n,
                                    p.frame if p.keep_frame else None)
                    cam.processed += 1
                    cam.last_served_ns = done
                    if timing["e2e"] > cfg.latency_budget_ms:
                        cam.misses += 1
                    self.stats_window.add(r, cfg.latency_budget_ms, done)
                    results.append(r)
        return results

    # ------------------------------------------------------------------ worker

    def start(self, on_result: Callable[[FrameResult], None]) -> None:
        """Start the inference worker; ``on_result`` is called on its thread for every resolved frame."""
        if self._worker is not None:
            return
        self._running = True

        def loop() -> None:
            while self._running:
                with self._lock:
                    if not self._has_pending():
                        self._ready.wait(timeout=0.1)
                    self._busy = True
                if not self._running:
                    break
                try:
                    for r in self.step():
                        on_result(r)
                except Exception as exc:  # one bad batch must not stop the worker for every camera
                    self.worker_errors += 1
                    self.last_worker_error = f"{type(exc).__name__}: {exc}"
                finally:
                    with self._lock:
                        self._busy = False
                        self._ready.notify_all()  # wakes drain()

        self._worker = threading.Thread(target=loop, name="dpa-inference", daemon=True)
        self._worker.start()

    def _has_pending(self) -> bool:
        return bool(self._dropped) or any(c.pending is not None for c in self._cams.values())

    def has_pending(self) -> bool:
        """Whether any frame waits in a slot (or a dropped one waits to be reported)."""
        with self._lock:
            return self._has_pending()

    def drain(self, timeout_s: float = 5.0) -> list[FrameResult]:
        """Resolve every frame still waiting in a slot.

        Without a worker: step until none is left and return the results. With the worker running:
        wait (at most ``timeout_s``) until it has resolved them (its callback gets the results) and
        return an empty list.
        """
        if self._worker is None:
            out: list[FrameResult] = []
            while True:
                with self._lock:
                    if not self._has_pending():
                        return out
                out += self.step()
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while (self._busy or self._has_pending()) and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(timeout=min(left, 0.1))
        return []

    def stop(self) -> None:
        self._running = False
        with self._lock:
            self._ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    # ------------------------------------------------------------------ statistics

    def stats(self) -> PipelineStats:
        """A snapshot of everything diagnostics report."""
        now = self.steady_ns()
        cfg = self.config
        with self._lock:
            cams = {}
            vis_reports = []
            for name, c in self._cams.items():
                cams[name] = c.snapshot(now, cfg.stale_after_s)
                if c.visibility is not None:
                    vis_reports.append(c.visibility)
            s = self.stats_window
            worst = max(vis_reports, key=lambda v: v.degradation, default=None)
            return PipelineStats(
                cameras=cams,
                worker=WorkerStats(self.worker_errors, self.last_worker_error),
                precision=PrecisionStats(s.last_mode, s.last_reason, cfg.precision_mode, dict(s.frames_per_mode),
                                         s.switches),
                latency=LatencySnapshot(
                    e2e_ms=s.percentiles("e2e"),
                    stages_ms={st: s.percentiles(st)["p50"] for st in RollingStats.STAGES if st != "e2e"},
                    budget_ms=cfg.latency_budget_ms,
                    over_budget=s.over_budget,
                    misses=sum(c.misses for c in self._cams.values()),
                    over_budget_for_s=round((now - s.over_budget_since_ns) / NS, 2)
                    if s.over_budget_since_ns is not None else None,
                ),
                visibility=VisibilitySnapshot(
                    degradation=round(worst.degradation, 3) if worst else None,
                    label=worst.label if worst else None,
                    scores={k: round(v, 3) for k, v in worst.scores.items()} if worst else {},
                    external_age_s=worst.external_age_s if worst else None,
                ),
            )

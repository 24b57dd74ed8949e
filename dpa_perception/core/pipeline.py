"""The perception pipeline shared by the ROS node and the rosbag replay.

One newest-frame slot per camera, one inference worker that batches the ready frames of all
cameras (fair, least recently served first), a precision decision per frame, stale frames
dropped by age, and rolling statistics for diagnostics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import numpy as np

from dpa_perception.core import pipeline_state
from dpa_perception.core.errors import ConfigError, DpaError, ImageError
from dpa_perception.core.governor import Lane, PrecisionGovernor
from dpa_perception.core.image_codec import Target, decode_frame
from dpa_perception.core.pipeline_config import InferenceEngine, PipelineConfig, WorldOutput
from dpa_perception.core.pipeline_state import CameraState as _Camera
from dpa_perception.core.pipeline_state import FrameResult, Pending, RollingStats, batch_hold_until, build_stats
from dpa_perception.core.pipeline_state import RoundItem as _Item
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.stats import PipelineStats, WorkerStats
from dpa_perception.core.types import MODES, NS_PER_S, Detections
from dpa_perception.core.visibility import VisibilityEstimator, VisibilityReport
from dpa_perception.core.worker import Worker

__all__ = ["FrameResult", "InferenceEngine", "Pipeline", "PipelineConfig", "RollingStats"]

NS = NS_PER_S
SKEW_FRAMES = 10  # frames of a camera all older than the budget on arrival before its stamps are distrusted


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
        decode_target: Target | None = None,
        world: WorldOutput | None = None,
    ):
        self.config = config or PipelineConfig()
        self.config.validate()
        if not engine.supports(self.config.input_shape):
            raise ConfigError(f"the engine does not support input_shape {self.config.input_shape!r}")
        self.engine = engine
        self.clock_ns = clock_ns
        self.steady_ns = steady_ns or clock_ns
        # JPEGs decoded at the largest reduction that still covers this size (the engine's letterbox)
        self.decode_target = decode_target
        self.visibility = visibility or VisibilityEstimator()
        # after the detector: ground projection + tracking; the 2D output keeps scores >= publish_threshold
        # (the engine may decode lower, for the tracker's second pass)
        self.world = world
        self.publish_threshold = 0.0
        self.governor = PrecisionGovernor(self.config)
        self.governor.int8_pays = bool(getattr(engine, "int8_pays", True))  # the engine build's verdict
        ladder = getattr(engine, "ladder_rungs", None)  # the reduced input scales its build measured
        self.governor.rungs = tuple(ladder(self.config.input_shape)) if callable(ladder) else ()
        self.stats_window = RollingStats()
        self._cams: dict[str, _Camera] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dropped: list[FrameResult] = []
        self.worker_errors = 0
        self.last_worker_error = ""
        self.hold_until_ns: int | None = None  # the batching window holds ready frames until then (steady clock)
        self._ctl = Worker(self)
        self._weather_visibility: float | None = None
        self._weather_precipitation = False
        self._seed_latency_model()

    # ------------------------------------------------------------------ inputs

    def _seed_latency_model(self) -> None:
        """Measured warm-up calls, so the first decisions rest on this machine's numbers; and one
        visibility estimate, so OpenCV's first-call set-up does not land on the first camera frame."""
        self._estimate(np.full((64, 64, 3), 128, np.uint8))
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
               keep_frame: bool = False, scale_xy: tuple[float, float] = (1.0, 1.0),
               visibility: tuple[VisibilityReport | None, float] | None = None) -> None:
        """Put ``frame`` in ``camera``'s slot; an older unprocessed frame there is dropped (replaced).

        ``scale_xy``: original pixels per ``frame`` pixel when it was decoded at reduced scale; the
        frame's detections are scaled back to the original. ``visibility``: (report or None when not
        due, milliseconds) estimated by the caller; else the worker estimates it."""
        age = self.clock_ns() - stamp_ns
        now = self.steady_ns()
        budget_ns = self.config.latency_budget_ms * 1e6
        # stamp 0, a camera clock far off, or ahead by more than the budget: not a capture time
        plausible = -budget_ns <= age <= self.config.stamp_trust_s * NS
        with self._lock:
            cam = self._cams.setdefault(camera, _Camera(camera))
            cam.received += 1
            cam.arrivals.append(now)
            cam.last_age_ns = max(0, age) if plausible else 0
            if plausible:
                cam.stamps.append(stamp_ns)
                cam.ages.append(max(0, age))
                cam.future_stamps += age < 0
            # every recent frame older than the budget on arrival: the camera clock is behind (or its
            # transport slower than the budget); aged from arrival, or the camera would never be served
            trusted = plausible and not (len(cam.ages) >= SKEW_FRAMES and min(cam.ages) > budget_ns)
            if not trusted:
                cam.untrusted_stamps += 1
                age = 0
            cam.last_arrival_ns = now
            if cam.pending is not None:
                old = cam.pending
                cam.dropped += 1
                self._dropped.append(FrameResult(camera, old.stamp_ns, old.meta, "dropped", None, "replaced"))
            vis, vis_ms = visibility or (None, 0.0)
            cam.pending = Pending(frame, stamp_ns, meta, decode_ms, now, max(0, age), keep_frame, scale_xy,
                                  visibility is not None, vis, vis_ms)  # fmt: skip
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
        try:  # a debug image or synthetic weather wants the full frame; else only what the letterbox keeps
            target = self.decode_target if not keep_frame and transform is None else None
            decoded = decode_frame(msg, compressed, self.config.limits, target)
            frame = decoded.image if transform is None else transform(decoded.image)
            decode_ms = (time.perf_counter() - t0) * 1e3
            visibility = self._visibility_at_submit(camera, frame)
        except DpaError as exc:
            return self.report_input_error(camera, str(exc), stamp_ns, meta)
        except Exception as exc:  # anything else a broken payload can raise (cv2.error...)
            return self.report_input_error(camera, f"{type(exc).__name__}: {exc}", stamp_ns, meta)
        self.submit(camera, frame, stamp_ns, meta, decode_ms, keep_frame, decoded.scale_xy, visibility)
        return None

    def _visibility_at_submit(self, camera: str, frame: np.ndarray) -> tuple[VisibilityReport | None, float]:
        """Visibility of a frame on the thread that decoded it (so it overlaps inference), every
        ``visibility_every_n``-th frame of the camera; (None, 0) when not due."""
        with self._lock:
            cam = self._cams.setdefault(camera, _Camera(camera))
            due = cam.visibility is None or cam.submit_index % self.config.visibility_every_n == 0
            cam.submit_index += 1
        if not due:
            return None, 0.0
        vis, ms = self._estimate(frame)
        with self._lock:
            cam.visibility = vis
        return vis, ms

    def _estimate(self, frame: np.ndarray) -> tuple[VisibilityReport, float]:
        """The visibility report of ``frame`` and the milliseconds it took."""
        t0 = time.perf_counter()
        try:
            vis = self.visibility.estimate(frame, now_s=self.clock_ns() / NS)
        except ImageError:  # too small to assess: no evidence either way, detection still runs
            vis = VisibilityReport.unknown()
        return vis, (time.perf_counter() - t0) * 1e3

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

    def _hold(self, ready: list[_Camera], now: int, cfg: PipelineConfig) -> bool:
        """Under the lock: the batching window (:func:`batch_hold_until`); sets :attr:`hold_until_ns`."""
        self.hold_until_ns = batch_hold_until(ready, list(self._cams.values()), now, cfg.batch_window_ms,
                                              cfg.max_batch)  # fmt: skip
        return self.hold_until_ns is not None

    def _take_batch(self, now: int, cfg: PipelineConfig,
                    force: bool = False) -> tuple[list[tuple[_Camera, Pending]], list[FrameResult]]:
        """Under the lock: pop ready frames, fairest first, dropping those already too old."""
        budget_ns = cfg.latency_budget_ms * 1e6
        dropped = self._dropped
        self._dropped = []
        ready = []
        for cam in self._cams.values():
            p = cam.pending
            if p is None or cam.in_flight:  # one frame per camera in flight: its results stay in order
                continue
            if p.age_ns(now) > budget_ns:
                cam.pending = None
                cam.dropped += 1
                cam.misses += 1
                dropped.append(FrameResult(cam.name, p.stamp_ns, p.meta, "dropped", None, "stale"))
                continue
            ready.append(cam)
        if not force and self._hold(ready, now, cfg):
            return [], dropped
        ready.sort(key=lambda c: (c.last_served_ns, c.pending.arrived_ns if c.pending else 0))
        taken = []
        for cam in ready[: cfg.max_batch]:
            assert cam.pending is not None
            taken.append((cam, cam.pending))
            cam.pending = None
            cam.in_flight = True
        return taken, dropped

    def _shed(self, batch: list[tuple[_Camera, Pending]], now: int,
              cfg: PipelineConfig) -> tuple[list[tuple[_Camera, Pending]], list[FrameResult]]:
        """Fit the batch into the budget in the fastest mode it may run in (INT8 unless the setting
        or the engine's verdict rules it out).

        Frames of the most recently served cameras go back to their slots first (fair shedding);
        a frame that waited so long that it cannot finish within the budget even alone is dropped
        now as a predicted deadline miss rather than published late.
        """
        dropped: list[FrameResult] = []
        fastest, scale = self.governor.fastest_lane()
        while batch:
            oldest_ms = max(p.age_ns(now) / 1e6 for _, p in batch)
            ok, pred = self.governor.fits(fastest, len(batch), oldest_ms, scale)
            if ok:
                break
            if len(batch) > 1:
                cam, p = max(batch, key=lambda cp: (cp[0].last_served_ns, cp[1].arrived_ns))  # ties: the newest frame waits
                batch.remove((cam, p))
                with self._lock:
                    if cam.pending is None:  # no newer frame arrived meanwhile: it may still make it next round
                        cam.pending = p
                    else:  # a newer frame took the slot: this one is replaced, and counted
                        cam.dropped += 1
                        dropped.append(FrameResult(cam.name, p.stamp_ns, p.meta, "dropped", None, "replaced"))
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

    def step(self, force: bool = False) -> list[FrameResult]:
        """Run one scheduling round: at most one batch per mode. Returns every frame it resolved.

        A frame that fails anywhere (visibility, pre-processing, inference, post-processing) fails
        alone: it is rejected on its own camera and the other frames of the batch are processed.
        While the batching window holds (see :attr:`hold_until_ns`) it runs nothing; ``force``
        ignores the window (draining at the end).
        """
        now = self.steady_ns()
        with self._lock:
            cfg = self.config
            self.governor.config = cfg  # the governor decides on the same settings as the rest of the round
            batch, results = self._take_batch(now, cfg, force)
        taken = [cam for cam, _ in batch]
        try:
            return self._round(batch, results, now, cfg)
        finally:
            with self._lock:
                for cam in taken:
                    cam.in_flight = False
                self._ready.notify_all()  # another worker may take these cameras' next frames now

    def _round(self, batch: list[tuple[_Camera, Pending]], results: list[FrameResult], now: int,
               cfg: PipelineConfig) -> list[FrameResult]:
        batch, late = self._shed(batch, now, cfg)
        results += late
        if not batch:
            return results
        groups: dict[Lane, list[_Item]] = {(m, 1.0): [] for m in MODES}
        for cam, p in batch:
            try:
                vis, vis_ms = self._visibility(cam, p, cfg)
                d = self.governor.decide(cam.name, vis.degradation, p.age_ns(now) / 1e6, len(batch))
            except Exception as exc:  # this frame alone
                results.append(self._fail(cam, p, "visibility", exc))
                continue
            if d.mode is None:  # shed: no mode can make the budget, and the policy says drop
                with self._lock:
                    cam.dropped += 1
                    cam.misses += 1
                results.append(FrameResult(cam.name, p.stamp_ns, p.meta, "dropped", None, d.reason))
                continue
            groups.setdefault((d.mode, d.scale), []).append(_Item(cam, p, vis, d.reason, vis_ms))
        for lane, items in groups.items():
            if items:
                results += self._infer(lane, items, cfg)
        return results

    def _visibility(self, cam: _Camera, p: Pending, cfg: PipelineConfig) -> tuple[VisibilityReport, float]:
        if p.vis_at_submit:  # estimated where it was decoded (or not due: the camera's last report)
            known = p.vis or cam.visibility or VisibilityReport.unknown()
            cam.visibility = known
            cam.frame_index += 1
            return known, p.vis_ms
        vis, ms = cam.visibility, 0.0
        if vis is None or cam.frame_index % cfg.visibility_every_n == 0:
            vis, ms = self._estimate(p.frame)
            cam.visibility = vis
        cam.frame_index += 1
        return vis, ms

    def _infer(self, lane: Lane, items: list[_Item], cfg: PipelineConfig) -> list[FrameResult]:
        """One engine call for ``items``; if it fails, each frame again on its own, so a bad frame fails alone."""
        try:
            return self._run(lane, items, cfg)
        except Exception as exc:  # a failed engine call is an engine error (its diagnostic warns) ...
            self._worker_error(exc)
            if len(items) == 1:  # ... and the frame is rejected on its camera
                return [self._fail(items[0].cam, items[0].p, "inference", exc)]
        out: list[FrameResult] = []
        for it in items:
            try:
                out += self._run(lane, [it], cfg)
            except Exception as exc:
                self._worker_error(exc)
                out.append(self._fail(it.cam, it.p, "inference", exc))
        return out

    def _run(self, lane: Lane, items: list[_Item], cfg: PipelineConfig) -> list[FrameResult]:
        t_start = self.steady_ns()
        mode, scale = lane
        frames = [it.p.frame for it in items]
        res = self.engine.infer(frames, mode, cfg.input_shape, scale)
        n = len(items)
        if len(res.detections) != n:
            raise RuntimeError(f"the engine returned {len(res.detections)} results for {n} frames")
        self.governor.observe(mode, n, res.timing.inference_ms,
                              (res.timing.preprocess_ms + res.timing.postprocess_ms) / n, scale)
        worlds = [self._world(it, d) for it, d in zip(items, res.detections)]
        done = self.steady_ns()
        results = []
        with self._lock:
            for it, (dets, world, ids, world_ms) in zip(items, worlds):
                cam, p = it.cam, it.p
                timing = {
                    "queue_wait": round((t_start - p.arrived_ns) / 1e6, 3),
                    "decode": round(p.decode_ms, 3),
                    "visibility": round(it.vis_ms, 3),
                    "preprocess": round(res.timing.preprocess_ms / n, 3),
                    "inference": round(res.timing.inference_ms / n, 3),
                    "postprocess": round(res.timing.postprocess_ms / n, 3),
                    "world": round(world_ms, 3),
                    "e2e": round(p.age_ns(done) / 1e6, 3),
                }
                r = FrameResult(cam.name, p.stamp_ns, p.meta, "processed", mode, it.reason, dets, timing, it.vis, n,
                                p.frame if p.keep_frame else None, world, ids, it.hw, scale)
                cam.processed += 1
                cam.last_served_ns = done
                if timing["e2e"] > cfg.latency_budget_ms:
                    cam.misses += 1
                self.stats_window.add(r, cfg.latency_budget_ms, done)
                results.append(r)
        return results

    def _world(self, it: _Item, dets: Detections) -> tuple[Detections, Any, list[int] | None, float]:
        """Original-pixel detections through the world stage: (2D output, world result, track ids, ms)."""
        sx, sy = it.p.scale_xy
        if (sx, sy) != (1.0, 1.0):
            dets = dets.scaled(sx, sy)
        it.hw = (round(it.p.frame.shape[0] * sy), round(it.p.frame.shape[1] * sx))
        return pipeline_state.world_step(self.world, it.cam.name, it.p.stamp_ns, dets, self.publish_threshold,
                                         self.steady_ns, self._worker_error, it.hw)  # fmt: skip

    def _fail(self, cam: _Camera, p: Pending, stage: str, exc: Exception) -> FrameResult:
        """A frame that failed in processing: rejected on its camera, which goes to the back of the queue."""
        message = f"{stage} failed: {type(exc).__name__}: {exc}"
        with self._lock:
            cam.input_errors += 1
            cam.last_error = message
            cam.last_error_ns = cam.last_served_ns = self.steady_ns()
        return FrameResult(cam.name, p.stamp_ns, p.meta, "rejected", None, message)

    # ------------------------------------------------------------------ worker

    def start(self, on_result: Callable[[FrameResult], None]) -> None:
        """Start the inference worker (:class:`~dpa_perception.core.worker.Worker`); ``on_result`` is
        called on its thread for every resolved frame. Idempotent and thread-safe."""
        self._ctl.start(on_result)

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop the worker, waiting for the batch it runs (at most ``timeout_s``, default the
        ``worker_stop_timeout_s`` setting). False (and a worker error) when it could not finish in time."""
        return self._ctl.stop(self.config.worker_stop_timeout_s if timeout_s is None else timeout_s)

    worker_thread = property(lambda self: self._ctl.thread)

    def _worker_error(self, exc: BaseException) -> None:
        with self._lock:
            self.worker_errors += 1
            self.last_worker_error = f"{type(exc).__name__}: {exc}"

    def _has_pending(self) -> bool:  # a frame waits in a slot, or a dropped one waits to be reported
        return bool(self._dropped) or any(c.pending is not None for c in self._cams.values())

    def _has_ready(self) -> bool:
        """A frame a worker can take now (its camera has no frame in flight), or drops to report."""
        return bool(self._dropped) or any(c.pending is not None and not c.in_flight for c in self._cams.values())

    def has_pending(self) -> bool:
        with self._lock:
            return self._has_pending()

    def drain(self, timeout_s: float = 5.0) -> list[FrameResult]:
        """Resolve every frame still waiting in a slot.

        Without a worker: step until none is left and return the results. With the worker running:
        wait (at most ``timeout_s``) until it has resolved them (its callback gets the results) and
        return an empty list.
        """
        if not self._ctl.running:
            out: list[FrameResult] = []
            while True:
                with self._lock:
                    if not self._has_pending():
                        return out
                out += self.step(force=True)
        self._ctl.wait_idle(timeout_s)
        return []

    # ------------------------------------------------------------------ statistics

    def stats(self) -> PipelineStats:
        """A snapshot of everything diagnostics report."""
        now = self.steady_ns()
        with self._lock:
            return build_stats(self._cams, self.stats_window, self.config, now,
                               WorkerStats(self.worker_errors, self.last_worker_error))  # fmt: skip

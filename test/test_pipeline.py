"""Pipeline: newest-frame slots, batching across cameras, results and timing, camera states,
statistics, bounded memory, the worker thread, and auto precision with the real engine."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import MS, FakeClock, FakeEngine, FakeVisibility, frame

from dpa_perception.core.pipeline import FrameResult, Pipeline, PipelineConfig, RollingStats
from dpa_perception.inference.engine import DualModeEngine

TIMING_KEYS = {"queue_wait", "decode", "visibility", "preprocess", "inference", "postprocess", "world", "e2e"}


def make(clock: FakeClock | None = None, engine: FakeEngine | None = None, vis: FakeVisibility | None = None,
         **cfg) -> tuple[Pipeline, FakeClock, FakeEngine]:
    clock = clock or FakeClock()
    engine = engine or FakeEngine(clock)
    cfg.setdefault("visibility_every_n", 1)  # the fake visibility is per frame; the cadence has its own tests
    p = Pipeline(engine, PipelineConfig(**cfg), clock_ns=clock, visibility=vis or FakeVisibility())  # type: ignore[arg-type]
    return p, clock, engine


# ---------------------------------------------------------------------------- slots and batching


def test_newest_frame_slot_replaces_older_frames() -> None:
    p, clock, engine = make()
    for i in range(3):
        p.submit("cam", frame(tag=i + 1), clock(), meta=f"m{i}")
        clock.advance_ms(5)
    out = p.step()
    assert [(r.status, r.reason, r.meta) for r in out if r.status == "dropped"] == [
        ("dropped", "replaced", "m0"), ("dropped", "replaced", "m1")]
    processed = [r for r in out if r.status == "processed"]
    assert [r.meta for r in processed] == ["m2"]
    assert engine.frames_seen == [3], "only the newest frame is inferred"
    assert all(r.mode is None for r in out if r.status == "dropped")
    s = p.stats().to_dict()["cameras"]["cam"]
    assert (s["received"], s["processed"], s["dropped"], s["deadline_misses"]) == (3, 1, 2, 0)
    assert p.step() == []


def test_batches_ready_cameras_up_to_max_batch() -> None:
    p, clock, engine = make(max_batch=4)
    cams = [f"cam{i}" for i in range(6)]
    for i, c in enumerate(cams):
        p.submit(c, frame(tag=i), clock(), meta=c)
    first = p.step()
    assert engine.calls == [("int8", 4, "square")]
    assert len(first) == 4 and all(r.status == "processed" for r in first)
    second = p.step()
    assert engine.calls[1] == ("int8", 2, "square")
    assert sorted(r.camera for r in first + second) == cams
    assert p.step() == [] and len(engine.calls) == 2


def test_least_recently_served_camera_goes_first() -> None:
    p, clock, _engine = make(max_batch=1)
    for c in ("a", "b", "c"):
        p.submit(c, frame(), clock())
    order = [p.step()[0].camera for _ in range(3)]
    assert sorted(order) == ["a", "b", "c"]
    # all three resubmit: the one served longest ago goes first, and so on
    for c in ("c", "b", "a"):
        clock.advance_ms(1)
        p.submit(c, frame(), clock())
    assert [p.step()[0].camera for _ in range(3)] == order


def test_modes_are_split_into_one_batch_each() -> None:
    p, clock, engine = make(max_batch=4, min_dwell_frames=0)
    for i, d in enumerate((0.1, 0.9, 0.2, 0.8)):
        p.submit(f"cam{i}", frame(d), clock())
    out = p.step()
    assert sorted((m, n) for m, n, _ in engine.calls) == [("high", 2), ("int8", 2)]
    assert {r.camera: r.mode for r in out} == {"cam0": "int8", "cam1": "high", "cam2": "int8", "cam3": "high"}


def test_input_shape_is_passed_to_the_engine() -> None:
    p, clock, engine = make(input_shape="rect")
    p.submit("cam", frame(), clock())
    p.step()
    assert engine.calls == [("int8", 1, "rect")]


# ---------------------------------------------------------------------------- results and timing


def test_result_carries_meta_mode_reason_detections_and_timing() -> None:
    p, clock, _engine = make()
    stamp = clock() - 20 * MS  # captured 20 ms before it arrives
    meta = {"topic": "/cam/image_raw", "anything": object()}
    p.submit("cam", frame(0.1), stamp, meta=meta, decode_ms=1.25)
    clock.advance_ms(5)  # waits 5 ms in its slot
    (r,) = p.step()
    assert isinstance(r, FrameResult)
    assert r.meta is meta and r.camera == "cam" and r.stamp_ns == stamp
    assert (r.status, r.mode, r.reason) == ("processed", "int8", "clear")
    assert len(r.detections) == 1 and r.detections.class_ids.tolist() == [2]
    assert r.visibility is not None and r.visibility.degradation == pytest.approx(0.1)
    assert set(r.timing_ms) == TIMING_KEYS
    t = r.timing_ms
    assert t["queue_wait"] == pytest.approx(5.0)
    assert t["decode"] == pytest.approx(1.25)
    assert t["preprocess"] == pytest.approx(1.0)
    assert t["inference"] == pytest.approx(6.0)
    assert t["postprocess"] == pytest.approx(0.5)
    # e2e runs from the capture stamp to the end of the call on the pipeline's clock: 20 + 5 + 7.5
    assert t["e2e"] == pytest.approx(32.5)


def test_batch_timing_is_split_per_frame() -> None:
    p, clock, _engine = make(max_batch=4)
    for i in range(4):
        p.submit(f"cam{i}", frame(), clock())
    out = p.step()
    for r in out:
        assert r.timing_ms["inference"] == pytest.approx((2.0 + 4 * 4.0) / 4)
        assert r.timing_ms["preprocess"] == pytest.approx(1.0)
        assert r.timing_ms["e2e"] == pytest.approx(4 * 1.0 + 2.0 + 16.0 + 4 * 0.5)


def test_visibility_every_n_reuses_the_estimate() -> None:
    vis = FakeVisibility()
    p, clock, _ = make(vis=vis, visibility_every_n=3)
    vis.calls = 0  # the pipeline's own warm-up estimate at construction
    for _ in range(7):
        clock.advance_ms(10)
        p.submit("cam", frame(0.2), clock())
        (r,) = p.step()
        assert r.visibility is not None
    assert vis.calls == 3  # frames 0, 3 and 6


# ---------------------------------------------------------------------------- camera state


def test_input_error_makes_only_that_camera_rejecting() -> None:
    p, clock, _ = make()
    for c in ("bad", "good"):
        p.submit(c, frame(), clock())
    p.step()
    clock.advance_ms(10)
    p.report_input_error("bad", "truncated JPEG (no end-of-image marker)")
    cams = p.stats().to_dict()["cameras"]
    assert cams["bad"]["state"] == "rejecting"
    assert cams["bad"]["last_error"] == "truncated JPEG (no end-of-image marker)"
    assert cams["bad"]["input_errors"] == 1 and cams["bad"]["received"] == 2
    assert cams["good"]["state"] == "active" and cams["good"]["last_error"] == ""
    # a good frame afterwards makes it active again (the error stays recorded)
    clock.advance_ms(10)
    p.submit("bad", frame(), clock())
    cams = p.stats().to_dict()["cameras"]
    assert cams["bad"]["state"] == "active" and cams["bad"]["input_errors"] == 1


def test_camera_states_waiting_stale_and_error_only() -> None:
    p, clock, _ = make(stale_after_s=2.0)
    p.add_camera("silent")
    p.report_input_error("broken", "unsupported image encoding '16UC1'")
    p.submit("old", frame(), clock())
    p.step()
    clock.advance_ms(2_500)
    p.submit("live", frame(), clock())
    cams = p.stats().to_dict()["cameras"]
    assert cams["silent"]["state"] == "waiting"
    assert cams["broken"]["state"] == "rejecting"
    assert cams["old"]["state"] == "stale"
    assert cams["live"]["state"] == "active"


# ---------------------------------------------------------------------------- statistics


def test_stats_keys_and_values() -> None:
    p, clock, _ = make(min_dwell_frames=0)
    empty = p.stats().to_dict()
    assert set(empty) == {"cameras", "worker", "precision", "latency", "visibility"}
    assert empty["latency"]["e2e_ms"] == {"p50": None, "p95": None, "p99": None}
    assert empty["visibility"]["degradation"] is None
    start = clock()
    for i, d in enumerate((0.1, 0.1, 0.9, 0.9, 0.1)):
        clock.t = start + (i + 1) * 100 * MS  # 10 Hz arrivals
        p.submit("cam", frame(d), clock() - 10 * MS)
        p.step()
    s = p.stats().to_dict()
    cam = s["cameras"]["cam"]
    assert set(cam) >= {"state", "input_rate_hz", "stamp_age_ms", "received", "processed", "dropped",
                        "deadline_misses", "input_errors", "last_error"}
    assert cam["input_rate_hz"] == pytest.approx(10.0)
    assert cam["processed"] == 5
    prec = s["precision"]
    assert prec["frames_per_mode"] == {"int8": 3, "high": 2}
    assert prec["switches"] == 2 and prec["setting"] == "auto"
    assert (prec["mode"], prec["reason"]) == ("int8", "clear")
    lat = s["latency"]
    assert set(lat) >= {"e2e_ms", "stages_ms", "budget_ms", "over_budget", "misses", "over_budget_for_s"}
    assert set(lat["e2e_ms"]) == {"p50", "p95", "p99"}
    assert set(lat["stages_ms"]) == set(RollingStats.STAGES) - {"e2e"}
    assert lat["e2e_ms"]["p50"] is not None and lat["e2e_ms"]["p50"] > 10.0
    assert lat["over_budget"] == 0 and lat["misses"] == 0 and lat["over_budget_for_s"] is None
    vis = s["visibility"]
    assert set(vis) >= {"degradation", "label", "scores", "external_age_s"}
    assert vis["degradation"] == pytest.approx(0.1)


def test_switches_count_mode_changes_of_a_camera_not_interleaving() -> None:
    p, clock, _ = make(min_dwell_frames=0)
    for _ in range(10):
        clock.advance_ms(100)
        p.submit("clear", frame(0.1), clock())
        p.submit("foggy", frame(0.9), clock())
        p.step()
    s = p.stats().to_dict()["precision"]
    assert s["frames_per_mode"] == {"int8": 10, "high": 10}
    assert s["switches"] == 0


def test_memory_stays_bounded_without_stepping() -> None:
    p, clock, _ = make()
    cams = ("a", "b", "c")
    alive: list[weakref.ref] = []
    for i in range(10_000):
        f = frame(tag=i % 251)
        alive.append(weakref.ref(f))
        p.submit(cams[i % 3], f, clock(), meta=i)
        del f
    gc.collect()
    # only the newest frame of each camera is still held
    assert sum(r() is not None for r in alive) == len(cams)
    assert sum(c.pending is not None for c in p._cams.values()) == len(cams)
    out = p.step()
    assert Counter(r.status for r in out) == {"processed": 3, "dropped": 9_997}
    assert sorted(r.meta for r in out if r.status == "processed") == [9_997, 9_998, 9_999]
    assert all(r.reason == "replaced" for r in out if r.status == "dropped")
    assert sum(s["dropped"] for s in p.stats().to_dict()["cameras"].values()) == 9_997


# ---------------------------------------------------------------------------- worker thread


def test_worker_thread_delivers_results_and_stop_joins() -> None:
    engine = FakeEngine(None)
    p = Pipeline(engine, PipelineConfig(), visibility=FakeVisibility())  # type: ignore[arg-type]
    got: list[FrameResult] = []
    done = threading.Event()

    def on_result(r: FrameResult) -> None:
        got.append(r)
        if sum(x.status == "processed" for x in got) >= 3:
            done.set()

    p.start(on_result)
    worker = p.worker_thread
    assert worker is not None and worker.is_alive()
    p.start(on_result)  # a second start is a no-op
    assert p.worker_thread is worker
    try:
        for c in ("a", "b", "c"):
            p.submit(c, frame(), time.monotonic_ns(), meta=c)
        assert done.wait(timeout=10.0), f"worker delivered only {got}"
    finally:
        p.stop()
    assert not worker.is_alive()
    assert p.worker_thread is None
    assert sorted(r.meta for r in got if r.status == "processed") == ["a", "b", "c"]
    assert all(r.timing_ms["e2e"] >= 0 for r in got)
    n = len(engine.calls)
    p.submit("a", frame(), time.monotonic_ns())
    assert len(engine.calls) == n, "nothing runs after stop"


def test_stop_without_start_is_harmless() -> None:
    p, _, _ = make()
    p.stop()
    assert p.worker_thread is None


# ---------------------------------------------------------------------------- frames visibility refuses


def test_frame_too_small_for_visibility_does_not_lose_the_batch() -> None:
    """A frame the visibility estimator refuses (4x4) must not raise out of step nor lose other cameras' frames."""
    from dpa_perception.core.visibility import VisibilityEstimator

    clock = FakeClock()
    engine = FakeEngine(clock)
    p = Pipeline(engine, PipelineConfig(), clock_ns=clock, visibility=VisibilityEstimator())  # type: ignore[arg-type]
    p.submit("ok", np.full((64, 64, 3), 120, np.uint8), clock(), meta="ok")
    p.submit("tiny", np.zeros((4, 4, 3), np.uint8), clock(), meta="tiny")
    out = p.step()
    assert {r.meta: r.status for r in out}.get("ok") == "processed", out
    assert "tiny" in {r.meta for r in out}, "the refused frame must be resolved (processed, dropped or rejected)"
    for c, s in p.stats().to_dict()["cameras"].items():
        assert s["processed"] + s["dropped"] + s["input_errors"] == s["received"], (c, s)


def test_worker_survives_a_frame_too_small_for_visibility() -> None:
    from dpa_perception.core.visibility import VisibilityEstimator

    p = Pipeline(FakeEngine(None), PipelineConfig(), visibility=VisibilityEstimator())  # type: ignore[arg-type]
    got: list[FrameResult] = []
    done = threading.Event()

    def on_result(r: FrameResult) -> None:
        got.append(r)
        if r.meta == "after":
            done.set()

    p.start(on_result)
    try:
        p.submit("tiny", np.zeros((4, 4, 3), np.uint8), time.monotonic_ns(), meta="tiny")
        deadline = time.monotonic() + 5.0
        while not got and time.monotonic() < deadline and p.worker_thread is not None and p.worker_thread.is_alive():
            time.sleep(0.01)
        p.submit("ok", np.full((64, 64, 3), 120, np.uint8), time.monotonic_ns(), meta="after")
        deadline = time.monotonic() + 5.0
        while not done.is_set() and time.monotonic() < deadline and p.worker_thread is not None and p.worker_thread.is_alive():
            done.wait(0.02)
        assert done.is_set(), f"the worker stopped serving after a refused frame: {got}"
    finally:
        p.stop()


# ---------------------------------------------------------------------------- real engine


IMAGES = {
    "clear": "uadetrac_MVI_20011_img00001.jpg",
    "fog": "rtts_fog_SJZ_Bing_492.png",
    "night": "bdd_hybridnets_2_night_dark.jpg",
}


@pytest.fixture(scope="module")
def real_images(testdata: Path) -> dict[str, np.ndarray]:
    out = {}
    for k, name in IMAGES.items():
        img = cv2.imread(str(testdata / "images" / name))
        assert img is not None, name
        out[k] = img
    return out


def test_real_engine_auto_mode_follows_real_visibility(warm_yolox_engine: DualModeEngine, monkeypatch: pytest.MonkeyPatch,
                                                       real_images: dict[str, np.ndarray]) -> None:
    monkeypatch.setattr(warm_yolox_engine, "int8_pays", True)  # about visibility, not this machine's verdict
    clock = FakeClock()
    # a generous budget: this test is about visibility, not about the speed of this machine
    p = Pipeline(warm_yolox_engine, PipelineConfig(min_dwell_frames=0, latency_budget_ms=5_000.0, visibility_every_n=1),
                 clock_ns=clock)  # fmt: skip
    seq = ["clear", "fog", "night", "clear", "clear", "fog"]
    got = []
    for k in seq:
        clock.advance_ms(200)
        p.submit("/roadside/image_raw", real_images[k], clock(), meta=k)
        (r,) = p.step()
        got.append(r)
    modes = [r.mode for r in got]
    assert modes == ["int8", "high", "high", "int8", "int8", "high"], [
        (r.meta, r.mode, r.reason, r.visibility and round(r.visibility.degradation, 3)) for r in got]
    assert got[0].reason == "clear" and got[1].reason == "visibility"
    assert got[1].visibility.label == "fog" and got[2].visibility.label == "night"
    # real detections, in original image pixels
    cars = got[0].detections.filter(got[0].detections.class_ids == 2)
    assert len(cars) >= 5
    h, w = real_images["clear"].shape[:2]
    assert cars.boxes[:, 2].max() <= w + 1 and cars.boxes[:, 3].max() <= h + 1
    assert set(got[0].timing_ms) == TIMING_KEYS and got[0].timing_ms["inference"] > 0


def test_real_engine_cameras_batch_and_hold_their_own_mode(warm_yolox_engine: DualModeEngine,
                                                          real_images: dict[str, np.ndarray],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_yolox_engine, "int8_pays", True)  # about visibility, not this machine's verdict
    clock = FakeClock()
    p = Pipeline(warm_yolox_engine, PipelineConfig(min_dwell_frames=0, latency_budget_ms=5_000.0), clock_ns=clock)
    out: list[FrameResult] = []
    for _ in range(2):
        clock.advance_ms(200)
        for k in ("clear", "fog", "night"):
            p.submit(f"/{k}/image_raw", real_images[k], clock())
        out += p.step()
    modes = {(r.camera, r.mode) for r in out}
    assert modes == {("/clear/image_raw", "int8"), ("/fog/image_raw", "high"), ("/night/image_raw", "high")}
    assert p.stats().to_dict()["precision"]["frames_per_mode"] == {"int8": 2, "high": 4}


def test_worker_survives_an_engine_failure_and_reports_it() -> None:
    engine = FakeEngine(None)
    real_infer = engine.infer
    calls = {"n": 0}

    def flaky(frames, mode, input_shape="square", scale=1.0):  # the first batch fails, the rest work
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return real_infer(frames, mode, input_shape, scale)

    engine.infer = flaky  # type: ignore[method-assign]
    p = Pipeline(engine, PipelineConfig(), clock_ns=time.monotonic_ns)
    got: list = []
    p.start(got.append)
    try:
        p.submit("cam", frame(0.1), time.monotonic_ns())
        deadline = time.monotonic() + 5.0
        while p.stats().to_dict()["worker"]["errors"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.submit("cam", frame(0.1), time.monotonic_ns())
        while not any(r.status == "processed" for r in got) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        p.stop()
    assert p.stats().to_dict()["worker"] == {"errors": 1, "last_error": "RuntimeError: device lost"}
    assert any(r.status == "processed" for r in got)


# ---------------------------------------------------------------- ages on a coarse (simulated) clock


class CoarseClock:
    """A /clock that only moves in ``period_ms`` ticks and lags the true time (ros2 bag play --clock)."""

    def __init__(self, truth: FakeClock, period_ms: float):
        self.truth, self.period = truth, round(period_ms * MS)

    def __call__(self) -> int:
        return self.truth.t - self.truth.t % self.period


def test_ages_stay_continuous_and_non_negative_on_a_coarse_sim_clock() -> None:
    steady = FakeClock()
    sim = CoarseClock(steady, 25.0)
    engine = FakeEngine(steady)
    p = Pipeline(engine, PipelineConfig(precision_mode="high"), clock_ns=sim, steady_ns=steady,  # type: ignore[arg-type]
                 visibility=FakeVisibility())  # type: ignore[arg-type]
    p.add_camera("cam")
    e2e = []
    for i in range(40):
        steady.advance_ms(7.0 + (i % 5))  # frames published 7-11 ms apart, stamped with the true time
        p.submit("cam", frame(0.1, i), steady.t)
        e2e += [r.timing_ms["e2e"] for r in p.step() if r.status == "processed"]
    assert len(e2e) == 40
    assert min(e2e) >= 0.0
    # the fake engine costs 2 + 4 + 1.5 = 7.5 ms: the age is that, not the /clock's quantisation error
    assert max(e2e) == pytest.approx(7.5, abs=1e-6)
    cam = p.stats().to_dict()["cameras"]["cam"]
    assert cam["stamp_age_ms"] >= 0.0
    assert cam["future_stamps"] > 0  # stamps ahead of the coarse clock are seen, and counted


def test_frames_stamped_ahead_of_the_clock_never_give_negative_latency() -> None:
    clock = FakeClock()
    p, _, _ = make(clock=clock, precision_mode="high")
    p.submit("cam", frame(0.1), clock.t + 50 * MS)  # a camera clock 50 ms ahead
    (r,) = p.step()
    assert r.status == "processed" and r.timing_ms["e2e"] >= 0.0
    assert p.stats().to_dict()["cameras"]["cam"]["future_stamps"] == 1


def test_received_versus_sent_rate_shows_transport_loss() -> None:
    from dpa_perception.core.diagnostics import WARN, DiagnosticsBuilder
    from dpa_perception.core.pipeline_state import stamp_loss

    rng = np.random.default_rng(3)
    sent = np.arange(56) * 100 * MS  # a 10 Hz camera
    kept = np.sort(rng.choice(sent, 18, replace=False))  # 18 of 56 arrive (as measured over Cyclone DDS)
    rate, loss = stamp_loss(list(kept))
    assert rate == pytest.approx(10.0)
    assert loss == pytest.approx(1 - 18 / 56, abs=0.08)
    assert stamp_loss(list(sent)) == (pytest.approx(10.0), pytest.approx(0.0))
    jitter = sent + rng.integers(-3, 4, len(sent)) * MS  # stamps with a few ms of jitter: no false loss
    assert stamp_loss(list(jitter))[1] < 0.1
    assert stamp_loss(list(sent[:3])) == (None, None)

    clock = FakeClock()
    p, _, _ = make(clock=clock, precision_mode="high")
    for t in kept:
        clock.t = 10**12 + int(t)
        p.submit("cam", frame(0.1), clock.t)
        p.step()
    cam = p.stats().to_dict()["cameras"]["cam"]
    assert cam["source_rate_hz"] == pytest.approx(10.0) and cam["estimated_loss_pct"] > 50
    rec = DiagnosticsBuilder().camera("cam", cam, active=True)
    assert rec.level == WARN and "losing frames" in rec.message and "QoS" in rec.message

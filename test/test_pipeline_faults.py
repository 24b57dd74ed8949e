"""Hostile input and faults on the frame path (issue 12): one bad camera never blinds the others.

Malformed Image / CompressedImage messages go through the very path the node and the replay use
(``Pipeline.submit_message``), interleaved with valid frames on several cameras; the invariants are
checked, not just "no crash": every frame accounted for on its own camera, the good cameras served,
no exception escaping, one worker.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import MS, FakeClock, FakeEngine, FakeVisibility, frame

from dpa_perception.core.diagnostics import WARN, DiagnosticsBuilder
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.inference.engine import DualModeEngine

NS = 1_000_000_000


def accounted(p: Pipeline) -> None:
    """frames in = processed + dropped + rejected, exactly, for every camera (nothing pending)."""
    assert not p.has_pending()
    for name, c in p.stats().cameras.items():
        assert c.received == c.processed + c.dropped + c.input_errors, (name, c)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def jpeg_msg(img: np.ndarray, fmt: str = "jpeg") -> Any:
    return SimpleNamespace(format=fmt, data=cv2.imencode(".jpg", img)[1].tobytes())


def raw_msg(img: np.ndarray, **over: Any) -> Any:
    h, w = img.shape[:2]
    fields = {"encoding": "bgr8", "height": h, "width": w, "step": w * 3, "data": img.tobytes()}
    return SimpleNamespace(**{**fields, **over})


def hostile_messages(rng: np.random.Generator, good: np.ndarray) -> list[tuple[Any, bool]]:
    """(message, compressed) pairs of every malformed kind the node can receive."""
    enc = cv2.imencode(".jpg", good)[1].tobytes()
    png = cv2.imencode(".png", good)[1].tobytes()
    tiff = cv2.imencode(".tiff", good)[1].tobytes()
    strip = np.zeros((1, 2000, 3), np.uint8)
    return [
        (SimpleNamespace(format="jpeg", data=enc[: len(enc) // 2]), True),  # truncated
        (SimpleNamespace(format="jpeg", data=enc[: len(enc) // 2] + b"\xff\xd9"), True),  # truncated, EOI glued on
        (SimpleNamespace(format="jpeg", data=b""), True),
        (SimpleNamespace(format="jpeg", data=rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()), True),
        (SimpleNamespace(format="png", data=png[:100]), True),
        (SimpleNamespace(format="jpeg", data=tiff), True),  # another codec behind a jpeg format string
        (SimpleNamespace(format="tiff", data=tiff), True),
        (raw_msg(good, step=10), False),
        (raw_msg(good, encoding="yuv422"), False),
        (raw_msg(good, data=good.tobytes()[:1000]), False),
        (raw_msg(strip), False),  # 2000x1: cannot be letterboxed
        (raw_msg(good, height=0), False),
        (raw_msg(np.zeros((8, 5000, 3), np.uint8)), False),  # over the width limit
    ]


@pytest.fixture(scope="module")
def photo(testdata: Path) -> np.ndarray:
    img = cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    assert img is not None
    return img


def test_a_frame_that_fails_in_preprocessing_fails_alone(warm_yolox_engine: DualModeEngine, photo: np.ndarray) -> None:
    clock = [10**12]
    p = Pipeline(warm_yolox_engine, PipelineConfig(precision_mode="high", latency_budget_ms=10_000.0),
                 clock_ns=lambda: clock[0])  # fmt: skip
    strip = np.zeros((4096, 2, 3), np.uint8)  # submitted as an array, past the decode limits: letterbox cannot
    for cam in ("a", "b", "c"):
        p.submit(cam, photo, clock[0])
    p.submit("bad", strip, clock[0])
    clock[0] += MS
    results = {r.camera: r for r in p.step()}
    assert {c: r.status for c, r in results.items()} == {"a": "processed", "b": "processed", "c": "processed",
                                                         "bad": "rejected"}  # fmt: skip
    assert all(len(results[c].detections) > 0 for c in "abc")
    assert "inference failed" in results["bad"].reason and "too thin to letterbox" in results["bad"].reason
    cams = p.stats().cameras
    assert cams["bad"].input_errors == 1 and cams["bad"].state == "rejecting"
    assert p.stats().worker.errors >= 1  # the failed engine call is also an engine error
    accounted(p)


def test_a_camera_that_keeps_failing_does_not_lead_every_batch() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    real = engine.infer

    def infer(frames: Any, mode: Any, input_shape: str = "square", scale: float = 1.0) -> Any:
        if any(int(f[0, 0, 1]) == 99 for f in frames):
            raise ValueError("bad frame")
        return real(frames, mode, input_shape, scale)

    engine.infer = infer  # type: ignore[method-assign]
    p = Pipeline(engine, PipelineConfig(precision_mode="high", max_batch=2, latency_budget_ms=1000.0),  # type: ignore[arg-type]
                 clock_ns=clock, visibility=FakeVisibility())  # type: ignore[arg-type]
    served = {"bad": 0, "a": 0, "b": 0}
    for _ in range(30):
        p.submit("bad", frame(0.1, 99), clock.t)
        p.submit("a", frame(0.1, 1), clock.t)
        p.submit("b", frame(0.1, 2), clock.t)
        for r in p.drain():
            served[r.camera] += r.status == "processed"
        clock.advance_ms(100)
    assert served["a"] >= 25 and served["b"] >= 25, served
    assert p.stats().cameras["bad"].input_errors > 0
    accounted(p)


def test_hostile_messages_on_one_camera_never_blind_the_others(warm_yolox_engine: DualModeEngine,
                                                              photo: np.ndarray) -> None:
    """Seeded fuzz: 3 good JPEG/raw cameras and one that sends every malformed kind, through the worker."""
    rng = np.random.default_rng(12)
    small = cv2.resize(photo, (480, 270))
    bad = hostile_messages(rng, small)
    good = {"/c0/image_raw/compressed": (jpeg_msg(small), True), "/c1/image_raw": (raw_msg(small), False),
            "/c2/image_raw/compressed": (jpeg_msg(small), True)}  # fmt: skip
    p = Pipeline(warm_yolox_engine, PipelineConfig(latency_budget_ms=10_000.0), clock_ns=time.monotonic_ns)
    errors: list[BaseException] = []
    got: list[Any] = []
    p.start(got.append)
    rss_before = rss_mib()
    try:
        for _ in range(60):
            for cam, (msg, compressed) in good.items():
                p.submit_message(cam, msg, compressed, time.monotonic_ns())
            for _ in range(5):
                msg, compressed = bad[int(rng.integers(len(bad)))]
                try:
                    r = p.submit_message("/evil/image_raw", msg, compressed, time.monotonic_ns())
                except BaseException as exc:  # nothing may escape into the subscription thread
                    errors.append(exc)
                    continue
                assert r is not None and r.status == "rejected" and r.reason
            p.drain(10.0)  # the worker resolves this round before the next: no timing luck in the counts
    finally:
        assert p.stop()
    assert not errors
    cams = p.stats().cameras
    assert cams["/evil/image_raw"].input_errors == 300 == cams["/evil/image_raw"].received
    for cam in good:
        assert cams[cam].processed >= 0.9 * 60, (cam, cams[cam])  # served while the bad camera floods
        assert cams[cam].input_errors == 0
    accounted(p)
    assert [t for t in threading.enumerate() if t.name == "dpa-inference"] == []
    assert rss_mib() - rss_before < 100.0, "hostile frames must not grow memory"


def test_every_frame_is_accounted_for_under_overload_and_concurrency() -> None:
    clock = FakeClock(0)
    engine = FakeEngine(clock, fixed_ms=5.0, per_frame_ms=30.0)
    p = Pipeline(engine, PipelineConfig(max_batch=4), clock_ns=clock, visibility=FakeVisibility())  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    for _ in range(2000):
        cam = f"cam{int(rng.integers(6))}"
        p.submit(cam, frame(0.1), clock.t - int(rng.integers(0, 200)) * MS)
        if rng.random() < 0.3:
            p.step()  # shedding trims batches while newer frames arrive
        clock.advance_ms(float(rng.integers(0, 8)))
    p.drain()
    accounted(p)
    assert sum(c.dropped for c in p.stats().cameras.values()) > 0


def test_start_and_stop_race_never_runs_two_workers() -> None:
    p = Pipeline(FakeEngine(None), PipelineConfig(inference_workers=1), visibility=FakeVisibility())  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            for k in range(40):
                (p.start(lambda r: None) if (i + k) % 2 else p.stop())
                assert len([t for t in threading.enumerate() if t.name == "dpa-inference" and t.is_alive()]) <= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert p.stop()
    assert not [t for t in threading.enumerate() if t.name == "dpa-inference" and t.is_alive()]


def test_stop_waits_for_the_running_batch_and_reports_when_it_cannot() -> None:
    class Slow(FakeEngine):
        def infer(self, frames: Any, mode: Any, input_shape: str = "square", scale: float = 1.0) -> Any:
            time.sleep(0.6)
            return super().infer(frames, mode, input_shape, scale)

    p = Pipeline(Slow(None), PipelineConfig(worker_stop_timeout_s=0.1), clock_ns=time.monotonic_ns,  # type: ignore[arg-type]
                 visibility=FakeVisibility())  # type: ignore[arg-type]
    got: list[Any] = []
    p.start(got.append)
    p.submit("cam", frame(0.1), time.monotonic_ns())
    time.sleep(0.2)  # inside infer now
    assert p.stop() is False
    assert "did not finish its batch" in p.stats().worker.last_error
    assert p.stop(timeout_s=5.0) is True  # waits for the batch: its result was delivered, nothing lost
    assert [r.status for r in got] == ["processed"]


def test_stamp_zero_and_skewed_camera_clocks_are_served_and_reported() -> None:
    clock = FakeClock(1_700_000_000 * NS)
    p = Pipeline(FakeEngine(clock), PipelineConfig(precision_mode="high"), clock_ns=clock,  # type: ignore[arg-type]
                 visibility=FakeVisibility())  # type: ignore[arg-type]
    b = DiagnosticsBuilder()
    for i in range(10):
        p.submit("zero", frame(0.1), 0)  # header stamp 0
        p.submit("behind", frame(0.1), clock.t - 3600 * NS)  # a camera clock an hour behind
        p.submit("ahead", frame(0.1), clock.t + 5 * NS)  # ... or seconds ahead
        p.submit("bit_ahead", frame(0.1), clock.t + 30 * MS)  # ... or a little ahead: clamped, counted
        p.submit("half_s_behind", frame(0.1), clock.t - 500 * MS)  # always older than the budget
        results = p.drain()
        statuses = {r.camera: r.status for r in results}
        assert statuses == {"zero": "processed", "behind": "processed", "ahead": "processed",
                            "bit_ahead": "processed",
                            "half_s_behind": "processed" if i >= 9 else "dropped"}, i  # fmt: skip
        assert all(r.timing_ms["e2e"] >= 0 for r in results if r.status == "processed")
        clock.advance_ms(100)
    cams = p.stats().cameras
    assert cams["zero"].untrusted_stamps == 10 and cams["behind"].untrusted_stamps == 10
    assert cams["ahead"].untrusted_stamps == 10 and cams["bit_ahead"].future_stamps == 10
    assert cams["bit_ahead"].untrusted_stamps == 0
    # a clock half a second behind: served once its frames have all been older than the budget for 10 frames
    assert cams["half_s_behind"].untrusted_stamps == 1 and cams["half_s_behind"].dropped == 9
    rec = b.camera("zero", p.stats().to_dict()["cameras"]["zero"], active=True)
    assert rec.level == WARN and "stamped far from the receiving clock" in rec.message
    accounted(p)


def test_two_workers_keep_two_batches_in_flight_and_each_camera_in_order() -> None:
    """inference_workers 2: twice the throughput of a slow engine, one frame per camera in flight."""
    lock = threading.Lock()
    worst = {"parallel": 0}
    running = [0]

    class Slow(FakeEngine):
        def infer(self, frames: Any, mode: Any, input_shape: str = "square", scale: float = 1.0) -> Any:
            with lock:
                running[0] += 1
                worst["parallel"] = max(worst["parallel"], running[0])
            time.sleep(0.03)
            with lock:
                running[0] -= 1
            return super().infer(frames, mode, input_shape, scale)

    p = Pipeline(Slow(None), PipelineConfig(inference_workers=2, max_batch=1, latency_budget_ms=10_000.0,  # type: ignore[arg-type]
                                            precision_mode="high"),
                 clock_ns=time.monotonic_ns, visibility=FakeVisibility())  # type: ignore[arg-type]
    got: list[Any] = []
    p.start(got.append)
    try:
        assert len([t for t in p._ctl.threads if t.is_alive()]) == 2
        for i in range(20):
            for cam in ("a", "b"):
                p.submit(cam, frame(0.1, i), time.monotonic_ns(), meta=i)
            p.drain(5.0)
    finally:
        assert p.stop()
    assert worst["parallel"] == 2, "two batches ran at once"
    for cam in ("a", "b"):
        seq = [r.meta for r in got if r.camera == cam and r.status == "processed"]
        assert seq == sorted(seq) and len(seq) == 20, (cam, seq)
    accounted(p)


def test_inference_workers_zero_is_one_per_core_divided_by_threads() -> None:
    from dpa_perception.core.worker import auto_workers, worker_count

    assert auto_workers("onnxruntime", 1, cores=2) == 2
    assert auto_workers("onnxruntime", 2, cores=2) == 1  # each call already uses both cores
    assert auto_workers("onnxruntime", 1, cores=16) == 4  # capped
    assert auto_workers("onnxruntime", 0, cores=8) == 1  # ORT's default threads take every core
    assert auto_workers("tensorrt", 1, cores=8) == 1
    assert worker_count(3, object()) == 3
    assert 1 <= worker_count(0, object()) <= 4

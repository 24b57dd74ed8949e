"""The pipeline's inference workers: ``inference_workers`` threads, started and stopped safely.

Each runs :meth:`Pipeline.step` whenever a frame is ready (or when the batching window ends) and
hands every result to the callback; with two, a second batch is inferred on the other core while
the first runs (a camera never has two frames in flight, so its results stay in order).
``start``/``stop`` are idempotent and thread-safe, never two sets of workers; ``stop`` waits
(bounded) for the batches being inferred and reports when it could not; workers left finishing a
batch exit after it (their generation is no longer current).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.machine import usable_cores

MAX_AUTO_WORKERS = 4


def auto_workers(backend: str, intra_op_threads: int, cores: int | None = None) -> int:
    """``inference_workers: 0``: one worker per usable core (divided by the intra-op threads each
    call uses), 1 to 4; 1 on TensorRT (the GPU runs one batch at a time). Measured on 2 cores,
    YOLOX-Nano rect, 10 cameras at 10 Hz: 99 % processed with 2 workers, 80 % with 1 (README)."""
    if backend != "onnxruntime":
        return 1
    if cores is None:
        cores = usable_cores()
    return max(1, min(MAX_AUTO_WORKERS, cores // max(1, intra_op_threads or cores)))


def worker_count(setting: int, engine: Any) -> int:
    """The workers ``inference_workers`` asks for on ``engine`` (0: :func:`auto_workers`)."""
    if setting > 0:
        return setting
    return auto_workers(getattr(engine, "backend", "onnxruntime"), int(getattr(engine, "intra_op_threads", 1)))

if TYPE_CHECKING:
    from dpa_perception.core.pipeline import Pipeline


class Worker:
    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        self.threads: list[threading.Thread] = []
        self.running = False
        self.busy = 0  # workers inside step()
        self._life = threading.Lock()  # serialises start() and stop()
        self._generation = 0

    @property
    def thread(self) -> threading.Thread | None:
        return self.threads[0] if self.threads else None

    def start(self, on_result: Callable[[Any], None]) -> None:
        """Never two sets of workers: previous ones still finishing a batch are waited for, or refused."""
        with self._life:
            alive = [t for t in self.threads if t.is_alive()]
            if alive and self.running:
                return
            timeout = self.p.config.worker_stop_timeout_s
            for t in alive:
                t.join(timeout)
            if any(t.is_alive() for t in alive):
                raise ConfigError(f"the previous inference worker is still finishing a batch (more than {timeout} s); "
                                  "try again")
            self.running = True
            self._generation += 1
            warmed = [threading.Event() for _ in range(worker_count(self.p.config.inference_workers, self.p.engine))]
            self.threads = [threading.Thread(target=self._loop, args=(self._generation, on_result, ev),
                                             name="dpa-inference", daemon=True)
                            for ev in warmed]  # fmt: skip
            for t in self.threads:
                t.start()
            for ev in warmed:  # (bounded) so that no camera frame meets a worker still warming up
                ev.wait(timeout)

    def _loop(self, generation: int, on_result: Callable[[Any], None], warmed: threading.Event) -> None:
        p = self.p
        warm = getattr(p.engine, "warm_thread", None)
        try:
            if warm is not None:  # this thread's first inference would be slow: not on a camera's frame
                warm(p.config.input_shape)
        except Exception as exc:
            p._worker_error(exc)
        finally:
            warmed.set()

        def current() -> bool:
            return self.running and self._generation == generation

        while current():
            with p._lock:
                hold = p.hold_until_ns
                if not p._has_ready():
                    p._ready.wait(timeout=0.1)
                elif hold is not None and (left := (hold - p.steady_ns()) / 1e9) > 0:
                    p._ready.wait(timeout=left)  # a due camera's frame, or the window's end
                self.busy += 1
            try:
                if not current():
                    break
                results = p.step()
            except Exception as exc:  # a bug in a round must not stop the worker for every camera
                p._worker_error(exc)
                results = []
            finally:
                with p._lock:
                    self.busy -= 1
                    p._ready.notify_all()  # wakes wait_idle()
            for r in results:  # each result delivered on its own: a failing callback loses no other
                try:
                    on_result(r)
                except Exception as exc:
                    p._worker_error(exc)

    def wait_idle(self, timeout_s: float) -> None:
        """Wait (bounded) until no frame waits and the worker is not inside a round."""
        p, deadline = self.p, time.monotonic() + timeout_s
        with p._lock:
            while (self.busy > 0 or p._has_pending()) and (left := deadline - time.monotonic()) > 0:
                p._ready.wait(timeout=min(left, 0.1))

    def stop(self, timeout_s: float) -> bool:
        with self._life:
            self.running = False
            with self.p._lock:
                self.p._ready.notify_all()
            if threading.current_thread() in self.threads:
                return False  # called from a result callback: the workers end after this round
            deadline = time.monotonic() + timeout_s
            for t in self.threads:
                t.join(max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in self.threads):
                self.p._worker_error(TimeoutError(f"stop: the worker did not finish its batch within {timeout_s} s"))
                return False
            self.threads = []
            return True

"""The pipeline's inference worker thread: started and stopped safely, never two at once.

It runs :meth:`Pipeline.step` whenever frames wait (or when the batching window ends) and hands
every result to the callback. ``start``/``stop`` are idempotent and thread-safe; ``stop`` waits
(bounded) for the batch being inferred and reports when it could not; a worker left finishing a
batch exits after it (its generation is no longer current).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dpa_perception.core.errors import ConfigError

if TYPE_CHECKING:
    from dpa_perception.core.pipeline import Pipeline


class Worker:
    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        self.thread: threading.Thread | None = None
        self.running = False
        self.busy = False  # inside step()
        self._life = threading.Lock()  # serialises start() and stop()
        self._generation = 0

    def start(self, on_result: Callable[[Any], None]) -> None:
        """Never two workers: a previous one still finishing a batch is waited for, or refused."""
        with self._life:
            old = self.thread
            if old is not None and old.is_alive():
                if self.running:
                    return
                old.join(self.p.config.worker_stop_timeout_s)
                if old.is_alive():
                    raise ConfigError("the previous inference worker is still finishing a batch "
                                      f"(more than {self.p.config.worker_stop_timeout_s} s); try again")
            self.running = True
            self._generation += 1
            self.thread = threading.Thread(target=self._loop, args=(self._generation, on_result),
                                           name="dpa-inference", daemon=True)
            self.thread.start()

    def _loop(self, generation: int, on_result: Callable[[Any], None]) -> None:
        p = self.p

        def current() -> bool:
            return self.running and self._generation == generation

        while current():
            with p._lock:
                hold = p.hold_until_ns
                if not p._has_pending():
                    p._ready.wait(timeout=0.1)
                elif hold is not None and (left := (hold - p.steady_ns()) / 1e9) > 0:
                    p._ready.wait(timeout=left)  # a due camera's frame, or the window's end
                self.busy = True
            try:
                if not current():
                    break
                results = p.step()
            except Exception as exc:  # a bug in a round must not stop the worker for every camera
                p._worker_error(exc)
                results = []
            finally:
                with p._lock:
                    self.busy = False
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
            while (self.busy or p._has_pending()) and (left := deadline - time.monotonic()) > 0:
                p._ready.wait(timeout=min(left, 0.1))

    def stop(self, timeout_s: float) -> bool:
        with self._life:
            self.running = False
            with self.p._lock:
                self.p._ready.notify_all()
            worker = self.thread
            if worker is None or worker is threading.current_thread():
                return worker is None
            worker.join(timeout_s)
            if worker.is_alive():
                self.p._worker_error(TimeoutError(f"stop: the worker did not finish its batch within {timeout_s} s"))
                return False
            self.thread = None
            return True

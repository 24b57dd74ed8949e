"""Replay rosbag2 camera topics through the node's runtime (:func:`dpa_perception.runtime.assemble`).

Two paces, one scheduling rule: frames go into the newest-frame slots at their replay time, and
the pipeline runs whenever frames are waiting, so frames of several cameras that are due together
are batched (and shed) exactly as in the node. ``realtime`` plays the bag at wall speed with the
inference worker; ``fast`` runs the pipeline inline and jumps bag time over idle gaps.

Replay time is the bags' own log time laid on one timeline (:mod:`dpa_perception.replay.timeline`:
bags back to back, long gaps collapsed, metadata never trusted for time). A message that does not
deserialise and a frame that fails to decode or convert are "rejected" records on their camera; a
frame that gets no result is "failed"; a bag that stops reading part-way ends the run as
``read_error`` with what was read. Outputs are staged beside ``out`` and swapped in at the end
(:mod:`dpa_perception.replay.output_dir`); summary.json ``ended`` says how the run ended.
"""

from __future__ import annotations

import heapq
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dpa_perception.bags.reader import COMPRESSED_TYPE, BagImage, iter_bag, select_topics, topic_types
from dpa_perception.bags.writer import DetectionBagWriter
from dpa_perception.core import node_params as P
from dpa_perception.core.errors import BagError, ConfigError
from dpa_perception.core.types import NS_PER_S
from dpa_perception.core.world_params import camera_key
from dpa_perception.demo.weather import WeatherSpec
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.output_dir import check_out, staged
from dpa_perception.replay.outputs import Meta, Outputs, write_outputs
from dpa_perception.replay.timeline import MAX_GAP_S, Timeline, build_timeline
from dpa_perception.replay.video import AnnotatedVideo
from dpa_perception.replay.world_outputs import WorldRecorder
from dpa_perception.runtime import Runtime, assemble

NS = NS_PER_S
PACES = ("realtime", "fast")
DRAIN_TIMEOUT_S = 5.0
INTERRUPT_DRAIN_S = 1.0
ENDINGS = ("complete", "interrupted", "nothing_processed", "read_error")

__all__ = ["ENDINGS", "PACES", "Meta", "ReplayClock", "ReplayInterrupted", "replay_cameras", "run_replay"]


class ReplayClock:
    """Replay time that runs at wall speed from the last ``sync``: the pipeline's "now"."""

    def __init__(self) -> None:
        self._bag_ns = 0
        self._wall_ns = time.perf_counter_ns()
        self._lock = threading.Lock()

    def sync(self, bag_ns: int) -> None:
        with self._lock:
            self._bag_ns, self._wall_ns = bag_ns, time.perf_counter_ns()

    def __call__(self) -> int:
        with self._lock:
            return self._bag_ns + (time.perf_counter_ns() - self._wall_ns)


class ReplayInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the replay; the partial results were published (``summary``)."""

    def __init__(self, signum: int, summary: dict[str, Any] | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.summary = summary


class _StopRequest:
    """SIGINT/SIGTERM handlers for the play loop: the first signal asks the loop to stop at the next
    message (outputs then written and published); a second one aborts at once (nothing published)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise ReplayInterrupted(signum)
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


@dataclass
class _Run:
    """One replay's moving parts."""

    runtime: Runtime
    timeline: Timeline
    bags: Sequence[Path]
    chosen: Sequence[str]
    clock: ReplayClock
    pace: str
    weather: WeatherSpec | None
    emit: Outputs
    bar: Any
    stop: _StopRequest
    read_errors: list[str] = field(default_factory=list)
    next_diag: int = 0
    fed: int = 0


def _messages(run: _Run) -> Iterator[tuple[int, BagImage]]:
    """(replay time, message) of every bag, merged; a bag that stops reading is noted and ends."""
    def one(i: int, path: Path) -> Iterator[tuple[int, BagImage]]:
        try:
            for m in iter_bag(path, run.chosen, i):
                yield run.timeline.played(i, m.log_time_ns), m
        except BagError as exc:
            run.read_errors.append(str(exc))

    yield from heapq.merge(*(one(i, p) for i, p in enumerate(run.bags)), key=lambda pm: pm[0])


def _feed(run: _Run, msg: BagImage, play_ns: int) -> None:
    """One bag message into the pipeline (decoded, weather applied); a malformed one is rejected on its camera."""
    pipeline, tl = run.runtime.pipeline, run.timeline
    meta = Meta(msg.topic, msg.stamp_ns, msg.frame_id, msg.log_time_ns, play_ns, run.fed)
    run.fed += 1
    if msg.error:  # the message did not deserialise: no header, no payload
        run.emit(pipeline.report_input_error(msg.topic, msg.error, msg.stamp_ns, meta))
        return
    weather, i = run.weather, meta.seq
    progress = (play_ns - tl.first_ns) / max(1, tl.last_ns - tl.first_ns)
    transform = None if weather is None else (lambda f: weather.apply(f, progress, seed=0, frame=i))
    run.emit.fed(meta)
    try:  # the header stamp moves with the message, so ages are what they were when recorded
        rejected = pipeline.submit_message(msg.topic, msg.msg, msg.msgtype == COMPRESSED_TYPE,
                                           msg.stamp_ns + (play_ns - msg.log_time_ns), meta, transform=transform,
                                           keep_frame=run.emit.world is not None and run.emit.world.video is not None)
    except Exception as exc:  # whatever else a frame raises is that frame's rejection, never the replay's end
        rejected = pipeline.report_input_error(msg.topic, f"{type(exc).__name__}: {exc}", msg.stamp_ns, meta)
    if rejected is not None:
        run.emit(rejected)


def _step(run: _Run, force: bool = False) -> bool:
    """One inline scheduling round (fast pace); a failing batch is noted, its frames become "failed".
    False when the pipeline holds its batching window (frames of other cameras are due)."""
    pipeline = run.runtime.pipeline
    try:
        results = pipeline.step(force=force)
    except Exception as exc:
        run.emit.batch_errors.append(f"{type(exc).__name__}: {exc}")
        return True
    for r in results:
        run.emit(r)
    return force or getattr(pipeline, "hold_until_ns", None) is None


def _settle(run: _Run, timeout_s: float) -> None:
    """Resolve what is still waiting: the worker's drain (realtime) or inline rounds (fast)."""
    pipeline = run.runtime.pipeline
    if run.pace == "realtime":
        pipeline.drain(timeout_s)
        return
    for _ in range(10_000):  # every round takes the waiting frames out of their slots
        if not pipeline.has_pending():
            return
        _step(run, force=True)


def _wait_until(run: _Run, play_ns: int) -> None:
    while run.stop.signum is None and (left := (play_ns - run.clock()) / NS) > 0:
        time.sleep(min(left, 0.05))


def _play(run: _Run) -> None:
    """Feed every message at its replay time, /diagnostics once per replay second."""
    pipeline, tl = run.runtime.pipeline, run.timeline
    run.next_diag = tl.first_ns + NS
    if run.pace == "realtime":
        pipeline.start(run.emit)  # the workers warm up first ...
    messages = _messages(run)
    first = next(messages, None)  # ... and the bags open, before replay time starts to run
    run.clock.sync(tl.first_ns)
    for play_ns, msg in itertools.chain([first] if first is not None else [], messages):
        if run.pace == "realtime":
            _wait_until(run, play_ns)
        else:  # the pipeline runs while frames wait; replay time jumps over the idle gaps between them
            while play_ns > run.clock() and pipeline.has_pending() and run.stop.signum is None:
                if not _step(run):
                    break  # held for cameras due within the batching window: the next message comes first
            if play_ns > run.clock():
                run.clock.sync(play_ns)
        if run.stop.signum is not None:
            return
        _feed(run, msg, play_ns)
        while play_ns >= run.next_diag:
            run.emit.diagnostics(run.next_diag)
            run.next_diag += NS
        run.bar.update(1)
    _settle(run, DRAIN_TIMEOUT_S)


def replay_cameras(values: Mapping[str, Any], available: Mapping[str, Any]) -> list[str] | None:
    """The parameters' camera topics when the bag holds every one of them, else None (all of the bag's)."""
    cams = list(values.get("camera_topics") or [])
    return cams if cams and all(c in available for c in cams) else None


def _log_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _prepare(bags: Sequence[Path], values: Mapping[str, Any], topics: Sequence[str] | None,
             max_gap_s: float) -> tuple[list[str], Timeline]:
    where = ", ".join(map(str, bags))
    available = topic_types(bags)
    chosen = select_topics(available, topics or replay_cameras(values, available), where)
    timeline = build_timeline(bags, chosen, max_gap_s=max_gap_s)
    if timeline.total == 0:
        errors = "; ".join(timeline.errors)
        raise BagError(f"{where}: the image topics hold no messages" + (f" ({errors})" if errors else ""))
    return chosen, timeline


def _ending(run: _Run, frames: list[dict[str, Any]]) -> dict[str, Any]:
    if run.stop.signum is not None:
        ended = "interrupted"
    elif not any(f["status"] == "processed" for f in frames):
        ended = "nothing_processed"
    elif run.read_errors:
        ended = "read_error"
    else:
        ended = "complete"
    info: dict[str, Any] = {"ended": ended, "messages_read": run.fed, "messages_expected": run.timeline.total}
    if run.stop.signum is not None:
        info["signal"] = signal.Signals(run.stop.signum).name
    info["read_errors"] = run.read_errors
    info["timeline"] = run.timeline.to_dict()
    return info


def run_replay(
    bags: Sequence[Path],
    values: Mapping[str, Any],
    out: Path,
    *,
    pace: str = "realtime",
    weather: WeatherSpec | None = None,
    progress: bool = True,
    topics: Sequence[str] | None = None,
    engine: DualModeEngine | None = None,
    force: bool = False,
    max_gap_s: float = MAX_GAP_S,
    log: Callable[[str], None] = _log_stderr,
    video_dir: Path | None = None,
    video_fps: float = 10.0,
) -> dict[str, Any]:
    """Replay ``bags`` through the runtime the node would build from ``values``; write the outputs to ``out``.

    ``values`` are node parameters. Cameras: ``topics`` if given (each must be in the bags), else the
    parameters' ``camera_topics`` when the bags hold all of them, else every image topic of the bags.
    ``engine``: reuse a loaded engine (tests, benchmarks) instead of loading ``engine_dir``.
    ``out`` must not exist, be empty, or (``force``) hold a previous replay's outputs. ``video_dir``:
    also write one annotated MP4 per camera there, at ``video_fps`` frames a second.
    Returns the summary (also written to ``out/summary.json``; ``ended``: complete, nothing_processed
    or read_error). SIGINT/SIGTERM: the partial results are published (``ended: interrupted``) and
    :class:`ReplayInterrupted` is raised; a second signal aborts and publishes nothing.
    """
    if pace not in PACES:
        raise ConfigError(f"pace must be one of {', '.join(PACES)}")
    if not max_gap_s > 0:
        raise ConfigError(f"max gap must be positive, got {max_gap_s}")
    out = Path(os.path.abspath(out))  # "." and "a/.." name their folder
    check_out(out, force)  # before the bags are read and the engine loaded
    chosen, timeline = _prepare(bags, values, topics, max_gap_s)
    for w in timeline.warnings[:8]:
        log(f"dpa-replay: warning: {w}")
    if len(timeline.warnings) > 8:
        log(f"dpa-replay: warning: ... and {len(timeline.warnings) - 8} more (summary.json timeline)")
    clock = ReplayClock()
    own = list(values.get("camera_topics") or []) == chosen  # the parameters' cameras: keep their outputs
    keys = {camera_key(t) for t in chosen}  # geometry of cameras not replayed: not this run's
    kept = {k: v for k, v in values.items() if not P.is_camera_param(k) or k.split(".")[1] in keys}
    runtime = assemble({**kept, "camera_topics": chosen,
                        "detection_topics": list(values.get("detection_topics") or []) if own else []},
                       clock_ns=clock, engine=engine)  # fmt: skip
    with staged(out, force) as tmp:
        summary = _run_into(tmp, runtime, timeline, bags, chosen, clock, pace, weather, progress,
                            (Path(video_dir), video_fps) if video_dir is not None else None)
    if summary["ended"] == "interrupted":
        raise ReplayInterrupted(signal.Signals[summary["signal"]], summary)
    return summary


def _run_into(tmp: Path, runtime: Runtime, timeline: Timeline, bags: Sequence[Path], chosen: Sequence[str],
              clock: ReplayClock, pace: str, weather: WeatherSpec | None, progress: bool,
              video_to: tuple[Path, float] | None = None) -> dict[str, Any]:
    writer = DetectionBagWriter(tmp / "detections")
    world = WorldRecorder(runtime, writer, AnnotatedVideo(video_to[0], fps=video_to[1]) if video_to else None)
    world.start(timeline.first_ns)
    emit = Outputs(runtime, writer, dict(zip(chosen, runtime.values["detection_topics"])), clock, world=world)
    bar = tqdm(total=timeline.total, desc="replay", unit="frame", disable=not progress, file=sys.stderr)
    try:
        with _StopRequest() as stop:
            run = _Run(runtime, timeline, bags, chosen, clock, pace, weather, emit, bar, stop)
            try:
                _play(run)
                if stop.signum is not None:
                    _settle(run, INTERRUPT_DRAIN_S)
            finally:
                bar.close()
                runtime.pipeline.stop()
        emit.diagnostics(max(run.next_diag, timeline.last_ns) if run.fed else timeline.first_ns)
    finally:
        writer.close()
    emit.fail_outstanding("replay interrupted" if stop.signum is not None else "the pipeline returned none")
    return write_outputs(tmp, emit.frames, runtime, pace, weather, bags, chosen, writer.count, _ending(run, emit.frames),
                         world)  # fmt: skip

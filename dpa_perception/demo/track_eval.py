"""Tracking quality of a replay on the demo bag: CLEAR MOT and identity metrics against the 3D ground truth.

    dpa-eval --tracks REPLAY_DIR --bag DEMO_BAG [--points POINTS.yaml] [--max-distance 2.5] [--json OUT]

Inputs: ``REPLAY_DIR/tracks.jsonl`` (one JSON object per processed camera frame and output topic:
``{"topic", "camera", "stamp_ns", "mode", "objects": [WorldObject.to_dict(), ...]}``, ``camera`` ""
for the fused output), the demo bag's ``<camera ns>/ground_truth/objects`` (Detection3DArray, one per
camera frame, ``id`` the true object id, new after each wrap of the object's loop) and
``/rsu/weather``, and the surveyed points file beside the bag for the camera positions.

Matching (``motmetrics``): per output frame, ground truth and confirmed tracks (``track_id`` >= 1,
``confirmed``) are matched by Euclidean ground distance in metres, at most ``max_distance``
(2.5 m), within a class group (person; bicycle and motorcycle; car, bus and truck: a cyclist is
two ground-truth objects, bicycle and person, at one footprint, which a class-agnostic match would
swap frame by frame), or by exact class with ``class_aware``.  A camera's output frame is compared
with that camera's ground truth of the same stamp; a fused frame with the union of every camera's
ground truth nearest to its stamp (within half a frame period).  One accumulator runs over each output topic's whole sequence, so
identity switches are counted with full history; the breakdowns per weather condition (the bag's
``/rsu/weather`` at the stamp; strength 0 is ``clear``) and per precision mode select frames from
it.  ``cameras`` merges the per-camera topics (motmetrics' overall).

Reported per selection: MOTA, IDF1, ID switches, precision, recall, MOTP (mean matched distance, m),
the position error of matched objects (median, p90) per distance band from the camera (0-25, 25-50,
50+ m; the nearest camera for the fused output), and the median velocity error (m/s) of matched
tracks older than 1 s, the true velocity taken from the ground-truth positions of the same id
(objects move at constant velocity between wraps).  HOTA: motmetrics 1.4 (the released version)
has no HOTA, so it is not reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.topics import camera_namespace
from dpa_perception.world.objects import WorldObject
from dpa_perception.world.priors import class_group

MAX_DISTANCE_M = 2.5
BANDS = (("0-25", 0.0, 25.0), ("25-50", 25.0, 50.0), ("50+", 50.0, math.inf))
WITHIN = ("0-50", 0.0, 50.0)  # the band the position targets are set for (median and p90 in the table)
MIN_TRACK_AGE_S = 1.0
MOT_METRICS = ["mota", "idf1", "num_switches", "precision", "recall", "motp", "num_frames", "num_objects",
               "num_predictions", "num_matches", "num_false_positives", "num_misses", "num_unique_objects"]
CAMERAS = "cameras"  # the merged per-camera selection
COCO_NAMES = {"0": "person", "1": "bicycle", "2": "car", "3": "motorcycle", "5": "bus", "7": "truck"}


@dataclass(frozen=True)
class TrackLine:
    topic: str
    camera: str
    stamp_ns: int
    mode: str
    objects: tuple[WorldObject, ...]


@dataclass
class GtFrame:
    stamp_ns: int
    ids: list[str]
    xy: np.ndarray  # (N, 2)
    classes: list[str]  # class names
    velocity: list[tuple[float, float] | None] = field(default_factory=list)


def gt_topic(camera_topic: str) -> str:
    return f"{camera_namespace(camera_topic).rstrip('/')}/ground_truth/objects"


def load_tracks(path: Path) -> list[TrackLine]:
    """``tracks.jsonl`` lines; a malformed line is a one-line :class:`ConfigError` naming it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            objs = tuple(WorldObject.from_dict(o) for o in d["objects"])
            out.append(TrackLine(str(d["topic"]), str(d.get("camera", "")), int(d["stamp_ns"]), str(d.get("mode", "")),
                                 objs))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} line {n}: not a tracks record ({type(exc).__name__}: {exc})") from exc
    if not out:
        raise ConfigError(f"{path}: no tracks records")
    return out


def _velocities(frames: dict[str, dict[int, GtFrame]]) -> None:
    """Fill each ground-truth object's velocity from two positions of its id (>= 50 ms apart, nearest in time)."""
    samples: dict[str, list[tuple[int, float, float]]] = {}
    for per_stamp in frames.values():
        for f in per_stamp.values():
            for oid, (x, y) in zip(f.ids, f.xy):
                samples.setdefault(oid, []).append((f.stamp_ns, float(x), float(y)))
    tracks = {k: np.array(sorted(set(v))) for k, v in samples.items()}
    for per_stamp in frames.values():
        for f in per_stamp.values():
            f.velocity = []
            for oid in f.ids:
                s = tracks[oid]
                far = np.abs(s[:, 0] - f.stamp_ns) >= 50e6
                if not far.any():
                    f.velocity.append(None)
                    continue
                before = s[far & (s[:, 0] < f.stamp_ns)]
                after = s[far & (s[:, 0] > f.stamp_ns)]
                a = before[-1] if len(before) else s[np.abs(s[:, 0] - f.stamp_ns).argmin()]
                b = after[0] if len(after) else s[np.abs(s[:, 0] - f.stamp_ns).argmin()]
                dt = (b[0] - a[0]) / 1e9
                f.velocity.append(((b[1] - a[1]) / dt, (b[2] - a[2]) / dt) if dt > 0 else None)


def load_ground_truth(bag: Path) -> dict[str, dict[int, GtFrame]]:
    """Per ground-truth topic, per stamp, the objects of the bag's Detection3DArray ground truth."""
    from dpa_perception.bags.objects import objects_topics, read_objects

    topics = [t for t in objects_topics(bag) if t.endswith("/ground_truth/objects")]
    if not topics:
        raise ConfigError(f"--bag {bag}: no <camera ns>/ground_truth/objects topic (make one with dpa-demo-bag)")
    frames: dict[str, dict[int, GtFrame]] = {}
    for topic, msgs in read_objects(bag, topics).items():
        frames[topic] = {m.stamp_ns: GtFrame(m.stamp_ns, [o.id for o in m.objects],
                                             np.array([(o.x, o.y) for o in m.objects], np.float64).reshape(-1, 2),
                                             [COCO_NAMES.get(o.class_id, o.class_id) for o in m.objects])
                         for m in msgs}
    _velocities(frames)
    return frames


def load_weather(bag: Path) -> list[tuple[int, str]]:
    """(log time, condition) of the bag's ``/rsu/weather`` announcements (``kind:strength``; strength 0 = clear)."""
    from dpa_perception.bags.objects import read_strings

    out = []
    for ns, text in read_strings(bag, "/rsu/weather"):
        kind, _, strength = text.partition(":")
        try:
            clear = float(strength) <= 0
        except ValueError:
            clear = False
        out.append((ns, "clear" if clear else kind))
    return sorted(out)


def weather_at(weather: Sequence[tuple[int, str]], stamp_ns: int) -> str:
    cond = "unknown"
    for ns, c in weather:
        if ns > stamp_ns:
            break
        cond = c
    return cond


def camera_positions(points: Path | None) -> dict[str, tuple[float, float]]:
    """Camera topic -> ground position (x, y) from a points file (cameras without ``position`` left out)."""
    if points is None:
        return {}
    from dpa_perception.world.calibration import load_points

    return {c.topic: (c.position[0], c.position[1]) for c in load_points(points).cameras if c.position is not None}


def _fused_gt(gt: dict[str, dict[int, GtFrame]], stamp_ns: int) -> GtFrame:
    """Union over cameras of the ground truth nearest to ``stamp_ns`` (within half a frame period)."""
    ids: dict[str, tuple[int, Any, str, Any]] = {}
    for per_stamp in gt.values():
        stamps = np.fromiter(per_stamp, np.int64)
        if not len(stamps):
            continue
        period = float(np.median(np.diff(np.sort(stamps)))) if len(stamps) > 1 else math.inf
        k = int(np.abs(stamps - stamp_ns).argmin())
        gap = abs(int(stamps[k]) - stamp_ns)
        if gap > period / 2:
            continue
        f = per_stamp[int(stamps[k])]
        for oid, xy, cls, v in zip(f.ids, f.xy, f.classes, f.velocity or [None] * len(f.ids)):
            if oid not in ids or gap < ids[oid][0]:
                ids[oid] = (gap, xy, cls, v)
    keys = sorted(ids)
    return GtFrame(stamp_ns, keys, np.array([ids[k][1] for k in keys], np.float64).reshape(-1, 2),
                   [ids[k][2] for k in keys], [ids[k][3] for k in keys])


def _distances(gt: GtFrame, hyps: Sequence[WorldObject], max_d: float, class_aware: bool) -> np.ndarray:
    if not len(gt.ids) or not hyps:
        return np.empty((len(gt.ids), len(hyps)))
    hxy = np.array([(h.x, h.y) for h in hyps], np.float64)
    d = np.linalg.norm(gt.xy[:, None, :] - hxy[None, :, :], axis=2)
    if class_aware:
        same = np.array([[c == h.class_name for h in hyps] for c in gt.classes])
    else:  # within the class's group: a rider (person) and its bicycle share one footprint, never one match
        same = np.array([[class_group(c) == class_group(h.class_name) for h in hyps] for c in gt.classes])
    d[~same] = np.nan
    d[d > max_d] = np.nan
    return d


@dataclass
class _Stream:
    """One output topic's accumulator and what each of its frames held."""

    acc: Any
    meta: dict[int, tuple[str, str]] = field(default_factory=dict)  # frame -> (weather, mode)
    gt_info: dict[tuple[int, int], tuple[float, tuple[float, float] | None]] = field(default_factory=dict)
    hyp_info: dict[tuple[int, int], tuple[float, float, float]] = field(default_factory=dict)  # vx, vy, age


def _range(xy: np.ndarray, cams: Iterable[tuple[float, float]]) -> float:
    d = [math.hypot(float(xy[0]) - cx, float(xy[1]) - cy) for cx, cy in cams]
    return min(d) if d else math.nan


def _motmetrics() -> Any:
    try:
        import motmetrics
    except ImportError as exc:
        raise ConfigError("dpa-eval --tracks needs the motmetrics package (pip install motmetrics, or the dev extra)"
                          ) from exc
    return motmetrics


def accumulate(lines: Sequence[TrackLine], gt: dict[str, dict[int, GtFrame]], positions: dict[str, tuple[float, float]],
               weather: Sequence[tuple[int, str]], max_d: float = MAX_DISTANCE_M, class_aware: bool = False
               ) -> tuple[dict[str, _Stream], int]:
    """One motmetrics accumulator per output topic; also how many lines had no ground truth to compare with."""
    mm = _motmetrics()

    gt_ids: dict[str, int] = {}  # motmetrics wants numeric ids
    streams: dict[str, _Stream] = {}
    unmatched = 0
    for line in sorted(lines, key=lambda r: (r.topic, r.stamp_ns)):
        if line.camera:
            g = gt.get(gt_topic(line.camera), {}).get(line.stamp_ns)
            cams = [positions[line.camera]] if line.camera in positions else []
        else:
            g = _fused_gt(gt, line.stamp_ns)
            cams = list(positions.values())
        if g is None:
            unmatched += 1
            continue
        s = streams.setdefault(line.topic, _Stream(mm.MOTAccumulator(auto_id=False)))
        fid = len(s.meta)
        s.meta[fid] = (weather_at(weather, line.stamp_ns), line.mode)
        hyps = [h for h in line.objects if h.confirmed and h.track_id >= 1]
        oids = [gt_ids.setdefault(o, len(gt_ids)) for o in g.ids]
        for oid, xy, v in zip(oids, g.xy, g.velocity or [None] * len(oids)):
            s.gt_info[(fid, oid)] = (_range(xy, cams), v)
        for h in hyps:
            s.hyp_info[(fid, h.track_id)] = (h.vx, h.vy, h.age_s)
        s.acc.update(oids, [h.track_id for h in hyps], _distances(g, hyps, max_d, class_aware), frameid=fid)
    return streams, unmatched


def _match_errors(streams: Sequence[_Stream], frames: Sequence[set[int]]) -> dict[str, Any]:
    """Position errors per distance band and velocity errors of the matched pairs of the selected frames."""
    pos: dict[str, list[float]] = {b: [] for b, _, _ in (*BANDS, WITHIN)}
    vel: list[float] = []
    for s, sel in zip(streams, frames):
        ev = s.acc.mot_events
        m = ev[ev["Type"].isin(["MATCH", "SWITCH"])]
        for (fid, _e), row in zip(m.index, m.itertuples(index=False)):
            if fid not in sel:
                continue
            oid, hid, d = int(row.OId), int(row.HId), float(row.D)
            rng, v = s.gt_info[(fid, oid)]
            for band, lo, hi in (*BANDS, WITHIN):
                if lo <= rng < hi:
                    pos[band].append(d)
            hvx, hvy, age = s.hyp_info[(fid, hid)]
            if v is not None and age > MIN_TRACK_AGE_S:
                vel.append(math.hypot(hvx - v[0], hvy - v[1]))

    def stats(x: list[float]) -> dict[str, Any]:
        a = np.asarray(x)
        return {"n": len(a), "median": round(float(np.median(a)), 4) if len(a) else None,
                "p90": round(float(np.percentile(a, 90)), 4) if len(a) else None}

    ve = stats(vel)
    return {"position_error_m": {b: stats(x) for b, x in pos.items()},
            "velocity_error_mps": {"n": ve["n"], "median": ve["median"]}}


def _selected(s: _Stream, weather: str | None, mode: str | None) -> set[int]:
    return {f for f, (w, m) in s.meta.items() if (weather is None or w == weather) and (mode is None or m == mode)}


def _metrics(streams: Sequence[_Stream], weather: str | None, mode: str | None) -> dict[str, Any] | None:
    mm = _motmetrics()

    frames = [_selected(s, weather, mode) for s in streams]
    if not any(frames):
        return None
    dfs = []
    for s, sel in zip(streams, frames):
        ev = s.acc.events
        dfs.append(ev[ev.index.get_level_values("FrameId").isin(sorted(sel))])
    mh = mm.metrics.create()
    if len(dfs) == 1:
        summary = mh.compute(dfs[0], metrics=MOT_METRICS, name="x").iloc[0]
    else:
        summary = mh.compute_many(dfs, metrics=MOT_METRICS, names=[str(i) for i in range(len(dfs))],
                                  generate_overall=True).loc["OVERALL"]
    out: dict[str, Any] = {}
    for k in MOT_METRICS:
        v = float(summary[k])
        out[k] = (int(v) if k.startswith("num_") else round(v, 4)) if math.isfinite(v) else None
    out.update(_match_errors(streams, frames))
    return out


def _breakdown(streams: Sequence[_Stream]) -> dict[str, Any]:
    conds = sorted({w for s in streams for w, _ in s.meta.values()})
    modes = sorted({m for s in streams for _, m in s.meta.values()})
    return {"all": _metrics(streams, None, None),
            "by_weather": {c: _metrics(streams, c, None) for c in conds},
            "by_mode": {m: _metrics(streams, None, m) for m in modes}}


def evaluate_tracks(lines: Sequence[TrackLine], gt: dict[str, dict[int, GtFrame]],
                    positions: dict[str, tuple[float, float]], weather: Sequence[tuple[int, str]],
                    max_distance: float = MAX_DISTANCE_M, class_aware: bool = False) -> dict[str, Any]:
    """Metrics per output topic (with weather and mode breakdowns) and over all per-camera topics."""
    streams, unmatched = accumulate(lines, gt, positions, weather, max_distance, class_aware)
    cam_topics = sorted({ln.topic for ln in lines if ln.camera})
    result: dict[str, Any] = {"max_distance_m": max_distance, "class_aware": class_aware, "lines_without_ground_truth":
                              unmatched, "hota": None, "hota_note": "motmetrics 1.4 has no HOTA", "topics": {}}
    for topic, s in sorted(streams.items()):
        result["topics"][topic] = _breakdown([s])
    per_cam = [streams[t] for t in cam_topics if t in streams]
    if per_cam:
        result["topics"][CAMERAS] = _breakdown(per_cam)
    return result


def evaluate_replay(replay_dir: Path, bag: Path, points: Path | None = None, max_distance: float = MAX_DISTANCE_M,
                    class_aware: bool = False) -> dict[str, Any]:
    """:func:`evaluate_tracks` of ``replay_dir/tracks.jsonl`` against the demo bag ``bag``."""
    from dpa_perception.demo.make_bag import points_path

    tracks = Path(replay_dir) / "tracks.jsonl"
    if not Path(replay_dir).is_dir():
        raise ConfigError(f"--tracks {replay_dir}: not a folder (a dpa-replay output folder)")
    if not tracks.is_file():
        raise ConfigError(f"--tracks {replay_dir}: no tracks.jsonl (replay with world tracking on)")
    if points is None and points_path(bag).is_file():
        points = points_path(bag)
    res = evaluate_tracks(load_tracks(tracks), load_ground_truth(bag), camera_positions(points), load_weather(bag),
                          max_distance, class_aware)
    return {"tracks": str(tracks), "bag": str(bag), "points": str(points) if points else None, **res}


def markdown_table(result: dict[str, Any]) -> str:
    """One row per topic and selection: MOTA, IDF1, switches, precision, recall, errors."""
    head = ("| topic | selection | MOTA | IDF1 | ID sw | precision | recall | pos err median 0-25 / 25-50 / 50+ m "
            "| pos err 0-50 m median / p90 | vel err median m/s |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    for topic, b in result["topics"].items():
        rows = [("all", b["all"])] + [(f"weather {k}", v) for k, v in b["by_weather"].items()] + \
               [(f"mode {k}", v) for k, v in b["by_mode"].items()]
        for name, m in rows:
            if m is None:
                continue
            pe = " / ".join(f(m["position_error_m"][band]["median"], ".2f") for band, _, _ in BANDS)
            w = m["position_error_m"][WITHIN[0]]
            lines.append(f"| {topic} | {name} | {f(m['mota'])} | {f(m['idf1'])} | {m['num_switches']} | "
                         f"{f(m['precision'])} | {f(m['recall'])} | {pe} | {f(w['median'], '.2f')} / {f(w['p90'], '.2f')} "
                         f"| {f(m['velocity_error_mps']['median'], '.2f')} |")
    return "\n".join(lines)

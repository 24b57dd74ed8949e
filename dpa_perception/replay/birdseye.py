"""Bird's-eye picture of a replay's tracks: the world frame seen from above, in metres.

One polyline per track id (coloured by class) with a marker at its last position, id labels on the
longer tracks, each camera's field of view on the ground as a translucent polygon labelled with its
name and mounting position. World frame: ``x`` east, ``y`` north (:mod:`dpa_perception.world.objects`).

Input: the tracks.jsonl records, ``{"topic", "camera", "stamp_ns", "mode", "objects": [...]}``; the
fused lines (``"camera": ""``) are drawn when there are any, else the per-camera lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.core.types import class_name

FovMap = Mapping[str, tuple[Any, Any]]  # camera -> (polygon (K, 2) metres, origin (x, y) or None)
LONG_TRACK_M = 5.0  # tracks at least this long (path length, metres) get an id label
MAX_ID_LABELS = 60  # at most this many id labels (the longest tracks), to keep the plot readable
FIG_SIZE_IN = (10.0, 10.0)
DPI = 100


@dataclass
class _Track:
    class_id: int
    name: str
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    def length(self) -> float:
        if len(self.xs) < 2:
            return 0.0
        return float(np.hypot(np.diff(self.xs), np.diff(self.ys)).sum())


def select_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The fused records (``camera`` empty) if any, else all the per-camera ones."""
    fused = [r for r in records if not r.get("camera")]
    return fused if fused else list(records)


def collect_tracks(records: Iterable[Mapping[str, Any]], class_names: Sequence[str] = ()) -> dict[Any, _Track]:
    """Positions per track, in stamp order. Untracked objects (``track_id`` 0) are skipped.

    Per-camera records may hold the same track id for different objects: the key is then
    ``(camera, track_id)``; fused records key by the id alone.
    """
    rows = sorted(records, key=lambda r: int(r.get("stamp_ns", 0)))
    tracks: dict[Any, _Track] = {}
    for rec in rows:
        cam = rec.get("camera") or ""
        for obj in rec.get("objects") or ():
            tid = int(obj.get("track_id", 0))
            if tid <= 0:
                continue
            key: Any = (cam, tid) if cam else tid
            tr = tracks.get(key)
            if tr is None:
                cid = int(obj.get("class_id", -1))
                tr = tracks[key] = _Track(cid, str(obj.get("class_name") or class_name(class_names, cid)))
            tr.xs.append(float(obj["x"]))
            tr.ys.append(float(obj["y"]))
    return tracks


def _class_colors(tracks: Mapping[Any, _Track]) -> dict[str, Any]:
    """One tab10 colour per class name, by class id (the same class keeps its colour from run to run)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {t.name: cmap(t.class_id % 10) for t in tracks.values()}


def _points(poly: Any) -> np.ndarray:
    """A polygon as (K, 2) float metres; ``None`` (a camera that sees no ground) as no points."""
    return np.zeros((0, 2)) if poly is None else np.asarray(poly, np.float64).reshape(-1, 2)


def _draw_fovs(ax: Any, fovs: FovMap) -> None:
    import matplotlib
    from matplotlib.patches import Polygon

    cmap = matplotlib.colormaps["Dark2"]
    for i, (cam, (poly, origin)) in enumerate(sorted(fovs.items())):
        pts = _points(poly)
        color = cmap(i % 8)  # a muted palette apart from the classes' tab10
        if len(pts) >= 3:
            ax.add_patch(Polygon(pts, closed=True, facecolor=color, edgecolor="none", alpha=0.15, zorder=1))
            ax.add_patch(Polygon(pts, closed=True, fill=False, edgecolor=color, lw=1.2, ls="--", zorder=2))
        if origin is not None:
            ox, oy = float(origin[0]), float(origin[1])
            ax.plot([ox], [oy], marker="^", ms=9, color=color, mec="k", zorder=5)
            ax.annotate(f"{cam}\n({ox:.1f}, {oy:.1f}) m", (ox, oy), xytext=(6, -14), textcoords="offset points",
                        fontsize=8, color="k", zorder=6)  # fmt: skip
        elif len(pts):
            cx, cy = pts.mean(axis=0)
            ax.annotate(cam, (cx, cy), fontsize=8, color="k", ha="center", zorder=6)


def _draw_tracks(ax: Any, tracks: Mapping[Any, _Track], colors: Mapping[str, Any]) -> None:
    """All polylines of a class as one line collection (fast for thousands of tracks)."""
    from matplotlib.collections import LineCollection

    by_class: dict[str, list[np.ndarray]] = {}
    for tr in tracks.values():
        by_class.setdefault(tr.name, []).append(np.column_stack([tr.xs, tr.ys]))
    for name in sorted(by_class):
        segs = by_class[name]
        ax.add_collection(LineCollection(segs, colors=[colors[name]], linewidths=1.8, alpha=0.9, zorder=3))
        last = np.array([s[-1] for s in segs])
        ax.scatter(last[:, 0], last[:, 1], s=18, color=colors[name], edgecolors="k", linewidths=0.4, zorder=4,
                   label=f"{name} ({len(segs)})")  # fmt: skip
    lengths = sorted(((tr.length(), key) for key, tr in tracks.items()), key=lambda kv: -kv[0])
    for length, key in lengths[:MAX_ID_LABELS]:
        if length < LONG_TRACK_M:
            break
        tr = tracks[key]
        tid = key[1] if isinstance(key, tuple) else key
        ax.annotate(f"#{tid}", (tr.xs[-1], tr.ys[-1]), xytext=(3, 3), textcoords="offset points", fontsize=7, zorder=6)


def _limits(ax: Any, tracks: Mapping[Any, _Track], fovs: FovMap) -> None:
    pts = [np.column_stack([t.xs, t.ys]) for t in tracks.values()]
    for poly, origin in fovs.values():
        pts.append(_points(poly))
        if origin is not None:
            pts.append(np.array([[float(origin[0]), float(origin[1])]]))
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    allp = allp[np.isfinite(allp).all(axis=1)]
    if not len(allp):
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        return
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    half = max(2.0, 0.55 * float((hi - lo).max()))  # a square view (equal scaling on a square figure)
    cx, cy = (lo + hi) / 2.0
    ax.set_xlim(cx - half, cx + half)
    ax.set_ylim(cy - half, cy + half)


def write_birdseye(
    path: Path | str,
    records: Sequence[Mapping[str, Any]],
    fovs: FovMap,
    class_names: Sequence[str] = (),
    title: str = "",
) -> None:
    """Write the bird's-eye PNG of ``records`` (tracks.jsonl lines) and the cameras' ``fovs`` to ``path``.

    No records, or none with a track, give a plot that says so (with the fields of view), never an error.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = select_records(records)
    tracks = collect_tracks(chosen, class_names)
    fig, ax = plt.subplots(figsize=FIG_SIZE_IN)
    try:
        _draw_fovs(ax, fovs)
        _draw_tracks(ax, tracks, _class_colors(tracks))
        _limits(ax, tracks, fovs)
        if not tracks:
            ax.text(0.5, 0.5, "no tracks", transform=ax.transAxes, ha="center", va="center", fontsize=20, color="0.4")
        else:
            ax.legend(loc="upper right", fontsize=8, title="class (tracks)")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(True, lw=0.5, alpha=0.5)
        ax.set_xlabel("x east (m)")
        ax.set_ylabel("y north (m)")
        source = "fused" if chosen and not chosen[0].get("camera") else "per camera"
        sub = f"{len(tracks)} tracks from {len(chosen)} {source} records" if chosen else "no records"
        ax.set_title(f"{title}\n{sub}" if title else sub)
        fig.tight_layout()
        fig.savefig(str(path), dpi=DPI)
    finally:
        plt.close(fig)

"""The replay's summary.json: counts, latency percentiles, modes, detections, visibility, per camera."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.core.pipeline import PipelineConfig
from dpa_perception.core.pipeline_state import percentiles
from dpa_perception.core.stats import PipelineStats

STAGES = ("queue_wait", "decode", "visibility", "preprocess", "inference", "postprocess", "world")


def pct(a: np.ndarray) -> dict[str, float | None]:
    """p50 / p95 / p99 of ``a`` rounded to 0.01 (None when empty)."""
    return percentiles(list(a), digits=2)


STATUSES = ("processed", "dropped", "rejected", "failed")


def per_camera_counts(frames: list[dict[str, Any]], topics: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per camera: frames in and how each ended (in = processed + dropped + rejected + failed)."""
    out = {t: dict.fromkeys(("in", *STATUSES), 0) for t in topics}
    for f in frames:
        c = out.setdefault(f["topic"], dict.fromkeys(("in", *STATUSES), 0))
        c["in"] += 1
        c[f["status"]] = c.get(f["status"], 0) + 1
    return out


def top_reasons(frames: list[dict[str, Any]], status: str, n: int = 3) -> list[tuple[str, int]]:
    return Counter(str(f["reason"]) for f in frames if f["status"] == status).most_common(n)


def summarize(frames: list[dict[str, Any]], stats: PipelineStats, config: PipelineConfig, engine: dict[str, Any], *,
              pace: str, weather: str, bags: Sequence[Path], topics: Sequence[str], written: int,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary; ``extra`` (how the run ended, the timeline) goes first."""
    proc = [f for f in frames if f["status"] == "processed"]
    e2e = np.array([f["e2e_ms"] for f in proc], np.float64)
    stages = {s: pct(np.array([f["timing_ms"][s] for f in proc], np.float64)) for s in STAGES}
    classes: Counter[str] = Counter()
    for f in proc:
        classes.update(f.get("classes", {}))
    vis = np.array([f["visibility"]["score"] for f in proc if f.get("visibility")], np.float64)
    labels = Counter(f["visibility"]["label"] for f in proc if f.get("visibility"))
    drops = Counter(f["reason"] for f in frames if f["status"] == "dropped")
    over = int(np.sum(e2e > config.latency_budget_ms))
    return {
        "ended": "complete",
        **(extra or {}),
        "bags": [str(b) for b in bags],
        "topics": list(topics),
        "pace": pace,
        "precision_mode": config.precision_mode,
        "weather": weather,
        "budget_ms": config.latency_budget_ms,
        "input_shape": config.input_shape,
        "max_batch": config.max_batch,
        "engine": engine,
        "frames_in": len(frames),
        "frames_processed": len(proc),
        "frames_dropped": sum(1 for f in frames if f["status"] == "dropped"),
        "frames_rejected": sum(1 for f in frames if f["status"] == "rejected"),
        "frames_failed": sum(1 for f in frames if f["status"] == "failed"),
        "frames_per_camera": per_camera_counts(frames, topics),
        "reject_reasons": dict(top_reasons(frames, "rejected", 10)),
        "fail_reasons": dict(top_reasons(frames, "failed", 3)),
        "drop_reasons": dict(drops),
        "deadline_misses": int(drops.get("stale", 0) + drops.get("late", 0) + over),
        "processed_over_budget": over,
        "latency_ms": pct(e2e),
        "stage_latency_ms": stages,
        "batch_sizes": dict(sorted(Counter(f["batch"] for f in proc).items())),
        "frames_per_mode": stats.precision.frames_per_mode,
        "switches": stats.precision.switches,
        "detections_total": int(sum(f["detections"] for f in proc)),
        "detections_per_class": dict(classes.most_common()),
        "detection_messages_written": written,
        "visibility": {"mean": round(float(vis.mean()), 3) if len(vis) else None,
                       "max": round(float(vis.max()), 3) if len(vis) else None, "labels": dict(labels)},
        "per_camera": {name: asdict(c) for name, c in stats.cameras.items()},
    }

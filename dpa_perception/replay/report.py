"""Replay report: one picture that shows latency, mode, visibility and detections over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_report(
    path: Path, frames: list[dict[str, Any]], budget_ms: float, title: str,
    thresholds: tuple[float, float] | None = None,
) -> None:
    """Four panels over replay time: end-to-end latency with the budget, mode, visibility, detections.

    Frames without a result (none at all, or none processed) give empty panels, never an error.

    ``thresholds``: the governor's (enter, leave) visibility thresholds, drawn on the visibility panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def when(f: dict[str, Any]) -> int:  # replay time (bags back to back), else the header stamp
        return int(f.get("play_ns") or f["stamp_ns"])

    t0 = min((when(f) for f in frames), default=0)
    proc = [f for f in frames if f["status"] == "processed"]
    drop = [f for f in frames if f["status"] != "processed"]
    t = np.array([(when(f) - t0) / 1e9 for f in proc], np.float64)
    fig, axes = plt.subplots(4, 1, figsize=(12, 10), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 2, 2]})
    ax = axes[0]
    cams = sorted({f["topic"] for f in frames})
    for cam in cams:
        sel = [i for i, f in enumerate(proc) if f["topic"] == cam]
        ax.plot(t[sel], [proc[i]["e2e_ms"] for i in sel], ".", ms=4, label=cam)
    ax.axhline(budget_ms, color="r", ls="--", label=f"budget {budget_ms:g} ms")
    if drop:
        td = [(when(f) - t0) / 1e9 for f in drop]
        ax.plot(td, [budget_ms * 1.05] * len(td), "x", color="k", ms=5, label=f"dropped ({len(drop)})")
    ax.set_ylabel("end-to-end ms")
    if cams:
        ax.legend(loc="best", fontsize=7, ncol=min(4, len(cams) + 2))
    e2e = np.array([f["e2e_ms"] for f in proc]) if proc else np.zeros(1)
    ax.set_title(f"{title}\n{len(proc)} processed, {len(drop)} dropped, p50 {np.percentile(e2e, 50):.0f} ms, "
                 f"p99 {np.percentile(e2e, 99):.0f} ms")
    ax = axes[1]
    modes = np.array([1 if f["mode"] == "high" else 0 for f in proc])
    ax.scatter(t, modes, c=np.where(modes == 1, "#d62728", "#1f77b4"), s=6)
    ax.set_yticks([0, 1], ["int8", "high"])
    ax.set_ylim(-0.5, 1.5)
    ax.set_ylabel("mode")
    ax = axes[2]
    vis = np.array([f["visibility"]["score"] if f.get("visibility") else np.nan for f in proc])
    labels = np.array([f["visibility"]["label"] if f.get("visibility") else "" for f in proc])
    for i, label in enumerate(sorted(set(labels) - {""})):  # colour by the estimated condition
        sel = labels == label
        ax.plot(t[sel], vis[sel], ".", ms=3, color=f"C{i}", label=label)
    if thresholds is not None:
        ax.axhline(thresholds[0], color="#d62728", ls="--", lw=1, label=f"enter high {thresholds[0]:g}")
        ax.axhline(thresholds[1], color="#1f77b4", ls=":", lw=1, label=f"leave high {thresholds[1]:g}")
    if len(proc) or thresholds is not None:
        ax.legend(loc="best", fontsize=7, ncol=4)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("visibility\ndegradation")
    ax = axes[3]
    ax.bar(t, [f["detections"] for f in proc], width=max(0.02, (t.max() - t.min()) / max(len(t), 1) * 0.8 if len(t) else 0.1))
    ax.set_ylabel("detections")
    ax.set_xlabel("bag time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

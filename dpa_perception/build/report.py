"""The build's precision report: ``precision_report.json`` and ``precision_report.png``.

The picture answers at a glance: the measured speed of high precision, of each plan searched and
of the chosen INT8 file (with its confidence interval), whether INT8 pays, the INT8-vs-high
agreement, and each layer's sensitivity along the network (kept layers marked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.build import sensitivity as sens

FLOOR = 1e-4  # sensitivities below this (or exactly 0) are drawn at it: a log axis has no 0


@dataclass(frozen=True)
class SpeedPanel:
    """What the speed panel shows (from the plan search and the INT8 verdict)."""

    high_ms: float  # the final verdict's high-precision median
    int8_ms: float
    verdict: dict[str, Any]  # SpeedVerdict.as_dict()
    plans: dict[str, dict[str, Any]]  # per strategy: int8_ms (timed with high_ms_search), units_kept
    high_ms_search: float
    chosen: str
    agreement: dict[str, float]  # recall, precision of INT8 vs high on held-out frames


def short_name(name: str, width: int = 30) -> str:
    """A layer name a reader can place: the last path parts, without the Conv suffix."""
    parts = [p for p in name.replace("/conv/Conv", "").replace("/Conv", "").split("/") if p]
    out = "/".join(parts[-2:]) if parts else name
    return out if len(out) <= width else "…" + out[-(width - 1):]


def _speed(ax: Any, s: SpeedPanel) -> None:
    v = s.verdict
    labels = ["high precision (plan search)", *[f"{k} plan, {p['units_kept']} kept" for k, p in s.plans.items()],
              "high precision (verdict)", f"INT8 chosen ({s.chosen})"]  # fmt: skip
    ms = [s.high_ms_search, *[float(p["int8_ms"]) for p in s.plans.values()], s.high_ms, s.int8_ms]
    colors = ["#7f7f7f", *["#d62728" if k == s.chosen else "#ff9896" for k in s.plans], "#7f7f7f", "#d62728"]
    y = np.arange(len(ms))[::-1]
    ax.barh(y, ms, color=colors)
    for yi, m in zip(y, ms):
        ax.text(m, yi, f" {m:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("median ms per frame (batch 1, 1 thread, interleaved)")
    ax.set_xlim(0, max(ms) * 1.25)
    word = {"pays": "INT8 PAYS", "does_not_pay": "INT8 DOES NOT PAY: auto runs high precision",
            "undecided": "INT8 UNDECIDED: auto runs high precision"}[v["int8_verdict"]]
    lo, hi = v["speedup_ci"]
    ax.set_title(f"{word} — speed-up {v['speedup']:.2f}x ({v['confidence']:.0%} CI {lo:.2f}-{hi:.2f}, "
                 f"{v['rounds']} rounds, threshold {v['min_speedup']:g}x); INT8 vs high on held-out: "
                 f"recall {s.agreement['recall']:.3f}, precision {s.agreement['precision']:.3f}",
                 fontsize=9, color="#2ca02c" if v["int8_verdict"] == "pays" else "#d62728")  # fmt: skip


def _sensitivity(ax: Any, units: list[sens.Unit], title: str) -> None:
    x = np.arange(len(units))
    vals = np.array([u.sensitivity for u in units], np.float64)
    colors = ["#d62728" if u.kept else ("#9ecae1" if u.depthwise else "#1f77b4") for u in units]
    ax.bar(x, np.maximum(np.nan_to_num(vals), FLOOR), color=colors, width=0.85)
    ax.set_yscale("log")
    ax.set_ylim(bottom=FLOOR)
    ax.set_ylabel(f"score error quantized alone\n(<= {FLOOR:g} drawn at {FLOOR:g})", fontsize=8)
    ax.set_title(title, fontsize=9)
    step = max(1, len(units) // 30)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([short_name(u.name) for u in units][::step], rotation=60, ha="right", fontsize=7)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#d62728", label="kept in high precision"), Patch(color="#1f77b4", label="INT8 conv"),
                       Patch(color="#9ecae1", label="INT8 depthwise conv")], loc="upper right", fontsize=8)


def write_report(out_dir: Path, units: list[sens.Unit], curve: dict[int, float], max_error: float, title: str,
                 speed: SpeedPanel) -> None:
    """``precision_report.json`` and ``precision_report.png`` (speed and verdict, sensitivity, error curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "precision_report.json").write_text(
        json.dumps({"max_error": max_error, "error_by_kept_count": {str(k): v for k, v in sorted(curve.items())},
                    "speed": {"verdict": speed.verdict, "plans": speed.plans, "chosen": speed.chosen,
                              "high_ms_plan_search": speed.high_ms_search},
                    "agreement": speed.agreement, "units": [u.as_dict() for u in units]}, indent=2) + "\n"
    )  # fmt: skip
    fig, (ax0, ax, ax2) = plt.subplots(3, 1, figsize=(13, 10), gridspec_kw={"height_ratios": [1.6, 3, 1.4]})
    _speed(ax0, speed)
    _sensitivity(ax, units, title)
    ks = sorted(curve)
    ax2.plot(ks, [curve[k] for k in ks], "o-")
    ax2.axhline(max_error, color="r", ls="--", label=f"max error {max_error}")
    ax2.set_xlabel("units kept in high precision (searched plan sizes)")
    ax2.set_ylabel("1 - F1 vs high precision")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "precision_report.png", dpi=90)
    plt.close(fig)

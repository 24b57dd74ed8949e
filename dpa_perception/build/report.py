"""The build's precision report: ``precision_report.json`` and ``precision_report.png``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dpa_perception.build import sensitivity as sens


def write_report(out_dir: Path, units: list[sens.Unit], curve: dict[int, float], max_error: float, title: str) -> None:
    """``precision_report.json`` and ``precision_report.png``: sensitivity along the network, kept units marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "precision_report.json").write_text(
        json.dumps({"max_error": max_error, "error_by_kept_count": {str(k): v for k, v in sorted(curve.items())},
                    "units": [u.as_dict() for u in units]}, indent=2) + "\n"
    )
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 7), gridspec_kw={"height_ratios": [3, 1.4]})
    x = np.arange(len(units))
    vals = np.array([u.sensitivity for u in units])
    colors = ["#d62728" if u.kept else ("#9ecae1" if u.depthwise else "#1f77b4") for u in units]
    ax.bar(x, np.nan_to_num(vals), color=colors, width=0.85)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylabel("score error when quantized alone")
    ax.set_title(title)
    step = max(1, len(units) // 25)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([u.name.strip("/").replace("/conv/Conv", "").replace("/Conv", "")[-28:] for u in units][::step],
                       rotation=60, ha="right", fontsize=7)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#d62728", label="kept in high precision"), Patch(color="#1f77b4", label="INT8 conv"),
                       Patch(color="#9ecae1", label="INT8 depthwise conv")], loc="upper right")
    ks = sorted(curve)
    ax2.plot(ks, [curve[k] for k in ks], "o-")
    ax2.axhline(max_error, color="r", ls="--", label=f"max error {max_error}")
    ax2.set_xlabel("units kept in high precision (most sensitive first)")
    ax2.set_ylabel("1 - F1 vs high precision")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "precision_report.png", dpi=90)
    plt.close(fig)

"""``input_shape: auto``: rect where the engine build measured it safe, square otherwise; and the reduced
input scales (the shape ladder) the build measured, which the governor may step down to (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpa_perception.core.types import INPUT_SHAPE_POLICIES


def resolve_input_shape(choice: str, dynamic_hw: bool, rect: Mapping[str, Any] | None,
                        min_agreement: float) -> tuple[str, str]:
    """The policy to run (``square`` or ``rect``) for the ``input_shape`` parameter, and why.

    ``rect``: the manifest's ``rect`` section (dpa-build: ``agreement_vs_square`` with ``f1``, and
    ``speedup`` of rect over square on the build's frames). ``auto`` picks rect when the model has
    dynamic H/W, the measured F1 is at least ``min_agreement`` and rect is not slower.
    """
    if choice in INPUT_SHAPE_POLICIES:
        return choice, "set by input_shape"
    if not dynamic_hw:
        return "square", "auto: the model's input size is fixed (no rect)"
    f1 = ((rect or {}).get("agreement_vs_square") or {}).get("f1")
    speedup = (rect or {}).get("speedup")
    if not isinstance(f1, (int, float)) or not isinstance(speedup, (int, float)):
        return "square", "auto: the engine folder has no rect measurement (rebuild with dpa-build)"
    if f1 < min_agreement:
        return "square", f"auto: rect agrees with square at F1 {f1:.3f}, below rect_min_agreement {min_agreement:g}"
    if speedup < 1.0:
        return "square", f"auto: rect agrees (F1 {f1:.3f}) but is not faster ({speedup:.2f}x)"
    return "rect", f"auto: rect agrees with square at F1 {f1:.3f} and runs {speedup:.2f}x"


@dataclass(frozen=True)
class Rung:
    """One reduced input scale the build measured: how much faster than full scale (same policy), and
    how well its detections agree with the full-size square canvas (F1)."""

    scale: float
    speedup: float
    f1: float


def ladder_rungs(rect: Mapping[str, Any] | None, policy: str) -> tuple[Rung, ...]:
    """The measured reduced scales of ``policy`` in the manifest's ``rect`` section, largest scale first.

    Only rungs that were measured faster than full scale are returned (a rung that is not faster is
    never worth its accuracy); an engine folder without the ladder (older build, fixed H/W) gives none.
    """
    entries = ((rect or {}).get("ladder") or {}).get(policy) or []
    out = []
    for e in entries:
        raw = (e.get("scale"), e.get("speedup"), (e.get("agreement_vs_square") or {}).get("f1"))
        values = [float(v) for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(values) != 3:
            continue  # malformed: not a measurement
        scale, speedup, f1 = values
        if 0.0 < scale < 1.0 and speedup > 1.0:
            out.append(Rung(scale, speedup, f1))
    return tuple(sorted(out, key=lambda r: -r.scale))

"""Where the layers of a built engine run: DLA fallback messages in the builder log, the engine
inspector's layer list, and the per-engine placement report recorded in the manifest. Pure Python."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dpa_perception.backends.base import Placement

MAX_LISTED_LAYERS = 200

_FALLBACK_PATTERNS = (
    re.compile(r"layer (?P<name>.+?) is not (?:supported|running) on DLA, falling back to GPU"),
    re.compile(r"Switching to GPU for layer (?P<name>.+?)\s*$"),
)


def parse_dla_fallback_messages(lines: Iterable[str]) -> list[str]:
    """Layer names the builder log says fell back from DLA to GPU (in order, no repeats)."""
    seen: dict[str, None] = {}
    for line in lines:
        for pat in _FALLBACK_PATTERNS:
            m = pat.search(line)
            if m:
                seen.setdefault(m.group("name").strip(), None)
    return list(seen)


def summarize_inspector_json(text: str) -> dict[str, Any]:
    """Count engine layers from ``IEngineInspector.get_engine_information(JSON)``.

    Works with the TensorRT 10 ("Bindings") and 11 ("I/O Tensors") schemas; both list "Layers",
    as names (ProfilingVerbosity below DETAILED) or as objects. A layer counts as DLA when its
    type, name or tactic mentions DLA (DLA subgraphs are DLA "ForeignNode" layers). ``dla_layers``
    is therefore a best effort; the network-level counts in the report are authoritative.
    """
    try:
        info = json.loads(text)
    except ValueError:
        return {"engine_layers": None, "engine_dla_layers": None}
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    dla = 0
    for layer in layers:
        if isinstance(layer, dict):
            fields = " ".join(
                str(layer.get(k, "")) for k in ("LayerType", "Name", "TacticName", "Origin")
            )
        else:
            fields = str(layer)
        if re.search(r"\bDLA\b", fields, re.IGNORECASE):
            dla += 1
    return {"engine_layers": len(layers), "engine_dla_layers": dla}


def placement_report(
    placement: Placement,
    network_layer_names: list[str],
    cannot_run_on_dla: list[str],
    log_fallbacks: list[str],
    inspector: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """How many network layers landed on DLA vs GPU and which fell back (capped list)."""
    total = len(network_layer_names)
    if placement.device != "dla":
        report: dict[str, Any] = {
            "network_layers": total,
            "on_dla": 0,
            "on_gpu": total,
            "fell_back": [],
            "fell_back_count": 0,
        }
    else:
        wanted = set(cannot_run_on_dla) | set(log_fallbacks)
        fell = [n for n in network_layer_names if n in wanted]
        fell += [n for n in log_fallbacks if n not in set(fell)]  # names the log spells differently
        report = {
            "network_layers": total,
            "on_dla": max(0, total - len(fell)),
            "on_gpu": len(fell),
            "fell_back": fell[:MAX_LISTED_LAYERS],
            "fell_back_count": len(fell),
        }
    if inspector:
        report.update(inspector)
    return report

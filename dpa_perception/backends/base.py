"""The one interface every inference backend implements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dpa_perception.core.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """Where a variant runs: ``cpu``, ``gpu`` or ``dla`` (with a core index)."""

    device: str  # "cpu" | "gpu" | "dla"
    dla_core: int = -1
    gpu_fallback: bool = True

    def __str__(self) -> str:
        return f"dla:{self.dla_core}" if self.device == "dla" else self.device


_PLACEMENT_RE = re.compile(r"^(cpu|gpu|dla:(\d+))$")


def parse_placement(text: str, gpu_fallback: bool = True) -> Placement:
    """Parse ``cpu``, ``gpu``, ``dla:0`` or ``dla:1`` into a :class:`Placement`."""
    m = _PLACEMENT_RE.match(text.strip().lower())
    if not m:
        raise ConfigError(f"placement {text!r} is not one of cpu, gpu, dla:N")
    if m.group(2) is not None:
        core = int(m.group(2))
        if core > 1:
            raise ConfigError(f"placement {text!r}: Jetson Orin has DLA cores 0 and 1 only")
        return Placement("dla", core, gpu_fallback)
    return Placement(m.group(1), -1, gpu_fallback)


class BackendSession(Protocol):
    """One loaded model variant, ready to run batches.

    ``run`` takes a contiguous float32 NCHW batch and returns the model's first output as a
    numpy array on the host. Sessions are created once (at configure) and reused per call.
    """

    input_name: str
    placement: Placement

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...

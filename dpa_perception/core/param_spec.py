"""One node parameter as data (:class:`ParamSpec`) and the parameter value types.

The tables themselves live in :mod:`dpa_perception.core.node_params` (detector, governor, topics)
and :mod:`dpa_perception.core.world_params` (camera geometry, tracking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Parameter value types (mirroring rcl_interfaces/ParameterType).
BOOL = "bool"
INT = "int"
DOUBLE = "double"
STRING = "string"
INT_ARRAY = "int_array"
STRING_ARRAY = "string_array"
DOUBLE_ARRAY = "double_array"
TYPES = (BOOL, INT, DOUBLE, STRING, INT_ARRAY, STRING_ARRAY, DOUBLE_ARRAY)


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter."""

    name: str
    type: str
    default: Any
    description: str
    live: bool = False  # True: may change while the node runs; False: read-only after start
    min: float | None = None  # inclusive bounds (numbers; per element for arrays)
    max: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"[{_fmt(self.min, self.type)}, {_fmt(self.max, self.type)}]"
        return ""

    @property
    def empty_array_default(self) -> bool:
        """An empty array default: declared with dynamic typing (see docs/ros.md, "empty lists")."""
        return self.type in (INT_ARRAY, STRING_ARRAY, DOUBLE_ARRAY) and not self.default


def _fmt(v: float, typ: str) -> str:
    return str(int(v)) if typ in (INT, INT_ARRAY) else repr(float(v))

"""dpa_perception: roadside-unit perception with a dual-precision (INT8 / high) detector."""

__version__ = "0.1.0"

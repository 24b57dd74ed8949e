"""QoS profiles built from the string parameters ``qos_reliability``, ``qos_history``, ``qos_depth``.

rclpy is imported inside the functions so the module (and its string checks) imports without ROS.
Policy names follow ``rclpy.qos`` (``ReliabilityPolicy.BEST_EFFORT`` ...), see docs/ros.md.
"""

from __future__ import annotations

from typing import Any

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.node_params import QOS_HISTORY, QOS_RELIABILITY

_RELIABILITY_ENUM = {"best_effort": "BEST_EFFORT", "reliable": "RELIABLE", "system_default": "SYSTEM_DEFAULT"}
_HISTORY_ENUM = {"keep_last": "KEEP_LAST", "keep_all": "KEEP_ALL", "system_default": "SYSTEM_DEFAULT"}


def qos_settings(reliability: str, history: str, depth: int) -> tuple[str, str, int]:
    """Normalised (reliability, history, depth) or :class:`ConfigError` naming the bad value."""
    rel = reliability.strip().lower()
    his = history.strip().lower()
    if rel not in QOS_RELIABILITY:
        raise ConfigError(f"qos_reliability must be one of {', '.join(QOS_RELIABILITY)}, got {reliability!r}")
    if his not in QOS_HISTORY:
        raise ConfigError(f"qos_history must be one of {', '.join(QOS_HISTORY)}, got {history!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"qos_depth must be an integer >= 1, got {depth!r}")
    return rel, his, depth


def camera_qos(reliability: str = "best_effort", history: str = "keep_last", depth: int = 1) -> Any:
    """``rclpy.qos.QoSProfile`` for camera subscriptions (default: best effort, keep last 1, volatile)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel, his, depth = qos_settings(reliability, history, depth)
    return QoSProfile(
        history=getattr(HistoryPolicy, _HISTORY_ENUM[his]),
        depth=depth,
        reliability=getattr(ReliabilityPolicy, _RELIABILITY_ENUM[rel]),
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = 10) -> Any:
    """Detections / debug image publishers: reliable, keep last ``depth``, volatile.

    A reliable publisher matches both reliable and best-effort subscribers.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> Any:
    """LabelInfo: reliable, transient local, keep last 1 (late subscribers get the last message)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )

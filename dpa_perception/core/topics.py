"""Topic naming for the ROS node, without ROS: input kinds and per-camera output topics.

``/rsu/cam0/image_raw`` and ``/rsu/cam0/image_raw/compressed`` both belong to the camera namespace
``/rsu/cam0``; its detections go to ``/rsu/cam0/detections`` and the optional annotated image to
``/rsu/cam0/detections/image``. Relative names stay relative (they resolve in the node's namespace).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dpa_perception.core.errors import ConfigError

COMPRESSED_SUFFIX = "/compressed"
DETECTIONS_NAME = "detections"
DEBUG_IMAGE_NAME = "image"
OBJECTS_NAME = "objects"  # <camera ns>/objects per camera, and the fused objects in the node's namespace
LABEL_INFO_NAME = "label_info"

# ROS 2 topic names: tokens of [A-Za-z0-9_] separated by '/', optional leading '/' or '~/',
# no token starting with a digit, no '__', no trailing '/' (rcl's validation, simplified).
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_TOPIC_RE = re.compile(rf"^(/|~/)?{_TOKEN}(/{_TOKEN})*$")


def check_topic_name(name: str, what: str = "topic") -> str:
    """Return ``name`` if it is a valid ROS 2 topic name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} name is empty")
    if not _TOPIC_RE.match(name) or "__" in name:
        raise ConfigError(
            f"{what} {name!r} is not a valid ROS 2 topic name (tokens of letters, digits and '_' "
            "separated by '/', not starting with a digit, no trailing '/')"
        )
    return name


def is_compressed(topic: str) -> bool:
    """Whether ``topic`` carries sensor_msgs/CompressedImage (its name ends in ``/compressed``)."""
    return topic.endswith(COMPRESSED_SUFFIX)


def camera_namespace(topic: str) -> str:
    """The camera's namespace: the topic without ``/compressed`` and without its last token.

    ``/rsu/cam0/image_raw`` -> ``/rsu/cam0``; ``/image`` -> ``/``; ``image_raw`` -> ``""``.
    """
    base = topic[: -len(COMPRESSED_SUFFIX)] if is_compressed(topic) else topic
    head, sep, _ = base.rpartition("/")
    if not sep:
        return ""
    return head if head not in ("", "~") else head + "/"


def _join(namespace: str, name: str) -> str:
    if not namespace:
        return name
    return namespace + name if namespace.endswith("/") else f"{namespace}/{name}"


def detection_topic(camera_topic: str) -> str:
    """Default Detection2DArray topic of a camera topic: ``<camera namespace>/detections``."""
    return _join(camera_namespace(camera_topic), DETECTIONS_NAME)


def objects_topic(camera_topic: str) -> str:
    """World-frame Detection3DArray topic of a camera topic: ``<camera namespace>/objects``."""
    return _join(camera_namespace(camera_topic), OBJECTS_NAME)


def debug_image_topic(detections_topic: str) -> str:
    """Annotated debug image topic beside a detections topic: ``<detections>/image``."""
    return _join(detections_topic, DEBUG_IMAGE_NAME)


def resolve_output_topics(camera_topics: Sequence[str], detection_topics: Sequence[str] = ()) -> list[str]:
    """Validate the input topics and return the detections topic of each, in order.

    ``detection_topics`` empty means the default naming; otherwise it must have one entry per camera.
    Two cameras publishing to the same detections topic (for example ``cam0/image_raw`` and
    ``cam0/image_raw/compressed``) are refused: the outputs would be indistinguishable.
    """
    cams = list(camera_topics)
    if not cams:
        raise ConfigError("camera_topics is empty: give at least one image topic")
    for t in cams:
        check_topic_name(t, "camera topic")
    dup = sorted({t for t in cams if cams.count(t) > 1})
    if dup:
        raise ConfigError(f"camera_topics lists {', '.join(dup)} more than once")
    outs = list(detection_topics)
    if outs:
        if len(outs) != len(cams):
            raise ConfigError(
                f"detection_topics has {len(outs)} entries but camera_topics has {len(cams)}: give one per "
                "camera, in the same order, or leave detection_topics empty for <camera namespace>/detections"
            )
        for t in outs:
            check_topic_name(t, "detection topic")
    else:
        outs = [detection_topic(t) for t in cams]
    seen: dict[str, str] = {}
    for cam, out in zip(cams, outs):
        if out in cams:
            raise ConfigError(f"detections topic {out!r} of camera {cam!r} is also an input topic")
        if out in seen:
            raise ConfigError(
                f"cameras {seen[out]!r} and {cam!r} would both publish detections on {out!r}: set "
                "detection_topics to give each camera its own output"
            )
        seen[out] = cam
    return outs

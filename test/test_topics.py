"""Topic naming of the ROS node (pure logic, no ROS)."""

from __future__ import annotations

import pytest

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.topics import (
    camera_namespace,
    check_topic_name,
    debug_image_topic,
    detection_topic,
    is_compressed,
    resolve_output_topics,
)


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        ("/rsu/cam0/image_raw", "/rsu/cam0/detections"),
        ("/rsu/cam0/image_raw/compressed", "/rsu/cam0/detections"),
        ("/image", "/detections"),
        ("/image/compressed", "/detections"),
        ("image_raw", "detections"),
        ("cam1/image_raw", "cam1/detections"),
        ("cam1/image_raw/compressed", "cam1/detections"),
        ("~/image", "~/detections"),
    ],
)
def test_detection_topic_from_camera_namespace(camera: str, expected: str) -> None:
    assert detection_topic(camera) == expected
    check_topic_name(expected)


def test_compressed_is_decided_by_the_suffix_only() -> None:
    assert is_compressed("/rsu/cam0/image_raw/compressed")
    assert is_compressed("cam/compressed")
    assert not is_compressed("/rsu/cam0/image_raw")
    assert not is_compressed("/rsu/cam0/compressed_image")
    assert camera_namespace("/a/b/c/image/compressed") == "/a/b/c"


def test_debug_image_topic_sits_under_detections() -> None:
    assert debug_image_topic("/rsu/cam0/detections") == "/rsu/cam0/detections/image"
    assert debug_image_topic("detections") == "detections/image"


def test_resolve_defaults_and_overrides() -> None:
    cams = ["/rsu/cam0/image_raw", "/rsu/cam1/image_raw/compressed"]
    assert resolve_output_topics(cams) == ["/rsu/cam0/detections", "/rsu/cam1/detections"]
    assert resolve_output_topics(cams, ["/out/a", "/out/b"]) == ["/out/a", "/out/b"]


@pytest.mark.parametrize(
    ("cams", "outs", "needle"),
    [
        ([], [], "empty"),
        (["/cam/image_raw", "/cam/image_raw"], [], "more than once"),
        (["/cam/image_raw", "/cam/image_raw/compressed"], [], "both publish"),
        (["/a/image", "/b/image"], ["/x"], "2 entries|1 entries"),
        (["/a/image"], ["/a/image"], "also an input"),
        (["/a/image", "/b/image"], ["/x", "/x"], "both publish"),
        (["/cam/image raw"], [], "not a valid"),
        (["/cam/image_raw/"], [], "not a valid"),
        (["/cam//image"], [], "not a valid"),
        (["/cam/0image"], [], "not a valid"),
        ([""], [], "empty"),
    ],
)
def test_resolve_refuses_ambiguous_or_invalid(cams: list[str], outs: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_output_topics(cams, outs)

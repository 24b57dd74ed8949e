"""World-frame parameters as data: the tracker's settings and each camera's geometry.

:data:`WORLD_PARAMS` are ordinary node parameters (part of ``node_params.PARAMS``).
:data:`CAMERA_FIELDS` are templates of the per-camera geometry parameters: for a camera topic
``/rsu/cam0/image_raw/compressed`` (camera namespace ``/rsu/cam0``, key ``rsu_cam0``) the node
declares ``cameras.rsu_cam0.homography``, ``cameras.rsu_cam0.roi`` and so on, one set per entry of
``camera_topics``. In a ROS 2 YAML they nest::

    dpa_perception:
      ros__parameters:
        cameras:
          rsu_cam0:
            homography: [h11, h12, h13, h21, h22, h23, h31, h32, h33]   # pixel -> world metres

A camera with neither a homography nor intrinsics + pose has no world output (2D only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dpa_perception.core.param_spec import BOOL, DOUBLE, DOUBLE_ARRAY, INT, INT_ARRAY, STRING, ParamSpec
from dpa_perception.core.topics import camera_namespace

CAMERA_PREFIX = "cameras"

WORLD_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("world_frame", STRING, "map",
              "Frame of the world-frame objects (a local East-North-Up frame in metres from reference_point)."),
    ParamSpec("reference_point", DOUBLE_ARRAY, [],
              "Latitude, longitude (degrees) and altitude (m) of the world frame's origin (the RSU's "
              "reference point), for the CPM/SDSM output; empty = positions stay local."),
    ParamSpec("tracking", BOOL, True,
              "Project detections of cameras with a geometry to the ground and track them in the world frame "
              "(publishes <camera ns>/objects and the fused objects)."),
    ParamSpec("pixel_sigma_px", DOUBLE, 2.0,
              "Standard deviation of a box's ground-contact pixel (px), propagated to the ground covariance.",
              live=True, min=0.1, max=100.0),
    ParamSpec("max_range_m", DOUBLE, 150.0,
              "Projected objects further than this from the camera (m) are dropped (near the horizon).",
              live=True, min=1.0, max=10000.0),
    ParamSpec("track_high_score", DOUBLE, 0.7,
              "Detections at or above this score are matched first and may start tracks (ByteTrack).",
              live=True, min=0.0, max=1.0),
    ParamSpec("track_low_score", DOUBLE, 0.3,
              "Detections between this and track_high_score only keep existing tracks alive (second pass); "
              "the detector decodes down to min(score_threshold, track_low_score) for the tracker.",
              live=True, min=0.0, max=1.0),
    ParamSpec("track_gate_m", DOUBLE, 5.0,
              "Largest distance (m) between a track's predicted position and a detection it may be matched to "
              "(a Mahalanobis gate applies as well).", live=True, min=0.1, max=100.0),
    ParamSpec("track_confirm_hits", INT, 5,
              "Detections (of any camera) a new track needs before it is published.", live=True,
              min=1, max=100),
    ParamSpec("track_max_age_s", DOUBLE, 0.6,
              "A track not seen by any camera for this long is deleted (s).", live=True, min=0.05, max=60.0),
    ParamSpec("track_accel_sigma", DOUBLE, 2.0,
              "Process noise of the constant-velocity model: acceleration standard deviation (m/s^2).",
              live=True, min=0.01, max=50.0),
)

# Per-camera geometry (structural). Name suffixes; the full name is cameras.<key>.<field>.
CAMERA_FIELDS: tuple[ParamSpec, ...] = (
    ParamSpec("homography", DOUBLE_ARRAY, [],
              "3x3 row-major image-to-ground homography: pixel (u, v, 1) -> world (x, y, 1) in metres on the "
              "ground plane (dpa-calibrate writes it). Takes precedence over camera_matrix + pose."),
    ParamSpec("image_size", INT_ARRAY, [],
              "Width and height (px) of the images the homography was surveyed on; lets the camera's ground "
              "position (the origin of max_range_m) be recovered from the homography.", min=1, max=65536),
    ParamSpec("camera_matrix", DOUBLE_ARRAY, [],
              "3x3 row-major intrinsics K, as sensor_msgs/CameraInfo.k (with pose and ground_z instead of a "
              "homography)."),
    ParamSpec("distortion", DOUBLE_ARRAY, [],
              "Distortion coefficients (plumb_bob / rational_polynomial, OpenCV order), as CameraInfo.d."),
    ParamSpec("pose", DOUBLE_ARRAY, [],
              "Camera optical frame in the world frame: x, y, z (m), qx, qy, qz, qw (as a tf2 transform "
              "world_frame -> camera optical frame gives it)."),
    ParamSpec("ground_z", DOUBLE, 0.0, "Height of the ground plane in the world frame (m).", min=-10000.0,
              max=10000.0),
    ParamSpec("roi", DOUBLE_ARRAY, [],
              "Region of interest: image polygon x0, y0, x1, y1, ... (px, at least 3 points); detections whose "
              "ground-contact point is outside are dropped and counted. Empty = the whole image."),
    ParamSpec("camera_info_topic", STRING, "",
              "Optional sensor_msgs/CameraInfo topic whose k and d replace camera_matrix and distortion."),
    ParamSpec("tf_frame", STRING, "",
              "Optional camera optical frame looked up with tf2 (world_frame -> tf_frame), replacing pose."),
)
CAMERA_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in CAMERA_FIELDS)

_KEY_BAD = re.compile(r"[^A-Za-z0-9_]+")


def camera_key(camera_topic: str) -> str:
    """The parameter key of a camera: its namespace with ``/`` as ``_`` (``/rsu/cam0/image_raw`` -> ``rsu_cam0``).

    A topic without a namespace (``image_raw``) is keyed by the topic itself.
    """
    ns = camera_namespace(camera_topic).strip("/~")
    base = ns or camera_topic.strip("/~")
    return _KEY_BAD.sub("_", base).strip("_") or "camera"


def camera_param(camera_topic: str, field: str) -> str:
    """Full parameter name of one geometry field of a camera."""
    return f"{CAMERA_PREFIX}.{camera_key(camera_topic)}.{field}"


def camera_specs(camera_topics: Sequence[str]) -> tuple[ParamSpec, ...]:
    """The per-camera geometry parameters of these cameras, with their full names."""
    return tuple(ParamSpec(camera_param(t, f.name), f.type, f.default, f.description, f.live, f.min, f.max, f.choices)
                 for t in camera_topics for f in CAMERA_FIELDS)


def field_spec(name: str) -> ParamSpec | None:
    """The template of a full per-camera name (``cameras.<key>.<field>``), or None when it is not one."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != CAMERA_PREFIX or not parts[1]:
        return None
    return next((f for f in CAMERA_FIELDS if f.name == parts[2]), None)

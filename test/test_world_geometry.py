"""Camera ground geometry: homography and pinhole paths against the demo renderer's pinhole camera."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.world_params import camera_param
from dpa_perception.demo.scene import Camera
from dpa_perception.world.geometry import CameraGeometry, geometry_from_values

# scene (X right, Y up, Z along the road) -> world (x = X, y = Z, z = Y)
SCENE_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
DIST = np.array([-0.25, 0.08, 0.001, -0.0005, -0.01])
TOPIC = "/rsu/cam0/image_raw/compressed"


def rotation_quaternion(R: np.ndarray) -> np.ndarray:
    """(qx, qy, qz, qw) of a rotation matrix (R trace-positive or not)."""
    rvec, _ = cv2.Rodrigues(R)
    angle = float(np.linalg.norm(rvec))
    axis = rvec.ravel() / angle if angle > 0 else np.array([1.0, 0.0, 0.0])
    return np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])


def camera_k_pose(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """K and the optical frame's pose (x, y, z, qx, qy, qz, qw) in the world frame of a demo camera."""
    K = np.array([[cam.focal, 0.0, cam.width / 2], [0.0, cam.focal, cam.height / 2], [0.0, 0.0, 1.0]])
    R_wc = SCENE_TO_WORLD @ cam.R.T  # columns: optical axes in the world frame
    return K, np.concatenate([SCENE_TO_WORLD @ cam.C, rotation_quaternion(R_wc)])


def demo_geometry(cam: Camera, dist: np.ndarray | None = None, roi=None) -> CameraGeometry:
    K, pose = camera_k_pose(cam)
    return CameraGeometry.from_intrinsics(K, [] if dist is None else dist, pose, 0.0, roi)


def render_ground(cam: Camera, xy: np.ndarray) -> np.ndarray:
    """Pixels of world ground points (N, 2) in the demo camera."""
    scene = np.column_stack([xy[:, 0], np.zeros(len(xy)), xy[:, 1]])
    uv, depth = cam.project(scene)
    assert np.all(depth > 0)
    return uv


def distort(cam: Camera, uv: np.ndarray, dist: np.ndarray) -> np.ndarray:
    K, _ = camera_k_pose(cam)
    n = np.column_stack([(uv - K[:2, 2]) / cam.focal, np.ones(len(uv))])
    out, _ = cv2.projectPoints(n, np.zeros(3), np.zeros(3), K, dist)
    return out.reshape(-1, 2)


def ground_grid() -> np.ndarray:
    return np.array([[x, y] for x in (-9.0, -4.0, 0.0, 3.5, 8.0) for y in (4.0, 10.0, 25.0, 45.0, 70.0)])


CAMS = [Camera(), Camera(x=-6.0, h=9.0, pitch_deg=16.0, yaw_deg=10.0), Camera(1280, 720, 1040.0, 3.0, 5.5, 11.0, -8.0)]


@pytest.mark.parametrize("cam", CAMS)
def test_intrinsics_ground_matches_rendered_points(cam):
    g = demo_geometry(cam)
    xy = ground_grid()
    got, valid = g.ground(render_ground(cam, xy))
    assert valid.all()
    assert np.abs(got - xy).max() < 0.01
    assert g.homography is not None  # no distortion: an equivalent homography
    assert g.origin_is_camera and np.allclose(g.origin_xy, (cam.x, cam.z))


@pytest.mark.parametrize("cam", CAMS)
def test_homography_from_pinhole_round_trips_and_recovers_the_camera(cam):
    xy = ground_grid()
    H, _ = cv2.findHomography(render_ground(cam, xy), xy)  # what a calibration from surveyed points gives
    test_xy = np.array([[-6.5, 6.0], [1.0, 15.0], [5.0, 33.0], [-2.0, 60.0]])
    for scale in (1.0, -2.5):  # the homography's scale and sign do not matter
        g = CameraGeometry.from_homography(H * scale, image_size=(cam.width, cam.height))
        got, valid = g.ground(render_ground(cam, test_xy))
        assert valid.all()
        assert np.abs(got - test_xy).max() < 0.01
        assert g.origin_is_camera
        assert math.hypot(g.origin_xy[0] - cam.x, g.origin_xy[1] - cam.z) < 0.05
    plain = CameraGeometry.from_homography(-H)
    assert not plain.origin_is_camera and plain.origin_xy == (0.0, 0.0)
    assert plain.ground(render_ground(cam, test_xy))[1].all()


@pytest.mark.parametrize("cam", CAMS)
def test_distortion_path_agrees_with_the_homography_path(cam):
    xy = ground_grid()
    uv = render_ground(cam, xy)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    assert inside.sum() >= 8
    xy, uv = xy[inside], uv[inside]  # the distortion model holds inside the image
    plain = demo_geometry(cam)
    g = demo_geometry(cam, DIST)
    assert g.homography is None
    got, valid = g.ground(distort(cam, uv, DIST))
    ref, ref_valid = plain.ground(uv)
    assert valid.all() and ref_valid.all()
    assert np.abs(got - ref).max() < 0.01
    assert np.abs(got - xy).max() < 0.01


@pytest.mark.parametrize("dist", [None, DIST])
def test_jacobian_matches_finite_differences(dist):
    cam = CAMS[1]
    g = demo_geometry(cam, dist)
    uv = np.array([[100.0, 300.0], [320.0, 200.0], [600.0, 150.0], [420.0, 340.0]])
    J = g.jacobian(uv)
    h = 1e-3
    num = np.stack([(g.ground(uv + [h, 0])[0] - g.ground(uv - [h, 0])[0]) / (2 * h),
                    (g.ground(uv + [0, h])[0] - g.ground(uv - [0, h])[0]) / (2 * h)], axis=2)
    assert J.shape == (4, 2, 2)
    assert np.allclose(J, num, rtol=2e-3, atol=1e-6)


def test_covariance_grows_with_distance():
    cam = CAMS[0]
    g = demo_geometry(cam)
    xy = np.array([[1.0, y] for y in (5.0, 10.0, 20.0, 40.0, 80.0)])
    J = g.jacobian(render_ground(cam, xy))
    cov = J @ J.transpose(0, 2, 1) * 4.0  # 2 px sigma
    along = cov[:, 1, 1]
    across = cov[:, 0, 0]
    assert np.all(np.diff(along) > 0) and np.all(np.diff(across) > 0)
    assert along[-1] > 100 * along[0]  # ~ range^4 along the ray, range^2 across


@pytest.mark.parametrize("dist", [None, DIST])
def test_points_at_or_above_the_horizon_are_invalid(dist):
    cam = CAMS[0]
    g = demo_geometry(cam, dist)
    horizon_v = cam.height / 2 - cam.focal * math.tan(math.radians(cam.pitch_deg))
    uv = np.array([[320.0, 0.0], [100.0, horizon_v - 5.0], [320.0, horizon_v + 40.0], [500.0, 359.0]])
    xy, valid = g.ground(uv)
    assert valid.tolist() == [False, False, True, True]
    assert np.all(np.isfinite(xy[valid]))
    gh = CameraGeometry.from_homography(-g.homography) if g.homography is not None else None
    if gh is not None:
        assert gh.ground(uv)[1].tolist() == [False, False, True, True]


def test_roi_mask():
    g = demo_geometry(CAMS[0], roi=[0, 200, 640, 200, 640, 360, 0, 360])
    assert g.in_roi(np.array([[320.0, 300.0], [320.0, 100.0], [-5.0, 300.0]])).tolist() == [True, False, False]
    concave = demo_geometry(CAMS[0], roi=[0, 0, 100, 0, 100, 100, 50, 50, 0, 100])
    assert concave.in_roi(np.array([[50.0, 20.0], [50.0, 80.0], [10.0, 60.0]])).tolist() == [True, False, True]
    assert demo_geometry(CAMS[0]).in_roi(np.array([[1e6, -1e6]])).tolist() == [True]


def test_fov_polygon_covers_the_visible_ground_within_range():
    cam = CAMS[0]
    g = demo_geometry(cam)
    poly = g.fov_polygon(cam.width, cam.height, 60.0)
    assert poly.shape[1] == 2 and len(poly) >= 6
    assert np.all(g.range_m(poly) <= 60.0 + 1e-6)
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    assert cv2.pointPolygonTest(contour, (0.0, 20.0), False) > 0  # straight ahead, in view
    assert cv2.pointPolygonTest(contour, (0.0, 90.0), False) < 0  # beyond range
    assert cv2.pointPolygonTest(contour, (0.0, -5.0), False) < 0  # behind the camera


def test_geometry_from_values():
    cam = CAMS[0]
    K, pose = camera_k_pose(cam)
    assert geometry_from_values({}, TOPIC) is None
    assert geometry_from_values({camera_param(TOPIC, "camera_matrix"): K.ravel().tolist()}, TOPIC) is None  # no pose
    g = geometry_from_values({camera_param(TOPIC, "camera_matrix"): K.ravel().tolist(),
                              camera_param(TOPIC, "pose"): (pose * [1, 1, 1, 3, 3, 3, 3]).tolist(),  # not unit
                              camera_param(TOPIC, "roi"): [0, 0, 640, 0, 640, 360]}, TOPIC)
    assert g is not None and len(g.roi) == 3
    xy = ground_grid()
    assert np.abs(g.ground(render_ground(cam, xy))[0] - xy).max() < 0.01
    H = np.linalg.inv(demo_geometry(cam).homography)  # any invertible matrix will do as a homography
    gh = geometry_from_values({camera_param(TOPIC, "homography"): np.linalg.inv(H).ravel().tolist(),
                               camera_param(TOPIC, "camera_matrix"): [1.0] * 9}, TOPIC)  # homography wins
    assert gh is not None and gh.camera_matrix is None


@pytest.mark.parametrize("field, value, message", [
    ("homography", [1.0] * 8, "cameras.rsu_cam0.homography: expected 9 values"),
    ("homography", [1.0] * 9, "cameras.rsu_cam0.homography: matrix is singular"),
    ("homography", [1, 0, 0, 0, 1, 0, 0, 0, float("nan")], "cameras.rsu_cam0.homography: values must be finite"),
    ("roi", [0, 0, 10, 0, 10], "cameras.rsu_cam0.roi: expected an even number"),
    ("roi", [0, 0, 10, 0], "cameras.rsu_cam0.roi: expected an even number"),
    ("pose", [0, 0, 5, 0, 0, 0], "cameras.rsu_cam0.pose: expected 7"),
    ("pose", [0, 0, 5, 0, 0, 0, 0], "cameras.rsu_cam0.pose: the quaternion"),
    ("pose", [0, 0, 0, 0, 0, 0, 1], "cameras.rsu_cam0.pose: the camera lies on the ground plane"),
    ("camera_matrix", [1, 0, 0, 0, 1, 0, 0, 0], "cameras.rsu_cam0.camera_matrix: expected 9"),
    ("camera_matrix", [-500, 0, 320, 0, 500, 180, 0, 0, 1], "cameras.rsu_cam0.camera_matrix: focal lengths"),
    ("distortion", [0.1, 0.2, 0.3], "cameras.rsu_cam0.distortion: expected 0, 4, 5, 8, 12 or 14"),
])
def test_bad_camera_parameters_raise_one_line_config_errors(field, value, message):
    K, pose = camera_k_pose(CAMS[0])
    values = {camera_param(TOPIC, "camera_matrix"): K.ravel().tolist(), camera_param(TOPIC, "pose"): pose.tolist()}
    if field == "homography":
        values = {}
    if field == "roi":
        values[camera_param(TOPIC, "homography")] = np.eye(3).ravel().tolist()
    values[camera_param(TOPIC, field)] = value
    with pytest.raises(ConfigError) as e:
        geometry_from_values(values, TOPIC)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)

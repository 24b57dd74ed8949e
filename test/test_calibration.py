"""dpa-calibrate: homographies from surveyed point pairs, their errors, refusals and the parameter YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dpa_perception.core.errors import ConfigError
from dpa_perception.demo import make_bag as mb
from dpa_perception.demo.scene import Camera, Scene, shared_cameras
from dpa_perception.tools import calibrate as cli
from dpa_perception.world import calibration as C

CAM = Camera(640, 360, focal=510.0, x=-3.0, h=7.0, pitch_deg=13.0, yaw_deg=4.0, z=-1.0)
REFERENCE = (48.137154, 11.576124, 519.0)  # degrees, degrees, m


def _project(cam: Camera, ground: np.ndarray) -> np.ndarray:
    """Pixels of world ground points (x east, y north): the demo camera's scene X = x, Z = y."""
    uv, _ = cam.project(np.stack([ground[:, 0], np.zeros(len(ground)), ground[:, 1]], 1))
    return uv


def _grid() -> np.ndarray:
    return np.array([(x, y) for x in (-5.0, -1.5, 2.0, 5.5) for y in (12.0, 20.0, 32.0, 55.0)])


def test_exact_points_give_the_camera_homography() -> None:
    ground = _grid()
    pixels = _project(CAM, ground)
    H = C.fit_homography(pixels, ground)
    e = C.reprojection(H, pixels, ground)
    assert e.pixel_max < 1e-3 and e.ground_max < 1e-3
    # and between the points: the analytic image <-> ground map of the camera
    rng = np.random.default_rng(0)
    test = np.stack([rng.uniform(-7, 7, 200), rng.uniform(6, 60, 200)], 1)
    assert np.abs(C.apply_homography(H, _project(CAM, test)) - test).max() < 0.01
    assert H[2, 2] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_six_noisy_survey_points_give_errors_within_bounds(seed: int) -> None:
    cams = shared_cameras(seed, 3)
    world = Scene(seed * 1000)
    for k, cam in enumerate(cams):
        view = world.view(cam)
        pix, gnd = mb.survey_points(view, np.random.default_rng([seed, 5, k]), n=6)
        assert len(pix) == 6
        H = C.fit_homography(pix, gnd)
        e = C.reprojection(H, pix, gnd)
        # 0.7 px pixel noise, 8 of 12 degrees of freedom used by the fit: residuals below the noise
        assert e.pixel_rms < 1.2 and e.pixel_max < 2.5
        assert e.ground_rms < 1.0
        # the true error of the fitted map on the visible lane centres 5-60 m away
        road = np.array([(x, y) for x in (-5.25, -1.75, 1.75, 5.25) for y in np.arange(5.0, 61.0, 5.0)])
        px = _project(cam, road)
        seen = (px[:, 0] > 0) & (px[:, 0] < 640) & (px[:, 1] > 0) & (px[:, 1] < 360)
        true = np.linalg.norm(C.apply_homography(H, px[seen]) - road[seen], axis=1)
        assert np.median(true) < 0.5 and true.max() < 2.5, (seed, k, np.median(true), true.max())


def test_demo_points_file_calibrates_every_camera(tmp_path: Path) -> None:
    world = Scene(7000)
    cams = shared_cameras(7, 3)
    topics = [t for t, _ in mb.camera_topics(3)]
    doc = mb.points_document([world.view(c) for c in cams], topics, seed=7)
    pf = C.parse_points(doc, "demo")
    assert [c.topic for c in pf.cameras] == topics
    for cam, cal, sc in zip(pf.cameras, C.calibrate(pf), cams):
        assert cal.points == len(cam.pixels) >= 6
        assert cal.errors.pixel_rms < 1.5
        assert cam.position == (sc.x, sc.z, sc.h) and cam.image_size == (640, 360)
        # the calibrated map against the exact one, at the surveyed points' true pixels
        true_px = _project(sc, cam.ground)
        assert np.median(np.linalg.norm(C.apply_homography(cal.homography, true_px) - cam.ground, axis=1)) < 0.5


def test_geodetic_points_become_local_metres(tmp_path: Path) -> None:
    import pymap3d

    ground = _grid()
    pixels = _project(CAM, ground)
    lat, lon, _alt = pymap3d.enu2geodetic(ground[:, 0], ground[:, 1], np.zeros(len(ground)), *REFERENCE)
    doc = {"reference_point": list(REFERENCE), "cameras": [{
        "topic": "/rsu/cam0/image_raw/compressed", "image_size": [640, 360],
        "points": [{"pixel": [float(u), float(v)], "geodetic": [float(a), float(b)]}
                   for (u, v), a, b in zip(pixels, lat, lon)]}]}
    path = tmp_path / "geo_points.yaml"
    path.write_text(yaml.safe_dump(doc))
    pf = C.load_points(path)
    assert pf.reference_point == REFERENCE and pf.cameras[0].geodetic
    np.testing.assert_allclose(pf.cameras[0].ground, ground, atol=1e-3)
    out = tmp_path / "cameras.yaml"
    assert cli.main([str(path), "--out", str(out)]) == 0
    params = yaml.safe_load(out.read_text())["/**"]["ros__parameters"]
    assert params["reference_point"] == list(REFERENCE)
    H = np.array(params["cameras"]["rsu_cam0"]["homography"]).reshape(3, 3)
    assert np.abs(C.apply_homography(H, pixels) - ground).max() < 0.01


def _doc(pixels, ground, **extra) -> dict:
    cam = {"topic": "/rsu/cam0/image_raw/compressed", "image_size": [640, 360],
           "points": [{"pixel": list(map(float, p)), "ground": list(map(float, g))} for p, g in zip(pixels, ground)]}
    cam.update(extra)
    return {"cameras": [cam]}


def _refused(doc, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        C.parse_points(doc, "points.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("points.yaml")


def test_refusals() -> None:
    ground = _grid()
    pixels = _project(CAM, ground)
    _refused(_doc(pixels[:3], ground[:3]), "at least 4")
    line = np.array([(0.0, y) for y in (12.0, 16.0, 20.0, 30.0, 45.0)])
    _refused(_doc(_project(CAM, line), line), "collinear")
    four = np.array([(0.0, 12.0), (0.0, 16.0), (0.0, 30.0), (5.0, 14.0)])  # three of the four on one line
    _refused(_doc(_project(CAM, four), four), "collinear")
    bad = ground.copy()
    bad[2, 0] = np.nan
    _refused(_doc(pixels, bad), "finite")
    _refused(_doc(np.vstack([pixels[:5], pixels[:1]]), np.vstack([ground[:5], ground[5:6]])), "same pixel")
    _refused(_doc(pixels + [700.0, 0.0], ground), "outside the 640x360 image")
    _refused(_doc(pixels, ground, image_size=[640]), "image_size")
    _refused(_doc(pixels, ground, image_size=[0, 360]), "positive integers")
    _refused(_doc(pixels, ground, position=[1.0, "x", 2.0]), "not a finite number")
    geo = {"cameras": [{"topic": "/c/image", "image_size": [640, 360],
                        "points": [{"pixel": [1.0, 2.0], "geodetic": [48.0, 11.0]}] * 4}]}
    _refused(geo, "reference_point")
    _refused({"cameras": []}, "not a points file")
    _refused({"cameras": [{"image_size": [640, 360], "points": []}]}, "'topic'")
    _refused({"cameras": [_doc(pixels, ground)["cameras"][0]] * 2}, "listed twice")
    _refused({"version": 2, **_doc(pixels, ground)}, "version")
    _refused({"cameras": [{"topic": "/c/image", "image_size": [640, 360], "points": [{"pixel": [1, 2]}]}]},
             "one of 'ground' or 'geodetic'")
    with pytest.raises(ConfigError, match="at least 4"):
        C.fit_homography(pixels[:3], ground[:3])


def test_ransac_drops_an_outlier() -> None:
    ground = _grid()
    pixels = _project(CAM, ground)
    pixels[5] += (40.0, -25.0)  # a mis-clicked point
    ls = C.reprojection(C.fit_homography(pixels, ground), pixels, ground)
    H = C.fit_homography(pixels, ground, ransac_m=0.5)
    keep = np.arange(len(ground)) != 5
    e = C.reprojection(H, pixels[keep], ground[keep])
    assert e.pixel_max < 1e-3 < ls.pixel_max


def _write_demo_points(tmp_path: Path) -> Path:
    world = Scene(0)
    doc = mb.points_document([world.view(c) for c in shared_cameras(0, 2)], [t for t, _ in mb.camera_topics(2)], seed=0)
    path = tmp_path / "demo_points.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_cli_writes_the_parameter_file_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    points = _write_demo_points(tmp_path)
    out = tmp_path / "cameras.yaml"
    assert cli.main([str(points), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/rsu/cam0/image_raw/compressed (rsu_cam0): 10 points; reprojection rms" in text
    assert "/rsu/cam1/image_raw (rsu_cam1)" in text and " m, max " in text
    doc = yaml.safe_load(out.read_text())
    cams = doc["/**"]["ros__parameters"]["cameras"]
    assert sorted(cams) == ["rsu_cam0", "rsu_cam1"] and all(len(c["homography"]) == 9 for c in cams.values())
    assert "reference_point" not in doc["/**"]["ros__parameters"]
    before = out.read_text()
    assert cli.main([str(points), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dpa-calibrate: error: --out {out} already exists (--force overwrites it)"]
    assert out.read_text() == before
    assert cli.main([str(points), "--out", str(out), "--force", "--camera", "/rsu/cam1/image_raw"]) == 0
    assert list(yaml.safe_load(out.read_text())["/**"]["ros__parameters"]["cameras"]) == ["rsu_cam1"]


@pytest.mark.parametrize("content, message", [
    ("cameras: [", "not valid YAML"),
    ("just text", "not a points file"),
    (None, "cannot read the points file"),
    ("cameras:\n- topic: /c/image\n  image_size: [640, 360]\n  points: []\n", "at least 4"),
])
def test_cli_bad_points_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, content, message) -> None:
    points = tmp_path / "p.yaml"
    if content is not None:
        points.write_text(content)
    out = tmp_path / "out.yaml"
    assert cli.main([str(points), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dpa-calibrate: error: ") and message in err[0], err
    assert not out.exists()


def test_cli_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    points = _write_demo_points(tmp_path)
    for argv, message in (([str(points), "--out", str(tmp_path)], "is a folder"),
                          ([str(points), "--out", str(tmp_path / "x.yaml"), "--camera", "/nope/image"], "not in the points"),
                          ([str(points), "--out", str(tmp_path / "x.yaml"), "--ransac", "nan"], "--ransac"),
                          ([str(points), "--out", str(tmp_path / "missing" / "x.yaml")], "not found")):
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dpa-calibrate: error: ") and message in err[0], (argv, err)
    with pytest.raises(SystemExit) as e:  # usage errors: argparse's one line, status 2
        cli.main([str(points)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


def test_parameter_yaml_round_trip_values(tmp_path: Path) -> None:
    ground = _grid()
    cal = C.calibrate(C.parse_points(_doc(_project(CAM, ground), ground), "p"))
    text = C.parameter_yaml(cal, REFERENCE)
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    np.testing.assert_array_equal(np.array(params["cameras"]["rsu_cam0"]["homography"]), cal[0].homography.reshape(9))
    assert params["reference_point"] == list(REFERENCE)


def test_written_file_loads_as_node_parameters(tmp_path: Path) -> None:
    from dpa_perception.core import node_params as P
    from dpa_perception.runtime import camera_geometries, load_parameter_files

    points = _write_demo_points(tmp_path)
    out = tmp_path / "cameras.yaml"
    assert cli.main([str(points), "--out", str(out)]) == 0
    values = load_parameter_files([out])
    written = yaml.safe_load(out.read_text())["/**"]["ros__parameters"]
    assert values["camera_topics"] == written["camera_topics"]
    for key, c in written["cameras"].items():
        assert values[f"cameras.{key}.homography"] == c["homography"]
        assert values[f"cameras.{key}.image_size"] == c["image_size"]
    geometries = camera_geometries(P.validate_values({**values, "engine_dir": "x"}))
    assert sorted(geometries) == sorted(written["camera_topics"])
    assert all(g.origin_xy is not None for g in geometries.values())  # camera positions from H + image size

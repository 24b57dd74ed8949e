"""Visibility estimator on the real shared images, synthetic weather, config and external fusion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core.errors import ConfigError, ImageError
from dpa_perception.core.visibility import LABELS, VisibilityConfig, VisibilityEstimator
from dpa_perception.demo.weather import add_fog, add_glare, add_night, add_rain

CLEAR = ["uadetrac_MVI_20011_img00001.jpg", "kitti_000008.png", "nuscenes_n015_CAM_FRONT.jpg",
         "dog.jpg"]
REAL_FOG = "rtts_fog_SJZ_Bing_492.png"
REAL_NIGHT = "bdd_hybridnets_2_night_dark.jpg"
ENTER = VisibilityConfig().label_threshold  # the governor's default enter threshold (0.5)
LEAVE = 0.35  # the governor's default leave threshold


@pytest.fixture(scope="module")
def images(testdata: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in [*CLEAR, REAL_FOG, REAL_NIGHT]:
        img = cv2.imread(str(testdata / "images" / name))
        assert img is not None, name
        out[name] = img
    return out


@pytest.fixture(scope="module")
def est() -> VisibilityEstimator:
    return VisibilityEstimator()


# The night frame is left out: synthetic daylight fog (airlight 0.8-0.95) turns it into a
# bright grey frame, replacing one degradation (night, 0.99) by another (light fog, 0.55).
@pytest.mark.parametrize("name", [*CLEAR, REAL_FOG])
@pytest.mark.parametrize("seed", [0, 1])
def test_degradation_orders_fog_levels(images: dict[str, np.ndarray], est: VisibilityEstimator,
                                       name: str, seed: int) -> None:
    img = images[name]
    scores = [est.estimate(img).degradation]
    scores += [est.estimate(add_fog(img, d, seed=seed)).degradation for d in (0.3, 0.6, 0.9)]
    assert scores[0] < scores[1] < scores[2] < scores[3], scores


@pytest.mark.parametrize("name", CLEAR)
def test_medium_fog_crosses_enter_threshold(images: dict[str, np.ndarray],
                                            est: VisibilityEstimator, name: str) -> None:
    light = est.estimate(add_fog(images[name], 0.3, seed=0))
    medium = est.estimate(add_fog(images[name], 0.6, seed=0))
    assert light.degradation < ENTER <= medium.degradation, (light.degradation, medium.degradation)
    assert medium.label == "fog"


@pytest.mark.parametrize("name", CLEAR)
def test_clear_images_are_not_degraded(images: dict[str, np.ndarray], est: VisibilityEstimator,
                                       name: str) -> None:
    r = est.estimate(images[name])
    assert r.degradation < LEAVE and r.label == "clear", r


@pytest.mark.parametrize(("name", "label"), [(REAL_FOG, "fog"), (REAL_NIGHT, "night")])
def test_real_fog_and_night_are_flagged(images: dict[str, np.ndarray], est: VisibilityEstimator,
                                        name: str, label: str) -> None:
    r = est.estimate(images[name])
    assert r.degradation >= ENTER + 0.1 and r.label == label, r


def _blocked(img: np.ndarray) -> np.ndarray:
    """A dark blob (mud, leaf) over a third of the lens."""
    h, w = img.shape[:2]
    out = img.copy()
    cv2.ellipse(out, (w // 3, 2 * h // 3), (w // 3, 2 * h // 5), 10, 0, 360, (30, 40, 45), -1)
    return out


@pytest.mark.parametrize(
    ("degrade", "label"),
    [
        (lambda img: add_night(img, 1.0, seed=0), "night"),
        (lambda img: add_glare(img, 1.0, seed=0), "glare"),
        (lambda img: add_rain(img, 0.9, seed=0), "rain_blur"),
        (lambda img: cv2.GaussianBlur(img, (0, 0), 3), "rain_blur"),
        (_blocked, "blockage"),
    ],
)
def test_synthetic_conditions_are_labelled(images: dict[str, np.ndarray],
                                           est: VisibilityEstimator, degrade, label: str) -> None:
    for name in ("uadetrac_MVI_20011_img00001.jpg", "kitti_000008.png"):
        r = est.estimate(degrade(images[name]))
        assert r.label == label and r.degradation >= ENTER, (name, r)


def test_report_contents(images: dict[str, np.ndarray], est: VisibilityEstimator) -> None:
    r = est.estimate(images[REAL_FOG])
    assert r.label in LABELS
    assert all(0.0 <= s <= 1.0 for s in r.scores.values())
    assert r.degradation == max(r.scores.values())
    assert {"haze_ratio", "rms_contrast", "dark_channel", "luminance", "dark_fraction",
            "bright_fraction", "sharpness_ratio"} <= set(r.features)
    assert not r.external_used and r.external_age_s is None


def test_grayscale_and_bad_input(images: dict[str, np.ndarray], est: VisibilityEstimator) -> None:
    gray = cv2.cvtColor(images[REAL_NIGHT], cv2.COLOR_BGR2GRAY)
    assert est.estimate(gray).label == "night"
    for bad in (np.zeros((0, 0, 3), np.uint8), np.zeros((64, 64, 4), np.uint8),
                np.zeros((64, 64, 3), np.float32), np.zeros((4, 64, 3), np.uint8)):
        with pytest.raises(ImageError):
            est.estimate(bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"fog_haze_scale": 0.0}, {"width": 4}, {"dark_channel_patch": 4}, {"label_threshold": 1.0},
     {"external_timeout_s": -1.0}, {"night_dark_level": 1.5}, {"fog_contrast_ref": 0.0},
     {"external_fog_visibility_m": 2000.0}, {"glare_fraction_ref": float("nan")}],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        VisibilityConfig(**kwargs)


def test_fresh_external_low_visibility_raises_degradation(images: dict[str, np.ndarray]) -> None:
    img = images[CLEAR[0]]
    est = VisibilityEstimator(VisibilityConfig(external_timeout_s=30.0))
    base = est.estimate(img, now_s=100.0)
    est.set_external(150.0, precipitation=False, stamp_s=100.0)
    fresh = est.estimate(img, now_s=110.0)
    assert fresh.external_used and fresh.external_age_s == pytest.approx(10.0)
    assert fresh.degradation >= ENTER > base.degradation and fresh.label == "fog"
    expired = est.estimate(img, now_s=131.0)
    assert not expired.external_used and expired.external_age_s == pytest.approx(31.0)
    assert expired.degradation == pytest.approx(base.degradation)


def test_external_precipitation_and_good_visibility(images: dict[str, np.ndarray]) -> None:
    est = VisibilityEstimator()
    est.set_external(None, precipitation=True, stamp_s=0.0)
    r = est.estimate(images[CLEAR[0]], now_s=1.0)
    assert r.external_used and r.blur >= 0.6 and r.label == "rain_blur"
    # a good external visibility never hides what the camera sees
    fog_alone = VisibilityEstimator().estimate(images[REAL_FOG])
    est.set_external(20000.0, precipitation=False, stamp_s=0.0)
    fused = est.estimate(images[REAL_FOG], now_s=1.0)
    assert fused.fog == pytest.approx(fog_alone.fog) and fused.label == "fog"
    for bad in ((-1.0, 0.0), (float("nan"), 0.0), (100.0, float("inf"))):
        with pytest.raises(ConfigError):
            est.set_external(bad[0], False, bad[1])

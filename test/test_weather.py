"""Synthetic weather: determinism, identity at strength 0, physical direction, spec parsing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core.errors import ConfigError, ImageError
from dpa_perception.demo.weather import (
    WeatherSpec,
    add_fog,
    add_glare,
    add_night,
    add_rain,
    parse_weather,
)

FUNCS = {"fog": add_fog, "rain": add_rain, "night": add_night, "glare": add_glare}


@pytest.fixture(scope="module")
def street(testdata: Path) -> np.ndarray:
    img = cv2.imread(str(testdata / "images" / "uadetrac_MVI_20011_img00001.jpg"))
    assert img is not None
    return img


def _luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0


@pytest.mark.parametrize("kind", FUNCS)
def test_keeps_shape_dtype_and_is_deterministic(street: np.ndarray, kind: str) -> None:
    f = FUNCS[kind]
    before = street.copy()
    out = f(street, 0.7, seed=3)
    assert out.shape == street.shape and out.dtype == np.uint8
    assert np.array_equal(out, f(street, 0.7, seed=3))
    assert not np.array_equal(out, street)
    assert np.array_equal(street, before), "input must not be modified"


@pytest.mark.parametrize("kind", ["rain", "night", "glare", "fog"])
def test_different_seed_gives_different_output(street: np.ndarray, kind: str) -> None:
    f = FUNCS[kind]
    assert not np.array_equal(f(street, 0.7, seed=1), f(street, 0.7, seed=2))


@pytest.mark.parametrize("kind", FUNCS)
def test_strength_zero_is_identity(street: np.ndarray, kind: str) -> None:
    out = FUNCS[kind](street, 0.0, seed=5)
    assert np.array_equal(out, street) and out is not street


def test_fog_scatters_more_with_density_and_distance(street: np.ndarray) -> None:
    contrast = [_luma(add_fog(street, d, seed=0)).std() for d in (0.0, 0.3, 0.6, 0.9)]
    assert contrast == sorted(contrast, reverse=True) and len(set(contrast)) == 4
    # depth grows toward the top: far rows lose more of their own contrast than near rows
    fogged, clean = _luma(add_fog(street, 0.6, seed=0)), _luma(street)
    h = street.shape[0]
    ratio_top = fogged[: h // 4].std() / clean[: h // 4].std()
    ratio_bottom = fogged[-h // 4 :].std() / clean[-h // 4 :].std()
    assert ratio_top < 0.5 * ratio_bottom
    heavy = _luma(add_fog(street, 1.0, seed=0))
    assert heavy[-h // 4 :].std() > 0.02, "near objects stay faintly visible in heavy fog"
    assert 0.78 < heavy[: h // 8].mean() < 0.96, "far rows converge to the airlight"


def test_night_darkens_like_a_real_night(street: np.ndarray) -> None:
    means = [_luma(add_night(street, d, seed=0)).mean() for d in (0.0, 0.5, 1.0)]
    assert means[0] > means[1] > means[2]
    assert means[2] < 0.08  # the real BDD night frame has a mean luminance of 0.06


def test_glare_over_exposes(street: np.ndarray) -> None:
    clipped = [(_luma(add_glare(street, s, seed=0)) >= 0.98).mean() for s in (0.0, 0.5, 1.0)]
    assert clipped[0] < 0.01 < clipped[1] < clipped[2] and clipped[2] > 0.3


def test_rain_darkens_and_adds_streaks(street: np.ndarray) -> None:
    rainy = add_rain(street, 0.9, seed=0)
    gx = np.abs(cv2.Sobel(_luma(rainy), cv2.CV_32F, 1, 0)).mean()
    gx0 = np.abs(cv2.Sobel(_luma(street), cv2.CV_32F, 1, 0)).mean()
    assert gx > gx0, "near-vertical streaks add horizontal gradient"
    assert _luma(add_rain(street, 0.5, seed=0)).mean() < _luma(street).mean() + 0.02


def test_grayscale_in_grayscale_out(street: np.ndarray) -> None:
    gray = cv2.cvtColor(street, cv2.COLOR_BGR2GRAY)
    for f in FUNCS.values():
        out = f(gray, 0.5, seed=0)
        assert out.shape == gray.shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    "img",
    [np.zeros((0, 0, 3), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)],
)
def test_bad_images_raise_image_error(img: np.ndarray) -> None:
    with pytest.raises(ImageError):
        add_fog(img, 0.5)


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan")])
def test_bad_strength_raises_config_error(street: np.ndarray, strength: float) -> None:
    for f in FUNCS.values():
        with pytest.raises(ConfigError):
            f(street, strength)


@pytest.mark.parametrize(
    ("spec", "kind", "strength", "ramp"),
    [
        ("none", "none", 0.0, False),
        ("fog-ramp", "fog", 1.0, True),
        ("rain-ramp", "rain", 1.0, True),
        ("night-ramp", "night", 1.0, True),
        ("glare-ramp", "glare", 1.0, True),
        ("night", "night", 1.0, False),
        ("fog:0.6", "fog", 0.6, False),
        ("rain:0.3", "rain", 0.3, False),
        ("night:0.8", "night", 0.8, False),
        ("glare:1", "glare", 1.0, False),
        (" FOG:0 ", "fog", 0.0, False),
    ],
)
def test_parse_weather_accepts(spec: str, kind: str, strength: float, ramp: bool) -> None:
    ws = parse_weather(spec)
    assert (ws.kind, ws.strength, ws.ramp) == (kind, strength, ramp)
    assert parse_weather(str(ws)) == ws


@pytest.mark.parametrize(
    "spec",
    ["", "snow", "fog:", "fog:abc", "fog:1.5", "fog:-0.1", "fog:nan", "fog-ramp:0.5", "none:1",
     "ramp", "-ramp", "fog:0.5:1", "fog-ramp-ramp"],
)
def test_parse_weather_rejects(spec: str) -> None:
    with pytest.raises(ConfigError, match="weather"):
        parse_weather(spec)


def test_ramp_rises_linearly_and_constants_ignore_progress(street: np.ndarray) -> None:
    ramp, const = parse_weather("fog-ramp"), parse_weather("fog:0.6")
    assert [ramp.strength_at(p) for p in (0.0, 0.25, 1.0)] == [0.0, 0.25, 1.0]
    assert const.strength_at(0.0) == const.strength_at(1.0) == 0.6
    assert np.array_equal(ramp.apply(street, 0.0, seed=1), street)
    assert np.array_equal(ramp.apply(street, 1.0, seed=1), add_fog(street, 1.0, seed=1))
    assert np.array_equal(const.apply(street, 0.1, seed=1), const.apply(street, 0.9, seed=1))
    none = WeatherSpec("none")
    assert none.apply(street, 0.5) is street and none.strength_at(0.5) == 0.0
    with pytest.raises(ConfigError):
        ramp.strength_at(1.5)
    with pytest.raises(ConfigError):
        WeatherSpec("fog", 1.5)


def test_apply_keeps_the_scene_and_redraws_per_frame_effects(street: np.ndarray) -> None:
    fog, rain = parse_weather("fog:0.5"), parse_weather("rain:0.5")
    assert np.array_equal(fog.apply(street, seed=4, frame=1), fog.apply(street, seed=4, frame=2))
    assert not np.array_equal(fog.apply(street, seed=4), fog.apply(street, seed=5))
    assert np.array_equal(rain.apply(street, seed=4, frame=1), rain.apply(street, seed=4, frame=1))
    assert not np.array_equal(rain.apply(street, seed=4, frame=1),
                              rain.apply(street, seed=4, frame=2))
